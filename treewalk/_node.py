"""`tw.Node`: what selectors and `fn`s with context see of one node of a tree."""

from __future__ import annotations

from typing import Any

from ._path import Path, path_segments, segment


class Node:
    """What a selector sees of one node: its path, value, the box around it (if any) and
    its parent's `Node`. `segs` (the path's segments) is computed on first use."""

    __slots__ = ("path", "node", "outer", "parent", "_segs")

    def __init__(self, path: Path, node: Any, outer: Any, parent: Node | None) -> None:
        self.path, self.node, self.outer, self.parent = path, node, outer, parent
        self._segs: tuple[Any, ...] | None = None

    @property
    def last(self) -> Any:
        """The last segment, or `None` at the root."""
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
        segs = self._segs
        if segs is None:
            parent = self.parent
            path = self.path
            if parent is None:
                segs = path_segments(path)
            else:
                segs = parent._segs
                if segs is None:
                    segs = parent.segs
                n = len(parent.path)
                if len(path) == n + 1:
                    s = segment(path[n])
                    if s is not None:
                        segs = (*segs, s)
                else:
                    for entry in path[n:]:
                        s = segment(entry)
                        if s is not None:
                            segs = (*segs, s)
            self._segs = segs
        return segs
