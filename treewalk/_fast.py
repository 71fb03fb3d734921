"""Fast paths: what the walk finds, found with C++ flattens instead of Python visits.

- *Type selectors.* `tw.of_type(eqx.nn.Linear)` can only match `Linear`s, so there is no
  need to walk into anything in Python: one C++ `tree_flatten_with_path` with an `is_leaf`
  that stops at those types (and at boxes) finds every candidate with its path, and the
  selector is asked only about the candidates. On a model of 10,000 layers this skips
  20,000 Python visits (`fast_matches`, `rebuild_by_paths`).
- *Plain trees.* A tree with no box and no mutable node is, for a selector that can only
  pick leaves, just its flattened leaves (`plain_leaves`); a path selector is asked about
  the internal nodes by their paths alone (`path_only`, `leaves_hold_all`).

They apply when the selector needs no ancestry (`tw.inside`) and, for `replace`, when `fn`
does not ask for the node's context (`tw_call`). Results are the same as the full walk's:
same nodes, same paths (box entries as `BoxKey`), same order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.core import Tracer

from ._frameworks import registry, unbox
from ._path import BoxKey, Path
from ._selectors import (
    ARRAY_TYPES,
    And,
    Node,
    Not,
    Or,
    Selector,
    _Arrays,
    glob,
    inside,
    name,
    of_type,
    regex,
)
from ._walk import LEAF, LEAF_BOX, MUTABLE, PYTREE_BOX, SHARED, _call, no_gc, type_kinds


def candidate_types(sel: Selector) -> tuple[type, ...] | None:
    """Types every node `sel` matches is an instance of (or is boxed in), if known."""
    if isinstance(sel, of_type):
        return sel.types
    if isinstance(sel, _Arrays):
        return ARRAY_TYPES
    if isinstance(sel, And):
        for part in sel.parts:
            types = candidate_types(part)
            if types is not None:
                return types
        return None
    if isinstance(sel, Or):
        out: tuple[type, ...] = ()
        for part in sel.parts:
            types = candidate_types(part)
            if types is None:
                return None
            out += types
        return out
    return None


def _every_atom(sel: Selector, test: Callable[[Selector], bool]) -> bool:
    """Does `test` hold for every selector `sel` is composed of (with `&`, `|`, `~`)?"""
    if isinstance(sel, And | Or):
        return all(_every_atom(p, test) for p in sel.parts)
    if isinstance(sel, Not):
        return _every_atom(sel.selector, test)
    return test(sel)


def needs_parent(sel: Selector) -> bool:
    return not _every_atom(sel, lambda s: not isinstance(s, inside))


def fast_types(sel: Selector, *, arrays_ok: bool = False) -> tuple[type, ...] | None:
    """The candidate types when the fast path applies to `sel`, else `None`.

    When every array leaf is a candidate, one C++ flatten with a Python `is_leaf` per node
    is no faster than the walk; it wins only where it replaces two walks (`replace` with
    keys or a batched `fn`), so array types take the fast path only with `arrays_ok`.
    """
    types = candidate_types(sel)
    if types is None or needs_parent(sel):
        return None
    if not arrays_ok and any(issubclass(t, ARRAY_TYPES) for t in types):
        return None
    return types


def _takes_path() -> bool:
    import inspect

    return (
        "is_leaf_takes_path" in inspect.signature(jax.tree_util.tree_flatten_with_path).parameters
    )


_TAKES_PATH = _takes_path()


class _Stops:
    """The `is_leaf` for the C++ flatten: stop at candidates, boxes, mutable nodes (NNX
    modules, whose identity matters for ties) and user leaves."""

    def __init__(self, types: tuple[type, ...], is_leaf: Callable[[Any], bool] | None) -> None:
        reg = registry.refresh()
        self.boxes = reg.boxes
        self.pytree_boxes = reg.pytree_boxes
        if any(issubclass(jax.Array, t) for t in types):
            types = (*types, Tracer)  # tracers are `jax.Array`s to isinstance, not issubclass
        self.stop_types = types + reg.boxes + reg.mutable
        self.types = types
        self.is_leaf = is_leaf
        self.cache: dict[type, bool] = {}
        self.candidate: dict[type, bool] = {}
        self.kinds = type_kinds()

    def __call__(self, x: Any) -> bool:  # for a JAX without `is_leaf_takes_path`
        return self.at((), x)

    def at(self, _path: Path, x: Any) -> bool:
        """`self(x)`, as an `is_leaf` that takes the path first."""
        t = type(x)
        hit = self.cache.get(t)
        if hit is None:
            hit = self.cache[t] = issubclass(t, self.stop_types)
        return hit or (self.is_leaf is not None and self.user_leaf(x))

    def is_candidate(self, x: Any) -> bool:
        t = type(x)
        hit = self.candidate.get(t)
        if hit is None:
            hit = self.candidate[t] = issubclass(t, self.types)
        return hit

    def user_leaf(self, x: Any) -> bool:
        return self.is_leaf is not None and bool(_call("is_leaf", self.is_leaf, (), x))

    def flatten(self, node: Any, inside_of: Any = None) -> tuple[list[tuple[Path, Any]], Any]:
        if not _TAKES_PATH:
            stop = self if inside_of is None else (lambda y: y is not inside_of and self(y))
            return jax.tree_util.tree_flatten_with_path(node, is_leaf=stop)
        # No wrapper around is_leaf: one Python call per node fewer.
        at = self.at if inside_of is None else (lambda p, y: y is not inside_of and self.at(p, y))
        return jax.tree_util.tree_flatten_with_path(node, is_leaf=at, is_leaf_takes_path=True)

    def flags(self, x: Any) -> int:
        return self.kinds[type(x)]

    def open(self, box: Any, flags: int) -> tuple[str, Any, Callable[[Any], Any]]:
        return unbox(box, () if flags & LEAF_BOX else self.pytree_boxes)


class _Special(Exception):
    """Raised by `plain_leaves`'s `is_leaf` on a box or mutable node: abandon the flatten."""


