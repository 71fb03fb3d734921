"""Strictness: no silent empty selection where a selection decides training.

`replace`, `mask`, `labels` and `nnx_filter(sel, model)` ask every atom of their
selector (each `tw.name`, `tw.glob`, `tw.regex`, `tw.of_type`, `tw.inside` object) to
match at least one node of the tree. The check costs the successful call almost
nothing: a `Recorder` wraps each atom's matcher (`Selector.compile(wrap)`) to note its
first yes during the call's own pass. Only when an atom looks dead (it may just never
have been asked: `a & b` does not ask `b` where `a` says no) does a `Survey`, one more
pass, ask the dead atoms alone at every node; only those it confirms are errors.

Strictness is vacuous on a tree without leaves (`{}`, `None`, `{"a": None}`, a module
of static fields): there is nothing a selection could have missed.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from .._core.engine import Find, Pass
from .._core.errors import NoMatchError
from .._core.matcher import Matcher
from .._core.node import Node
from .._core.paths import path_str
from .._frameworks import is_plain_container
from .algebra import Selector, brief, fold, glob, of_type


def atoms(sel: Selector) -> list[Selector]:
    """The atoms of `sel` that strict calls check, each once, in order."""

    def collect(s: Selector, parts: list[list[Selector]]) -> list[Selector]:
        if s.checked:
            return [s]
        out: list[Selector] = []
        for found in parts:
            out.extend(a for a in found if a not in out)
        return out

    return fold(sel, collect)


def target(sel: Selector) -> str:
    """The text a path should look like to match `sel` (for the closest paths): its first
    atom's name or pattern."""

    def first(s: Selector, parts: list[str]) -> str:
        own = getattr(s, "target", None)
        if isinstance(own, str):
            return own
        return parts[0] if parts else repr(s)

    return fold(sel, first)


class Recorder:
    """The atoms that said yes during a pass (`alive`), through `sel.compile(rec.wrap)`."""

    def __init__(self) -> None:
        self.alive: list[Selector] = []

    def wrap(self, atom: Selector, m: Matcher) -> Matcher:
        """`m`, recording `atom`'s first yes (its memos are kept: they hold only answers
        the wrapped test gave, so the first yes for any entry or type comes through)."""
        alive, test = self.alive, m.test
        seen = False

        def rec(n: Node) -> bool:
            nonlocal seen
            if test(n):
                if not seen:
                    seen = True
                    alive.append(atom)
                return True
            return False

        return m.wrapped(rec)

    def compile(self, sel: Selector) -> Matcher:
        return sel.compile(self.wrap)

    def check(
        self,
        tree: Any,
        sels: Iterable[tuple[Any, Selector]],
        *,
        call: str,
        is_leaf: Any,
        include_none: bool = False,
    ) -> None:
        """A `NoMatchError` if an atom of the `(label, selector)`s matches no node of
        `tree`, confirmed by a pass that asks the dead atoms alone (none on a tree
        without leaves)."""
        sels = list(sels)
        dead = [(lab, s, a) for lab, s in sels for a in atoms(s) if a not in self.alive]
        if not dead:
            return
        survey = Survey(tree, [a for _, _, a in dead], is_leaf, include_none)
        dead = [(lab, s, a) for lab, s, a in dead if not survey.hit[a]]
        if dead and survey.leaves:
            raise NoMatchError(survey.dead_message(dead, call=call))


