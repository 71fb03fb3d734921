"""Nodes of one tree found by the paths of another: `tw.replace(tree, sel, fn, *rest)`
and `tw.diff` align trees by path segments (`tw.path_segments`), not by treedef, so an
NNX module lines up with its `nnx.State`, an Equinox model with a dict of the same
names, and a tree with a bigger one."""

from __future__ import annotations

from typing import Any

from .._frameworks import unboxed
from .paths import segment
from .rebuild import level

#: What `Aligned.at` returns for a path the tree does not have.
MISSING: Any = object()


class Aligned:
    """A tree, asked for its node at a path's segments (boxes opened, as the engine
    opens them). Each node's children are listed once, the first time a path goes
    through it, so finding every leaf costs about one flatten of the tree."""

    def __init__(self, tree: Any) -> None:
        self._at: dict[tuple[Any, ...], Any] = {(): unboxed(tree)}
        self._children: dict[int, dict[Any, Any]] = {}

    def at(self, segs: tuple[Any, ...]) -> Any:
        """The node at `segs`, or `MISSING`."""
        found = self._at.get(segs, MISSING)
        if found is not MISSING or not segs:
            return found
        parent = self.at(segs[:-1])
        if parent is MISSING:
            return MISSING
        children = self._children.get(id(parent))
        if children is None:
            children = self._children[id(parent)] = _children(parent)
        last = segs[-1]
        child = children.get(last, MISSING)
        if child is MISSING:  # a list's `0` beside a dict's `"0"` (an NNX `State`'s keys)
            other = str(last) if isinstance(last, int) else _int(last)
            child = children.get(other, MISSING)
        child = child if child is MISSING else unboxed(child)
        self._at[segs] = child
        return child


def _children(node: Any) -> dict[Any, Any]:
    t = type(node)
    if t is dict:  # the common containers read directly: a third of the cost of `level`
        if all(type(k) is str or type(k) is int for k in node):
            return node
    elif t is list or t is tuple:
        return dict(enumerate(node))
    try:
        entries, children, _ = level(node)
    except Exception:  # a leaf of no registered type: it has no children
        return {}
    if len(children) == 1 and children[0] is node:
        return {}  # a leaf
    return {segment(e): c for e, c in zip(entries, children, strict=True)}


def _int(s: Any) -> Any:
    return int(s) if isinstance(s, str) and s.isdigit() else s
