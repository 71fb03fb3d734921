"""The two public walks, `prewalk` and `postwalk`: the engine's pass with `fn` at every
node (boxes included), and the same rules as every other call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from .._core.engine import GO, KEEP, Pass
from .._core.errors import call_user, check_callable
from .._core.kinds import BOX, LEAF, LEAF_BOX, SHARED, flags_of, tie_id
from .._core.node import Node
from .._core.paths import Path
from .._frameworks import is_hidden, registry, unbox

WalkFn = Callable[[Path, Any], Any]


class _Private:
    """Copies of the mutable objects (NNX modules and variables, penzai parameters) a walk
    hands `fn`, so that an in-place edit never reaches the input. A copy is made when
    the walk first meets an object of the input, with every mutable object inside it
    (ties kept); what is inside a copy is the walk's own already, and is not copied
    again. Trees without mutable objects cost nothing."""

    def __init__(self, is_leaf: Any, exclude: Any) -> None:
        self.is_leaf, self.exclude = is_leaf, exclude
        self.done: dict[int, Any] = {}  # input object id -> its copy, for ties
        self.fresh: set[int] = set()  # ids of the copies

    def __call__(self, path: Path, x: Any) -> Any:
        if id(x) in self.fresh:
            return x
        start = len(self.done)
        p = Pass(is_leaf=self.is_leaf, exclude=self.exclude, done=self.done)
        out = p.walk(path, x, None, None, False).finish()  # `exclude` sees full paths
        self.fresh.update(id(v.out) for v in list(self.done.values())[start:])
        self.fresh.add(id(out))
        return out


def prewalk(
    fn: WalkFn,
    tree: Any,
    *,
    is_leaf: Callable[[Any], bool] | None = None,
    exclude: Callable[[Path, Any], bool] | None = None,
) -> Any:
    """Rebuild `tree` top-down: `fn(path, node)` on every node, then descend into its result.

    Every node is visited, internal nodes and leaves alike, the root (path `()`) first;
    `None` children and empty containers are nodes too, and keep their place. A box (NNX
    `Variable`, linen `Partitioned`) is a node, and so is the value inside it, at the
    box's path plus a `tw.BoxKey` entry (which `path_str` leaves out). NNX's bookkeeping
    (`_pytree__state`) is not shown.

    **Arguments:**

    - `fn`: `fn(path, node) -> node`. Whatever it returns is descended into (`fn` is not
      called again on the returned node itself).
    - `tree`: any pytree.
    - `is_leaf`: as in JAX: `is_leaf(node)` true stops flattening there and `fn` sees the
      node as a leaf.
    - `exclude`: `exclude(path, node)` true returns that subtree untouched (the same object);
      `fn` is called neither on it nor on anything inside it.

    **Returns:**

    The rebuilt tree. Its containers are new objects; leaves `fn` returned as they were
    are the input's own. The same array or mutable object reached by several paths is
    given to `fn` once (at its first path) and comes out as one object. `fn` never gets
    an object of the input that an in-place edit could change: mutable objects (NNX
    modules and variables) are copied first.

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
    check_callable("fn", fn, hint="lambda path, node: node")
    ties: dict[int, Any] = {}
    private = _Private(is_leaf, exclude)

    def visit(n: Node) -> int:
        x = n.node
        f = flags_of(x)
        tie = tie_id(x, f)
        if tie is not None and tie in ties:
            n.node = ties[tie]
            return KEEP
        if f & SHARED:
            x = private(n.path, x)
        new = call_user("fn", fn, n.path, n.path, x)
        if tie is not None:
            ties[tie] = new
        n.node = new
        return GO

    return Pass(visit, is_leaf=is_leaf, exclude=exclude, boxes="visit").run(tree).finish()