class Survey:
    """One pass that asks `atoms` about every node and remembers what a message needs: how
    many paths and leaves the tree has, a few paths per distinct last segment, the types
    of the internal nodes."""

    def __init__(self, tree: Any, atoms: list[Selector], is_leaf: Any, include_none: bool):
        self.by_last: dict[str, list[Any]] = {}
        self.types: set[type] = set()
        self.count = self.leaves = 0
        matchers = [a.compile() for a in atoms]
        hit = [False] * len(atoms)
        by_last, types = self.by_last, self.types

        def survey(n: Node) -> bool:
            # Asked at every node but `None`s, and never a hit: nothing is kept per node.
            if n.leaf:
                self.leaves += 1
            else:
                types.add(type(n.node))
            last = n.last
            if last is not None:
                self.count += 1
                some = by_last.setdefault(str(last), [])
                if len(some) < 5:
                    some.append(n.path)
            for i, m in enumerate(matchers):
                if not hit[i] and m(n):
                    hit[i] = True
            return False

        find = Find(Matcher(survey), outermost=False)
        Pass(find, is_leaf=is_leaf, include_none=include_none, rebuild=False).run(tree)
        self.hit = dict(zip(atoms, hit, strict=True))

    def closest(self, sel: Selector) -> str:
        want = target(sel)
        last = want.rsplit("/", 1)[-1]
        close = difflib.get_close_matches(last, list(self.by_last), n=5, cutoff=0.0)
        shown = [path_str(p) for seg in close for p in self.by_last[seg]]
        shown = difflib.get_close_matches(want, shown, n=5, cutoff=0.0) or shown
        return ", ".join(repr(p) for p in shown[:5]) or "(the tree has no paths)"

    def dead_message(self, dead: list[tuple[Any, Selector, Selector]], *, call: str) -> str:
        lab, sel, atom = dead[0]
        if lab is not None:
            of = f" (in the selector of label {lab!r}, {brief(sel)})"
        else:
            of = "" if sel == atom else f" (in the selector {brief(sel)})"
        more = ""
        if len(dead) > 1:
            more = " Also dead: " + ", ".join(brief(a) for _, _, a in dead[1:4]) + "."
        return (
            f"{call}: {brief(atom)}{of} matches no node of the tree ({self.count} paths): "
            f"it selects nothing, and `~` of it every leaf.{self._why(atom)} Closest "
            f"paths: {self.closest(atom)}.{more} Fix the selector (globs are anchored at "
            f"the root: '**/bias' is any bias, 'bias' only a top-level one), or pass "
            f"strict=False to allow it."
        )

    def slash_hint(self, sel: Selector) -> str:
        """A hint for a glob string on a tree whose keys hold '/' (Haiku's)."""
        inner = sel.parts[0] if sel.checked and sel.parts else sel  # `inside(glob)`
        if not (isinstance(inner, glob) and isinstance(inner.pattern, str)):
            return ""
        slashed = [seg for seg in self.by_last if "/" in seg]
        if not slashed:
            return ""
        seg = slashed[0]
        return (
            f" The key {seg!r} holds '/', so it is one segment and a glob string splits "
            f"it: pass a tuple of segment patterns instead, e.g. tw.glob(({seg!r}, ...)), "
            f"or match the key with '*'."
        )

    def _why(self, atom: Selector) -> str:
        hint = self.slash_hint(atom)
        if hint:
            return hint
        inner = atom.parts[0] if atom.parts else atom  # `inside(of_type(...))`
        if not isinstance(inner, of_type):
            return ""
        names = ", ".join(t.__qualname__ for t in inner.types)
        if all(is_plain_container(t) for t in self.types):
            return (
                f" No node of this tree is a {names}: it holds no layers at all (an "
                f"`nnx.State`, or the bare arrays optax hands a mask function, keeps no "
                f"module objects). Build the mask from the model, e.g. `tw.mask(model, "
                f"sel)` or `tw.nnx_filter(sel, model)`, or select by path, e.g. "
                f"tw.glob('**/norm/**') or tw.name('scale')."
            )
        return f" No node of this tree is a {names}."


def check_selects(tree: Any, sel: Selector, *, call: str, is_leaf: Any, include_none: bool):
    """A `NoMatchError` for a selector that selects nothing (though every atom matched
    something, just not together), unless the tree has no leaves."""
    survey = Survey(tree, [], is_leaf, include_none)
    if not survey.leaves:
        return
    raise NoMatchError(
        f"{call}: the selector {brief(sel)} selects nothing ({survey.count} paths in the "
        f"tree). Closest paths: {survey.closest(sel)}.{survey.slash_hint(sel)} Fix the "
        f"selector (globs are anchored at the root: '**/bias' is any bias, 'bias' only a "
        f"top-level one), or pass strict=False to allow an empty selection."
    )
