"""The one recursion under every treewalk call, and the two public walks."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.core import Tracer

from ._errors import ArgumentError, CallbackError, TreewalkError
from ._frameworks import HIDDEN_CHILDREN, registry, unbox
from ._path import BoxKey, Path, show_path

# Types that are always JAX leaves: no need to ask JAX whether they have children.
_LEAF_TYPES: tuple[type, ...] = (
    jax.Array,
    Tracer,
    np.ndarray,
    np.generic,
    float,
    int,
    complex,
    str,
)

# What the walk needs to know about a node, decided once per type: `isinstance` on an
# Equinox module goes through its `__getattribute__` and ABC checks, which is slow when a
# model has thousands of layers.
LEAF, PYTREE_BOX, LEAF_BOX, MUTABLE = 1, 2, 4, 8
SHARED = LEAF_BOX | MUTABLE  # mutable objects whose identity matters (ties)


class TypeKinds(dict[type, int]):
    """`kinds[type(node)]`: the flags above, computed on first sight of a type."""

    def __init__(self) -> None:
        super().__init__()
        self.generation = -1

    def __missing__(self, t: type) -> int:
        reg = registry
        f = 0
        if issubclass(t, _LEAF_TYPES):
            f |= LEAF
        if reg.pytree_boxes and issubclass(t, reg.pytree_boxes):
            f |= PYTREE_BOX
        if reg.leaf_boxes and issubclass(t, reg.leaf_boxes):
            f |= LEAF_BOX
        if reg.mutable and issubclass(t, reg.mutable):
            f |= MUTABLE
        self[t] = f
        return f


_kinds = TypeKinds()


def type_kinds() -> TypeKinds:
    """The per-type flags, valid for the framework types known now."""
    registry.refresh()
    if _kinds.generation != registry.generation:
        _kinds.clear()
        _kinds.generation = registry.generation
    return _kinds


Fn = Callable[[Path, Any], Any]


def children(node: Any) -> tuple[list[tuple[Any, Any]], Any] | None:
    """`([(key entry, child), ...], treedef)` of an internal node, or `None` for a leaf.

    Built on `tree_flatten_with_path` (not `flatten_one_level_with_keys`, which names every
    field of a namedtuple after its first one).
    """
    entries, treedef = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    if len(entries) == 1 and not entries[0][0]:
        return None
    return [(path[0], child) for path, child in entries], treedef


def _call(what: str, f: Callable[..., Any], path: Path, *args: Any) -> Any:
    try:
        return f(*args)
    except Exception as e:
        raise wrapped(what, path, e) from e


def wrapped(what: str, path: Path, e: Exception) -> Exception:
    """The error to raise for `e`, raised by a user callback at `path`: ours as they are
    (they already name the path), anything else as a `CallbackError` naming the path."""
    if isinstance(e, TreewalkError):
        return e
    return CallbackError(f"{what} raised {type(e).__name__} at path {show_path(path)}: {e}")


def check_callable(name: str, f: Any, *, optional: bool = False) -> None:
    if f is None and optional:
        return
    if not callable(f):
        raise ArgumentError(
            f"`{name}` must be callable, got {type(f).__name__}: {f!r:.80}. "
            f"Pass a function, e.g. `{name}=lambda path, node: ...`."
        )


class Walk:
    """One recursion, configured by its hooks. Each hook also gets a context value, `ctx`,
    which `pre` may change for the node's children (selectors use it for ancestry).

    - `pre(path, node, ctx) -> (node, ctx) | Stop`: called before descending; the walk
      descends into the node it returns. A `Stop(node)` means: use this node as it is.
    - `leaf(path, node, ctx) -> node`: called on leaves only, between `pre` and `post`.
    - `post(path, node, ctx) -> node`: called on the node after its children were rebuilt.
    - `is_leaf(node)`, `exclude(path, node)`: as in `prewalk`.
    - `transparent`: look through boxes (NNX `Variable`, linen `Partitioned`, penzai
      variables): the hooks never see a box, only the value inside it, at the box's path
      plus a `BoxKey` entry. The box is in `walk.box` while `pre` runs on that value.
    - `rebuild=False` visits without building anything (a query).

    Subtrees nothing changed are returned as the same objects, except mutable nodes
    (NNX modules and variables), which are always rebuilt so input and output never share
    them.
    """

    def __init__(
        self,
        pre: Callable[[Path, Any, Any], Any] | None = None,
        post: Callable[[Path, Any, Any], Any] | None = None,
        *,
        leaf: Callable[[Path, Any, Any], Any] | None = None,
        is_leaf: Callable[[Any], bool] | None = None,
        exclude: Fn | None = None,
        transparent: bool = False,
        rebuild: bool = True,
    ) -> None:
        check_callable("is_leaf", is_leaf, optional=True)
        check_callable("exclude", exclude, optional=True)
        kinds = type_kinds()
        pytree_boxes = registry.pytree_boxes
        box_flags = (PYTREE_BOX | LEAF_BOX) if transparent else 0
        self.box: Any = None
        self.seen: dict[int, Any] = {}
        walk = self

        def go(path: Path, node: Any, ctx: Any) -> Any:
            if exclude is not None and _call("exclude", exclude, path, path, node):
                return node
            f = kinds[type(node)]
            if f & SHARED:
                # A mutable object (NNX module or variable, penzai parameter) met again is
                # the same object in the result: visited once, rebuilt once, tie kept.
                seen = walk.seen
                i = id(node)
                if i in seen:
                    return seen[i]
                out = seen[i] = visit(path, node, f, ctx)
                return out
            return visit(path, node, f, ctx)

        def visit(path: Path, node: Any, f: int, ctx: Any) -> Any:
            if f & box_flags:
                return open_box(path, node, f, ctx)
            if pre is not None:
                r = pre(path, node, ctx)
                if type(r) is Stop:
                    return r.node
                if r[0] is not node:
                    node = r[0]
                    f = kinds[type(node)]
                ctx = r[1]
            if is_leaf is not None and _call("is_leaf", is_leaf, path, node):
                kids = None
            elif f & LEAF:
                kids = None
            else:
                kids = children(node)
            if kids is None:
                if leaf is not None:
                    node = leaf(path, node, ctx)
            else:
                entries, treedef = kids
                if f & PYTREE_BOX:
                    entries = [(BoxKey(k.name), c) for k, c in entries]
                if transparent and f & MUTABLE:
                    hidden = HIDDEN_CHILDREN
                    new = [
                        c if getattr(k, "name", None) in hidden else go((*path, k), c, ctx)
                        for k, c in entries
                    ]
                else:
                    new = [go((*path, k), c, ctx) for k, c in entries]
                if rebuild and (
                    f & MUTABLE or any(n is not c for n, (_, c) in zip(new, entries, strict=True))
                ):
                    node = treedef.unflatten(new)
            if post is not None:
                node = post(path, node, ctx)
            return node

        def open_box(path: Path, box: Any, f: int, ctx: Any) -> Any:
            name, inner, rebox = unbox(box, () if f & LEAF_BOX else pytree_boxes)
            outermost = walk.box is None
            if outermost:
                walk.box = box
            try:
                new = go((*path, BoxKey(name)), inner, ctx)
            finally:
                if outermost:
                    walk.box = None
            if not rebuild or (new is inner and not f & (MUTABLE | LEAF_BOX)):
                return box
            return rebox(new)

        self.go = go

    def __call__(self, tree: Any, ctx: Any = None) -> Any:
        self.seen = {}
        try:
            with no_gc():
                return self.go((), tree, ctx)
        finally:
            self.seen = {}


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector during a walk.

    A walk allocates a few small objects per node and creates no reference cycles; on a
    tree of 100,000 leaves the collector's repeated passes over the surviving objects cost
    as much as the walk itself. Everything is still freed by reference counting.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Stop:
    """Returned by a `pre` hook: use this node as it is and do not descend into it."""

    __slots__ = ("node",)

    def __init__(self, node: Any) -> None:
        self.node = node


def _pre(fn: Fn) -> Callable[[Path, Any, Any], Any]:
    check_callable("fn", fn)
    return lambda path, node, ctx: (_call("fn", fn, path, path, node), ctx)


def _post(fn: Fn) -> Callable[[Path, Any, Any], Any]:
    check_callable("fn", fn)
    return lambda path, node, ctx: _call("fn", fn, path, path, node)


def prewalk(
    fn: Callable[[Path, Any], Any],
    tree: Any,
    *,
    is_leaf: Callable[[Any], bool] | None = None,
    exclude: Callable[[Path, Any], bool] | None = None,
) -> Any:
    """Rebuild `tree` top-down: `fn(path, node)` on every node, then descend into its result.

    Every node is visited, internal nodes and leaves alike, the root (path `()`) first;
    `None` children and empty containers are nodes too, and keep their place.
    Paths are JAX key paths; the entry of a value inside a box (NNX `Variable`, linen
    `Partitioned`) is a `tw.BoxKey`, which `path_str` leaves out.

    **Arguments:**

    - `fn`: `fn(path, node) -> node`. Whatever it returns is descended into.
    - `tree`: any pytree.
    - `is_leaf`: as in JAX: `is_leaf(node)` true stops flattening there and `fn` sees the
      node as a leaf.
    - `exclude`: `exclude(path, node)` true returns that subtree untouched (the same object);
      `fn` is called neither on it nor on anything inside it.

    **Returns:**

    The rebuilt tree. Subtrees in which nothing changed are the input's own objects (Flax
    NNX modules and variables excepted: they are always rebuilt, so the input is never
    shared with the output).

    **Raises:**

    `tw.CallbackError` naming the path if `fn`, `is_leaf` or `exclude` raises; the input is
    left as it was. `tw.ArgumentError` if `fn` is not callable.

    !!! Example

        ```python
        import treewalk as tw

        seen = []
        tw.prewalk(lambda p, x: seen.append(tw.path_str(p)) or x, {"a": [1, 2]})
        assert seen == ["", "a", "a/0", "a/1"]
        ```
    """
    return Walk(pre=_pre(fn), is_leaf=is_leaf, exclude=exclude)(tree)


def postwalk(
    fn: Callable[[Path, Any], Any],
    tree: Any,
    *,
    is_leaf: Callable[[Any], bool] | None = None,
    exclude: Callable[[Path, Any], bool] | None = None,
) -> Any:
    """Rebuild `tree` bottom-up: children first, then `fn(path, node)` on the rebuilt node.

    Arguments, return value and errors are as for [`tw.prewalk`][treewalk.prewalk]; the
    only difference is the order: a node's `fn` runs after its children's, and sees the
    node rebuilt from their results. The root is visited last.

    !!! Example

        ```python
        import treewalk as tw

        # Count leaves bottom-up: every container becomes the sum of its children.
        count = tw.postwalk(
            lambda p, x: sum(x) if isinstance(x, list) else 1, [[0, 0], [0]]
        )
        assert count == 3
        ```
    """
    return Walk(post=_post(fn), is_leaf=is_leaf, exclude=exclude)(tree)