def postwalk(
    fn: WalkFn,
    tree: Any,
    *,
    is_leaf: Callable[[Any], bool] | None = None,
    exclude: Callable[[Path, Any], bool] | None = None,
) -> Any:
    """Rebuild `tree` bottom-up: children first, then `fn(path, node)` on the rebuilt node.

    Arguments, return value, ties and errors are as for [`tw.prewalk`][treewalk.prewalk];
    the only difference is the order: a node's `fn` runs after its children's, and sees
    the node rebuilt from their results. The root is visited last. The walk keeps no
    Python stack per level: trees as deep as JAX can flatten work.

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
    check_callable("fn", fn, hint="lambda path, node: node")
    check_callable("is_leaf", is_leaf, optional=True, hint="lambda node: ...")
    # Each visible node in pre-order, as parallel lists (no object per node: the cyclic
    # GC's passes over 100,000 of them would cost more than the walk).
    paths: list[Path] = []
    nodes: list[Any] = []
    leaves: list[bool] = []

    def visit(n: Node) -> int:
        # `is_leaf` asked here, once per node (the pass is given none): its answer
        # decides both where the pass stops and what the fold treats as a leaf.
        x = n.node
        f = flags_of(x)
        user = (
            not f & (BOX | LEAF)
            and is_leaf is not None
            and bool(call_user("is_leaf", is_leaf, n.path, x))
        )
        paths.append(n.path)
        nodes.append(x)
        leaves.append(user or bool(f & LEAF and not f & BOX))
        return KEEP if user else GO

    # The pass finds the visible nodes in pre-order (same rules as every call); the fold
    # below rebuilds them children first, with an explicit stack.
    Pass(visit, exclude=exclude, boxes="visit", rebuild=False).run(tree)
    if not paths:
        return tree  # the root is excluded
    return _fold(paths, nodes, leaves, fn, exclude)


def _fold(
    paths: list[Path], nodes: list[Any], leaves: list[bool], fn: WalkFn, exclude: Any
) -> Any:
    pytree_boxes = registry.pytree_boxes
    done: dict[int, Any] = {}  # tie id -> fn's result
    # Each open frame: (path, node, {entry: output of that child}).
    stack: list[tuple[Path, Any, dict[Any, Any]]] = []
    result: list[Any] = []

    def deliver(path: Path, out: Any) -> None:
        if stack:
            stack[-1][2][path[-1]] = out
        else:
            result.append(out)

    def close(path: Path, x: Any, kids: dict[Any, Any]) -> None:
        f = flags_of(x)
        if f & BOX:
            _, inner, rebox = unbox(x, () if f & LEAF_BOX else pytree_boxes)
            rebuilt = rebox(next(iter(kids.values()), inner))
        else:
            rebuilt = _rebuild(path, x, kids, done, exclude)
        out = call_user("fn", fn, path, path, rebuilt)
        tie = tie_id(x, f)
        if tie is not None:
            done[tie] = out
        deliver(path, out)

    for path, x, leaf in zip(paths, nodes, leaves, strict=True):
        depth = len(path)
        while stack and len(stack[-1][0]) >= depth:
            close(*stack.pop())
        f = flags_of(x)
        tie = tie_id(x, f)
        if tie is not None and tie in done:
            deliver(path, done[tie])
        elif leaf:
            out = call_user("fn", fn, path, path, x)
            if tie is not None:
                done[tie] = out
            deliver(path, out)
        else:
            stack.append((path, x, {}))
    while stack:
        close(*stack.pop())
    return result[0]


def _rebuild(path: Path, x: Any, kids: dict[Any, Any], done: dict[int, Any], exclude: Any) -> Any:
    """`x` rebuilt with the outputs of its children. A child the pass did not visit is
    hidden or excluded (kept as it is) or a tie met before (its first output)."""
    entries, treedef = jax.tree_util.tree_flatten_with_path(x, is_leaf=lambda y: y is not x)
    values = []
    for (entry,), child in entries:
        if entry in kids:
            values.append(kids[entry])
        elif is_hidden(entry) or (
            exclude is not None and call_user("exclude", exclude, path, (*path, entry), child)
        ):
            values.append(child)
        else:
            values.append(done.get(id(child), child) if flags_of(child) & SHARED else child)
    return treedef.unflatten(values)
