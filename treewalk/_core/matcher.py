"""`Matcher`: what a compiled selector gives the engine for one pass.

A selector is compiled once per call (`Selector.compile()`); the engine reads the
result here and nowhere else. A matcher is its `test`, plus what it declares about its
answers so that the engine can skip asking:

- `leaves_only`: the test is false at every internal node (`tw.arrays`, `~sel`), so the
  engine does not ask there.
- `by_entry`: answers remembered by a node's last key entry (for a box's value, the
  entry of the box: an NNX bias by `bias`), valid at every node, leaf or not, because
  the answer depends on that entry alone (`tw.name`, `"**/bias"`). The engine reads it
  before it asks `test`, and `test` fills it.
- `by_type`: answers remembered by the node's type, valid at every node outside a box
  (a value inside a box may match by the box's type too), for the types whose answer
  the type decides (`tw.of_type`, `tw.arrays`). `test` fills it.
- `complement_of`: this matcher picks exactly the leaves another one does not cover
  (`~a`), so a pass that marks covered leaves (a mask) may ask that one instead, through
  its own shortcuts, and negate: `mask(~a)` is `not mask(a)` at every leaf.

A memo holds only answers `test` gave. So whoever wraps `test` (strictness records which
atoms said yes) and keeps the memos still sees every first answer: a memo is read only
for entries or types `test` was already asked about.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .node import Node


class Matcher:
    """A selector compiled for one pass: `test(n)` and the declared shortcuts above."""

    __slots__ = ("test", "leaves_only", "by_entry", "by_type", "complement_of")

    test: Callable[[Node], bool]
    leaves_only: bool
    by_entry: Mapping[Any, bool] | None
    by_type: Mapping[type, bool] | None
    complement_of: Matcher | None

    def __init__(
        self,
        test: Callable[[Node], bool],
        *,
        leaves_only: bool = False,
        by_entry: Mapping[Any, bool] | None = None,
        by_type: Mapping[type, bool] | None = None,
        complement_of: Matcher | None = None,
    ) -> None:
        self.test = test
        self.leaves_only = leaves_only
        self.by_entry = by_entry
        self.by_type = by_type
        self.complement_of = complement_of

    def __call__(self, n: Node) -> bool:
        """The answer at `n`, through the shortcuts as the engine takes them."""
        if self.leaves_only and not n.leaf:
            return False
        return bool(self.test(n))

    def wrapped(self, test: Callable[[Node], bool]) -> Matcher:
        """The same declarations around another `test` (one that calls this one's)."""
        return Matcher(
            test,
            leaves_only=self.leaves_only,
            by_entry=self.by_entry,
            by_type=self.by_type,
            complement_of=self.complement_of,
        )