def plain_leaves(
    tree: Any, is_leaf: Callable[[Any], bool] | None
) -> tuple[list[tuple[Path, Any]], Any] | None:
    """`tree_flatten_with_path(tree)`, in one C++ flatten, if `tree` holds no box and no
    mutable node (NNX `Variable` or module, linen `Partitioned`, penzai variable), else
    `None`: those need the walk (boxes are looked through, mutable nodes are copied once).

    The flatten stops at the first such node it meets, so a `None` costs little. With no
    framework imported and no `is_leaf`, JAX is asked nothing per node at all.
    """
    reg = registry.refresh()
    special = reg.boxes + reg.mutable
    if not special and is_leaf is None:
        return jax.tree_util.tree_flatten_with_path(tree)
    plain: set[type] = set()  # types met that are neither boxes nor mutable

    def check(x: Any) -> None:
        t = type(x)
        if special and issubclass(t, special):
            raise _Special
        plain.add(t)

    if is_leaf is None:

        def stop(path: Path, x: Any) -> bool:
            if type(x) not in plain:
                check(x)
            return False

    else:

        def stop(path: Path, x: Any) -> bool:
            if type(x) not in plain:
                check(x)
            return bool(_call("is_leaf", is_leaf, path, x))

    try:
        if _TAKES_PATH:
            return jax.tree_util.tree_flatten_with_path(
                tree, is_leaf=stop, is_leaf_takes_path=True
            )
        return jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: stop((), x))
    except _Special:
        return None


def path_only(sel: Selector) -> bool:
    """Does `sel` look at nothing but the path (`name`, `glob`, `regex` and their algebra)?
    Such a selector can be asked about an internal node knowing only its path."""
    return _every_atom(sel, lambda s: isinstance(s, name | glob | regex))


def _last_only(sel: Selector) -> bool:
    """Does `sel` look at the last segment only (`name`, `"**/literal"` globs)?"""
    return _every_atom(
        sel, lambda s: isinstance(s, name) or (isinstance(s, glob) and s._suffix is not None)
    )


def path_matcher(sel: Selector) -> Callable[[Path], bool]:
    """`path -> bool` for a `path_only` selector, on paths with no box entry. When only
    the last segment matters, the answer is remembered per last key entry: a tree of
    100,000 leaves has a few dozen distinct keys."""
    match = sel.match
    if not _last_only(sel):
        return lambda path: match(Node(path, None, None, None))
    memo: dict[Any, bool] = {}

    def last(path: Path) -> bool:
        if not path:
            return match(Node(path, None, None, None))
        entry = path[-1]
        hit = memo.get(entry)
        if hit is None:
            hit = memo[entry] = match(Node((entry,), None, None, None))
        return hit

    return last


def leaves_hold_all(
    leaves: list[tuple[Path, Any]], treedef: Any, match: Callable[[Path], bool]
) -> bool:
    """Is every selected node of the tree among `leaves` (its flattened leaves)?

    `match` (a `path_matcher`) is asked about every internal node, known by its path:
    one that matches would be replaced whole. And a node with no leaves below it
    (`None`, an empty container) does not show in `leaves` at all: one is there if the
    treedef has more nodes than the leaves and the internal nodes on their paths.
    """
    internal = 0
    prev: Path | None = None
    for path, _ in leaves:
        if prev is None:
            start = 0
        elif path[:-1] == prev[:-1]:
            prev = path
            continue  # a sibling of the last leaf: no internal node it did not pass
        else:
            c, m = 0, min(len(path), len(prev))
            while c < m and path[c] == prev[c]:
                c += 1
            start = c + 1
        for k in range(start, len(path)):
            internal += 1
            if match(path[:k]):
                return False
        prev = path
    return internal + len(leaves) == treedef.num_nodes


