"""Nodes of one tree found by the paths of another: `tw.replace(tree, sel, fn, *rest)`
and `tw.diff` align trees by path segments (`tw.path_segments`), not by treedef, so an
NNX module lines up with its `nnx.State`, an Equinox model with a dict of the same
names, and a tree with a bigger one."""

from __future__ import annotations

from typing import Any

from jax.tree_util import GetAttrKey

from .._frameworks import registry, unboxed
from .children import ChildKeys
from .kinds import child_kinds
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
        self._children: dict[int, Any] = {}  # a node's children by segment: `.get`
        self._keys = ChildKeys(child_kinds)  # key entries, learnt once per class
        self._boxes = registry.refresh().boxes

    def at(self, segs: tuple[Any, ...]) -> Any:
        """The node at `segs`, or `MISSING`."""
        found = self._at.get(segs, MISSING)
        if found is not MISSING or not segs:
            return found
        parent = self.at(segs[:-1])
        child = MISSING if parent is MISSING else self.child(parent, segs[-1])
        self._at[segs] = child
        return child

    def child(self, parent: Any, seg: Any) -> Any:
        """The child of `parent` (a node of this tree) at segment `seg`, or `MISSING`."""
        children = self._children.get(id(parent))
        if children is None:
            children = self._children[id(parent)] = _children(parent, self._keys)
        child = children.get(seg, MISSING)
        if child is MISSING:  # a list's `0` beside a dict's `"0"` (an NNX `State`'s keys)
            other = str(seg) if isinstance(seg, int) else _int(seg)
            child = children.get(other, MISSING)
        boxes = self._boxes
        # `issubclass(type(...))`: an Equinox module answers `isinstance` through its own
        # `__getattribute__` (`__class__`), ten times slower.
        return unboxed(child) if boxes and issubclass(type(child), boxes) else child


def _children(node: Any, keys: ChildKeys) -> Any:
    t = type(node)
    if t is dict:  # the common containers read directly: a third of the cost of `level`
        if all(type(k) is str or type(k) is int for k in node):
            return node
    elif t is list or t is tuple:
        return dict(enumerate(node))
    elif registry.fixed_children and issubclass(t, registry.fixed_children):
        # An Equinox module: its fields, learnt once per class (a tenth of `level`'s cost).
        entries = keys(node)
        if all(type(e) is GetAttrKey for e in entries):
            return _Fields(node, {e.name for e in entries})
    try:
        entries, children, _ = level(node)
    except Exception:  # a leaf of no registered type: it has no children
        return {}
    if len(children) == 1 and children[0] is node:
        return {}  # a leaf
    return {segment(e): c for e, c in zip(entries, children, strict=True)}


class _Fields:
    """A module's children by field name, read from its `__dict__` where they are (an
    Equinox module's `getattr` costs ten times a dict lookup), else with `getattr`."""

    __slots__ = ("node", "names", "values")

    def __init__(self, node: Any, names: set[str]) -> None:
        self.node, self.names = node, names
        try:  # not through the module's own `__getattribute__` (Equinox's is slow)
            self.values: dict[str, Any] = object.__getattribute__(node, "__dict__")
        except AttributeError:  # a class with `__slots__`
            self.values = {}

    def get(self, name: Any, default: Any) -> Any:
        if name not in self.names:
            return default
        value = self.values.get(name, _ABSENT)
        return getattr(self.node, name) if value is _ABSENT else value


_ABSENT: Any = object()


def _int(s: Any) -> Any:
    return int(s) if isinstance(s, str) and s.isdigit() else s
