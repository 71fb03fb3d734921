"""What a pass builds: one `Flat` per flatten (its treedef and one value per leaf), the
`Boxed` values inside boxes, and the `Ref`s of hits whose results come later. `finish`
puts the results in and unflattens, each `Flat` once (a tied object is one object)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Ref:
    """A value decided after the pass: `Flat.finish(results)` puts `results[i]` here."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i


class Flat:
    """One flatten of the pass: its treedef and one value per leaf. A value may be a
    `Ref` (a hit's result, known later), another `Flat` (a mutable node's own flatten)
    or a `Boxed` (a box around a value); `pending` lists where those are. A hit's place
    is two ints instead, in `slots` and `slot_hits` (no object per hit: on 100,000 hits
    the cyclic GC's passes over such objects cost more than the pass)."""

    __slots__ = ("treedef", "wrap", "values", "pending", "slots", "slot_hits", "out")

    def __init__(self) -> None:
        self.treedef: Any = None
        self.wrap: Any = None  # a mutable node's own one-level treedef, around its children
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


# ---------------------------------------------------------------------- the pass