def fast_matches(
    tree: Any,
    sel: Selector,
    types: tuple[type, ...],
    *,
    is_leaf: Callable[[Any], bool] | None,
    outermost: bool,
) -> list[Node]:
    stops = _Stops(types, is_leaf)
    match = sel.match
    hits: list[Node] = []
    cache = stops.cache
    seen: set[int] = set()  # shared mutable objects are visited once, like the walk does

    def may_nest(leaves: list[tuple[Path, Any]]) -> bool:
        """Can a candidate among `leaves` hold another candidate or a box? Asked of all of
        them in one C++ flatten, so that the walk into each one (a flatten with paths per
        candidate) is skipped when, as usual, none can."""
        tops = [
            x
            for _, x in leaves
            if stops.is_candidate(x)
            and not stops.flags(x) & (PYTREE_BOX | LEAF_BOX | MUTABLE)
            and not stops.user_leaf(x)
        ]
        if not tops:
            return False
        ids = {id(x) for x in tops}
        met = 0

        def stop(y: Any) -> bool:
            nonlocal met
            if id(y) in ids:
                met += 1
                return False
            return stops.at((), y)

        inner = jax.tree_util.tree_leaves(tops, is_leaf=stop)
        # A candidate met more often than it is listed also sits inside another one.
        return met > len(tops) or any(cache.get(type(y)) for y in inner)

    kinds, candidate_of = stops.kinds, stops.candidate
    # A bare `of_type` matches every candidate outside a box: no need to ask it.
    trivial = type(sel) is of_type

    def search(prefix: Path, node: Any, outer: Any, inside_of: Any = None) -> None:
        leaves = stops.flatten(node, inside_of)[0]
        nest = None  # asked once, the first time a candidate could be walked into
        for path, x in leaves:
            if inside_of is not None and not path:
                continue  # `inside_of` is a JAX leaf: there is nothing inside it
            t = type(x)
            if not cache.get(t) and outer is None:
                continue  # a plain leaf: not a candidate, not a box, not mutable
            f = kinds[t]
            if f & SHARED:
                if id(x) in seen:
                    continue
                seen.add(id(x))
            full = (*prefix, *path) if prefix else path
            if f & (PYTREE_BOX | LEAF_BOX):
                name, inner, _ = stops.open(x, f)
                search((*full, BoxKey(name)), inner, x if outer is None else outer)
                continue
            candidate = candidate_of.get(t)
            if candidate is None:
                candidate = stops.is_candidate(x)
            if candidate or (outer is not None and not path):
                n = Node(full, x, outer if not path else None, None)
                if (trivial and candidate and n.outer is None) or match(n):
                    hits.append(n)
                    if outermost:
                        continue
            if f & LEAF or stops.user_leaf(x):
                continue  # nothing inside a leaf
            if f & MUTABLE:
                search(full, x, None, inside_of=x)  # an NNX module: look inside it
            elif candidate:
                if nest is None:
                    nest = may_nest(leaves)
                if nest:
                    search(full, x, None, inside_of=x)  # matches nested inside a candidate

    with no_gc():
        search((), tree, None)
    return hits


def rebuild_by_paths(
    tree: Any, types: tuple[type, ...], is_leaf: Callable[[Any], bool] | None, new: dict[Path, Any]
) -> Any:
    """`tree` with the node at each path of `new` replaced. Mutable nodes (NNX modules and
    variables, penzai parameters) are copied, like every container, so nothing is shared
    with `tree`; one met at several paths is copied once, so ties survive."""
    stops = _Stops(types, is_leaf)
    done: dict[int, Any] = {}

    def rebuild(prefix: Path, node: Any, inside_of: Any = None) -> Any:
        leaves, treedef = stops.flatten(node, inside_of)
        out = []
        for path, x in leaves:
            f = stops.flags(x)
            if f & SHARED and id(x) in done:
                out.append(done[id(x)])
                continue
            full = (*prefix, *path)
            if full in new:
                y = new[full]
            elif f & (PYTREE_BOX | LEAF_BOX):
                name, inner, rebox = stops.open(x, f)
                inner_new = rebuild((*full, BoxKey(name)), inner)
                y = rebox(inner_new) if inner_new is not inner or f & SHARED else x
            elif f & MUTABLE and not stops.user_leaf(x):
                y = rebuild(full, x, inside_of=x)
            else:
                y = x
            if f & SHARED:
                done[id(x)] = y
            out.append(y)
        return treedef.unflatten(out)

    with no_gc():
        return rebuild((), tree)
