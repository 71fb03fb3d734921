"""Putting a pass's results back: one `Flat` per flatten (its treedef and one value per
leaf), the `Boxed` values inside boxes, the `Ref`s of hits whose results come later;
`level`, one node's children and the treedef that rebuilds it (mutable nodes, boxes,
covered subtrees and `postwalk` all rebuild a node through it); and `fold`, the
children-first rebuild `postwalk` runs over a pass's log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from .errors import call_user
from .paths import Path


class Ref:
    """A value decided after the pass: `Flat.finish(results)` puts `results[i]` here."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i


class Flat:
    """One flatten of the pass: its treedef and one value per leaf. A value may be a
    `Ref` (a hit's result, known later), another `Flat` (a node's children, flattened
    apart) or a `Boxed` (a box around a value); `pending` lists where those are. A hit's
    place is two ints instead, in `slots` and `slot_hits` (no object per hit: on 100,000
    hits the cyclic GC's passes over such objects cost more than the pass)."""

    __slots__ = ("treedef", "wrap", "values", "pending", "slots", "slot_hits", "out")

    def __init__(self) -> None:
        self.treedef: Any = None
        self.wrap: Any = None  # the node's own one-level treedef, around its children
        self.values: list[Any] = []
        self.pending: list[int] = []
        self.slots: list[int] = []  # positions in `values` of hits ...
        self.slot_hits: list[int] = []  # ... and the hit each one is
        self.out: Any = _UNSET

    def finish(self, results: list[Any] | None = None) -> Any:
        """The rebuilt node (computed once: a tied mutable object is one object)."""
        if self.out is _UNSET:
            values = self.values
            if self.slots:
                assert results is not None
                for j, i in zip(self.slots, self.slot_hits, strict=True):
                    values[j] = results[i]
            for j in self.pending:
                values[j] = resolve(values[j], results)
            out = self.treedef.unflatten(values)
            self.out = out if self.wrap is None else self.wrap.unflatten(out)
        return self.out


class Boxed:
    """A box to rebuild around the resolved value inside it."""

    __slots__ = ("rebox", "inner", "out")

    def __init__(self, rebox: Callable[[Any], Any], inner: Any) -> None:
        self.rebox, self.inner, self.out = rebox, inner, _UNSET

    def finish(self, results: list[Any] | None = None) -> Any:
        if self.out is _UNSET:
            self.out = self.rebox(resolve(self.inner, results))
        return self.out


_UNSET: Any = object()
#: The values a pass resolves in `finish`.
LATE = (Ref, Flat, Boxed)


def ready(v: Any) -> bool:
    """Can `v` be finished without the hits' results (it holds no `Ref`)?"""
    t = type(v)
    if t is Ref:
        return False
    if t is Flat:
        return v.out is not _UNSET or (not v.slots and all(ready(v.values[j]) for j in v.pending))
    if t is Boxed:
        return v.out is not _UNSET or ready(v.inner)
    return True


def resolve(v: Any, results: list[Any] | None) -> Any:
    t = type(v)
    if t is Ref:
        assert results is not None
        return results[v.i]
    if t is Flat or t is Boxed:
        return v.finish(results)
    return v


def level(x: Any) -> tuple[list[Any], list[Any], Any]:
    """`x`'s children one level down, `(entries, children, treedef)`: the key entries
    JAX's path flatten gives them, and the treedef whose `unflatten(new_children)`
    rebuilds `x` around new children (with its node type's own flatten, run once)."""
    pairs, treedef = jax.tree_util.tree_flatten_with_path(x, is_leaf=lambda c: c is not x)
    return [p[0] for p, _ in pairs], [c for _, c in pairs], treedef


# ------------------------------------------------------------------------- the walks' log

#: What a log entry is: a leaf for `fn`, a node rebuilt from its next `size` entries'
#: outputs then given to `fn`, a value kept as it is, or a tie (the output of the
#: object's first entry).
LEAF, NODE, KEPT, TIE = 0, 1, 2, 3


class Log:
    """The visible nodes of a pass in pre-order, for a children-first rebuild (`fold`):
    parallel lists (no object per node) of what each entry is, its path, its node (or
    kept value, or tie id) and, for a `NODE`, how to rebuild it and from how many
    entries."""

    __slots__ = ("kinds", "paths", "nodes", "rebuilds", "sizes", "firsts")

    def __init__(self) -> None:
        self.kinds: list[int] = []
        self.paths: list[Path] = []  # `()` for a kept value or a tie: never asked
        self.nodes: list[Any] = []
        self.rebuilds: dict[int, Callable[[list[Any]], Any]] = {}
        self.sizes: dict[int, int] = {}
        self.firsts: dict[int, int] = {}  # the entry of a tie's first visit -> its id

    def add(self, kind: int, path: Path, node: Any) -> None:
        self.kinds.append(kind)
        self.paths.append(path)
        self.nodes.append(node)

    def node(self, path: Path, x: Any, rebuild: Callable[[list[Any]], Any], size: int) -> None:
        self.rebuilds[len(self.kinds)] = rebuild
        self.sizes[len(self.kinds)] = size
        self.add(NODE, path, x)

    def fold(self, fn: Callable[[Path, Any], Any]) -> Any:
        """The root's output: `fn(path, node)` children first, each node rebuilt from its
        children's outputs (an explicit stack: no Python frame per level)."""
        kinds, paths, nodes = self.kinds, self.paths, self.nodes
        rebuilds, sizes = self.rebuilds, self.sizes
        done: dict[int, Any] = {}  # tie id -> its first output
        firsts = self.firsts
        # Open nodes: (log index, outputs so far); a node closes when it has `size`.
        stack: list[tuple[int, list[Any]]] = []
        out: Any = None
        for i, kind in enumerate(kinds):
            at = i  # the entry whose output `value` is
            if kind == NODE:
                stack.append((i, []))
                value = _UNSET
                if sizes[i]:
                    continue
            elif kind == LEAF:
                path = paths[i]
                value = call_user("fn", fn, path, path, nodes[i])
            elif kind == KEPT:
                value = nodes[i]
            else:  # a tie: its first entry is done by now (it is no ancestor of this one)
                value = done[nodes[i]]
            while True:
                if value is _UNSET:  # a node whose children are all in: close it
                    at, kids = stack.pop()
                    path = paths[at]
                    value = call_user("fn", fn, path, path, rebuilds[at](kids))
                tie = firsts.get(at)
                if tie is not None:
                    done[tie] = value
                if not stack:
                    out = value
                    break
                j, kids = stack[-1]
                kids.append(value)
                if len(kids) < sizes[j]:
                    break
                value = _UNSET
        return out
