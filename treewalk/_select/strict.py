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

import contextlib
import difflib
from collections.abc import Iterable
from typing import Any

from .._core.engine import Find, Pass
from .._core.errors import NoMatchError
from .._core.matcher import Matcher
from .._core.node import Node, memo_key
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
    """The atoms that said yes during a pass, through `sel.compile(rec.wrap)`: `alive()`."""

    def __init__(self) -> None:
        self.said_yes: list[Selector] = []
        # Atoms whose matcher remembers every answer it gave (by entry or by type): alive
        # if the memo holds a yes, read after the pass: no wrapper, no call per node.
        self.memos: list[tuple[Selector, Any]] = []

    def alive(self) -> list[Selector]:
        return self.said_yes + [a for a, memo in self.memos if any(memo.values())]

    def wrap(self, atom: Selector, m: Matcher) -> Matcher:
        """`m`, recording `atom`'s first yes: a matcher with a memo as it is (the memo
        holds every answer its test gave: a yes there is a node it picked), any other
        with its test wrapped."""
        memo = m.by_entry if m.by_entry is not None else m.by_type
        if memo is not None:
            self.memos.append((atom, memo))
            return m
        alive, test = self.said_yes, m.test
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
        alive = self.alive()
        dead = [(lab, s, a) for lab, s in sels for a in atoms(s) if a not in alive]
        if not dead:
            return
        survey = Survey(tree, [a for _, _, a in dead], is_leaf, include_none)
        dead = [(lab, s, a) for lab, s, a in dead if not survey.hit[a]]
        if dead and survey.leaves:
            raise NoMatchError(survey.dead_message(dead, call=call))


class _Skips(dict[Any, bool]):
    """The key entries whose nodes a `Survey` need not see again, as a by-entry memo the
    engine reads (every answer `False`, valid at leaves and internal nodes alike: every
    atom answers by the entry alone); `n` counts the nodes it answered, so that the
    survey's count of paths stays every node's."""

    n = 0

    def get(self, e: Any, default: Any = None) -> bool | None:  # type: ignore[override]
        if e in self:
            self.n += 1
            return False
        return None


class Survey:
    """One pass that asks `atoms` about every node and remembers what a message needs: how
    many paths the tree has and whether it has a leaf, a few paths per distinct last
    segment, the types of the internal nodes.

    When every atom answers by the last key entry (`tw.name`, `"**/x"`), a node whose
    entry was seen and whose segment has its samples adds nothing more: the engine
    answers it from `_Skips`, without a `Node` (a miss on 100,000 leaves costs a third
    less). Entries are skipped only once a leaf was seen, so the leaf count that decides
    vacuity is never lost, and never where an `of_type` atom needs the types."""

    def __init__(self, tree: Any, atoms: list[Selector], is_leaf: Any, include_none: bool):
        self.by_last: dict[str, list[Any]] = {}
        self.types: set[type] = set()
        matchers = [a.compile() for a in atoms]
        hit = [False] * len(atoms)
        by_last, types = self.by_last, self.types
        skip = _Skips() if all(m.by_entry is not None for m in matchers) else None
        count = leaves = 0

        def survey(n: Node) -> bool:
            # Asked at every node but `None`s, and never a hit: nothing is kept per node.
            nonlocal count, leaves
            if n.leaf:
                leaves += 1
            else:
                types.add(type(n.node))
            last = n.last
            if last is not None:
                count += 1
                some = by_last.setdefault(str(last), [])
                if len(some) < 5:
                    some.append(n.path)
                elif skip is not None and leaves:
                    with contextlib.suppress(TypeError):  # an unhashable entry: asked
                        skip[memo_key(n)] = False
            for i, m in enumerate(matchers):
                if not hit[i] and m(n):
                    hit[i] = True
            return False

        find = Find(Matcher(survey, by_entry=skip), outermost=False)
        Pass(find, is_leaf=is_leaf, include_none=include_none, rebuild=False).run(tree)
        self.count = count + (0 if skip is None else skip.n)
        self.leaves = leaves
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
