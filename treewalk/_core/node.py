"""`tw.Node`: what selectors and `fn`s with context see of one node of a tree; `Hits`, the
nodes a pass selected."""

from __future__ import annotations

from typing import Any

from .paths import BoxKey, Path, path_segments, segment, show_path


class Node:
    """What a selector, and an `fn` with context, see of one node of a tree.

    Every call hands selectors a `Node` (`Selector.match(n)`), and `replace` hands one to
    an `fn` that defines `tw_call(n, key)` instead of `fn(path, node, key)` (as `tw.init`
    does, to read a bias's fan-in from its layer's weight). A `Node` is made for one
    visit and never changes afterwards: a selector may keep the nodes it is shown.
    Attributes:

    - `path`: the node's key path (a box's value ends in a `tw.BoxKey`).
    - `node`: the node (the bare value, for a value inside a box).
    - `outer`: the box around the value (an NNX `Variable`, linen `Partitioned`, penzai
      `Parameter`), or `None`.
    - `parent`: the `Node` of the nearest enclosing node (the layer around a weight), or
      `None` at the root.
    - `leaf`: whether the node is a leaf of the walk (an array, a Python scalar, a
      function, a box's value, an `is_leaf` node; `None` only where a call includes
      `None`s), rather than a container of other nodes (`None`, empty containers and
      static nodes are containers without children).
    - `segs`, `last`: the path's segments (`tw.path_segments`), and the last one.

    `tw.Node(path, node, outer, parent, leaf)` makes one (`entry`, optional: the last
    key entry of `path`, which the engine passes along).

    !!! Example

        ```python
        import jax.numpy as jnp
        import treewalk as tw

        class Fill:
            def tw_call(self, n, key):  # n is a tw.Node
                return jnp.full(n.node.shape, len(n.parent.segs), n.node.dtype)

            def __call__(self, path, node, key):
                raise NotImplementedError

        out = tw.replace({"a": {"w": jnp.zeros(2)}}, "**/w", Fill())
        assert (out["a"]["w"] == 1).all()
        ```
    """

    __slots__ = ("path", "node", "outer", "parent", "leaf", "_entry", "_segs", "_above")

    path: Path
    node: Any
    outer: Any
    parent: Node | None
    leaf: bool

    def __init__(
        self,
        path: Path,
        node: Any,
        outer: Any = None,
        parent: Node | None = None,
        leaf: bool = False,
        entry: Any = None,
    ) -> None:
        self.path, self.node, self.outer, self.parent, self.leaf = path, node, outer, parent, leaf
        self._entry: Any = entry  # the last key entry, known to the engine (never a BoxKey)
        self._segs: tuple[Any, ...] | None = None
        # Whether a matcher picks this node or one above it, by matcher (`algebra.above`).
        self._above: dict[Any, bool] | None = None

    @property
    def last(self) -> Any:
        """The last segment, or `None` at the root."""
        e = self._entry
        if e is not None:  # made by the engine: its own entry is the last one
            return segment(e)
        segs = self._segs
        if segs is not None:
            return segs[-1] if segs else None
        path = self.path
        for i in range(len(path) - 1, -1, -1):
            s = segment(path[i])
            if s is not None:
                return s
        return None

    @property
    def segs(self) -> tuple[Any, ...]:
        """The path's segments (`tw.path_segments(self.path)`), computed once."""
        segs = self._segs
        if segs is None:
            e = self._entry
            if e is not None and self.parent is not None:  # parent's and this entry's
                segs = self.parent.segs  # type: ignore[union-attr]
                s = segment(e)
                if s is not None:
                    segs = (*segs, s)
            else:
                segs = segments_below(self.parent, self.path)
            self._segs = segs
        return segs

    def __repr__(self) -> str:
        kind = "leaf" if self.leaf else "node"
        return f"tw.Node({kind} at {show_path(self.path)}: {type(self.node).__name__})"


class LazyLeaf(Node):
    """The `Node` of a leaf at `entry` below `parent`, whose path is made only when
    something asks for it (the engine's leaves: most are answered without their path)."""

    __slots__ = ("_path",)

    def __init__(self, parent: Node, entry: Any, node: Any, outer: Any) -> None:
        self.node, self.outer, self.parent, self.leaf, self._entry = (
            node,
            outer,
            parent,
            True,
            entry,
        )
        self._segs = self._above = self._path = None

    @property
    def path(self) -> Path:  # type: ignore[override]
        """The node's key path: its parent's and its entry."""
        path = self._path
        if path is None:
            path = self._path = self.parent.path + (self._entry,)  # type: ignore[union-attr]
        return path


def segments_below(parent: Node | None, path: Path) -> tuple[Any, ...]:
    """The segments of `path`, a path below `parent`'s: its parent's (computed once per
    parent, up the chain without recursion: a tree may be as deep as JAX allows) and
    those of the entries after it."""
    if parent is None:
        return path_segments(path)
    segs: tuple[Any, ...] | None = parent._segs
    if segs is None:
        chain = []  # the ancestors whose segments are not known yet, nearest first
        p: Node | None = parent
        while p is not None and p._segs is None:
            chain.append(p)
            p = p.parent
        if p is None:  # no ancestor knows its segments: start from the root's path
            below = chain.pop()
            segs = below._segs = path_segments(below.path)
        else:
            below, segs = p, p._segs or ()  # `p._segs` is known: the loop stopped there
        for q in reversed(chain):
            segs = q._segs = _extend(segs, below.path, q.path)
            below = q
    return _extend(segs, parent.path, path)


def _extend(segs: tuple[Any, ...], base: Path, path: Path) -> tuple[Any, ...]:
    """`segs` (the segments of `base`) with those of `path`'s entries after `base`."""
    n = len(base)
    if len(path) == n + 1:
        s = segment(path[n])
        return segs if s is None else (*segs, s)
    for entry in path[n:]:
        s = segment(entry)
        if s is not None:
            segs = (*segs, s)
    return segs


def memo_key(n: Node) -> Any:
    """The key entry a by-entry memo answers `n` by (see `memo_entry`)."""
    e = n._entry
    return e if e is not None else memo_entry(n.path)


def memo_entry(path: Path) -> Any:
    """The key entry a by-entry memo answers a node at `path` by: its last entry, or for a
    box's value the entry of the box (an NNX bias by `bias`); `None` at the root."""
    for i in range(len(path) - 1, -1, -1):
        if type(path[i]) is not BoxKey:
            return path[i]
    return None


class Hits:
    """The nodes a pass selected, in pre-order, as parallel lists: each hit's path, as its
    parent's path (`bases[i]`) and its last entry (`entries[i]`, `None` when `bases[i]`
    is the whole path), `nodes[i]`, the box around each (`outers`, only where there is
    one) and, when the pass was asked to keep them, the parent `Node`s and whether each
    hit is a leaf. No object is made
    per hit: on 100,000 hits the cyclic GC's passes over such objects (a path tuple per
    leaf included) cost more than the pass. `path(i)` makes hit `i`'s path when it is
    asked for, `paths` all of them; `hits[i]` makes a `Node` of hit `i` when a selector
    or `fn` needs one (a new one each time: kept, they would outlive their use)."""

    __slots__ = ("bases", "entries", "nodes", "outers", "parents", "leaves")

    def __init__(self, keep_parents: bool) -> None:
        self.bases: list[Path] = []
        self.entries: list[Any] = []
        self.nodes: list[Any] = []
        self.outers: dict[int, Any] = {}
        self.parents: list[Node | None] | None = [] if keep_parents else None
        self.leaves: list[bool] | None = [] if keep_parents else None

    def __len__(self) -> int:
        return len(self.nodes)

    def path(self, i: int) -> Path:
        """Hit `i`'s key path."""
        e = self.entries[i]
        return self.bases[i] if e is None else self.bases[i] + (e,)

    @property
    def paths(self) -> list[Path]:
        """Every hit's key path, in order (made anew each time asked)."""
        return [
            b if e is None else b + (e,) for b, e in zip(self.bases, self.entries, strict=True)
        ]

    def segs(self, i: int) -> tuple[Any, ...]:
        """`hits[i].segs`, without making the `Node`."""
        parents = self.parents
        return segments_below(None if parents is None else parents[i], self.path(i))

    def __getitem__(self, i: int) -> Node:
        parents, leaves = self.parents, self.leaves
        parent = None if parents is None else parents[i]
        leaf = leaves is not None and leaves[i]
        return Node(self.path(i), self.nodes[i], self.outers.get(i), parent, leaf)
