"""Strictness: no silent empty selection where a selection decides training.

`replace`, `mask`, `labels` and `nnx_filter(sel, model)` ask every atom of their
selector (each `tw.name`, `tw.glob`, `tw.regex`, `tw.of_type`, `tw.inside` object) to
match at least one node of the tree. The check costs the successful call almost nothing:
the pass's own matchers record which atoms said yes (a `name` or `"**/x"` glob records on
its per-segment memo's misses only). Only when an atom looks dead (it may just never
have been asked: `a & b` does not ask `b` where `a` says no) does one more pass ask the
dead atoms alone, and only those it confirms are errors.
"""

from __future__ import annotations

import contextlib
import difflib
import itertools
from collections.abc import Iterable
from typing import Any

from .._core.engine import Pass
from .._core.errors import NoMatchError
from .._core.kinds import LEAF, flags_of
from .._core.node import Node
from .._core.paths import path_str
from .._frameworks import is_plain_container
from .algebra import Matcher, by_last
from .atoms import And, Not, Or, Selector, brief, glob, inside, name, of_type, regex

#: The selectors strictness checks, one by one.
ATOMS = (name, glob, regex, of_type, inside)


def atoms(sel: Selector) -> list[Selector]:
    """The atoms of `sel` through `&`, `|`, `~`, each once, in order."""
    out: list[Selector] = []
    stack = [sel]
    while stack:
        s = stack.pop()
        if isinstance(s, And | Or):
            stack.extend(reversed(s.parts))
        elif isinstance(s, Not):
            stack.append(s.selector)
        elif isinstance(s, ATOMS) and s not in out:
            out.append(s)
    return out


class Recorder:
    """The atoms that said yes during a pass (`alive`), through `compile(sel)`."""

    def __init__(self) -> None:
        self.alive: list[Selector] = []

    def compile(self, sel: Selector) -> Matcher:
        """`sel.compile()`, except that each atom records its first yes."""
        if isinstance(sel, And):
            ms = [self.compile(p) for p in sel.parts]

            def all_of(n: Node) -> bool:
                for m in ms:
                    if not m(n):
                        return False
                return True

            return all_of
        if isinstance(sel, Or):
            ms = [self.compile(p) for p in sel.parts]

            def any_of(n: Node) -> bool:
                for m in ms:
                    if m(n):
                        return True
                return False

            return any_of
        if isinstance(sel, Not):
            inner = self.compile(sel.selector)
            return lambda n: not inner(n)
        if not isinstance(sel, ATOMS):
            return sel.compile()
        if isinstance(sel, name) or (isinstance(sel, glob) and sel._suffix is not None):
            # Asked once per distinct last segment: record on the memo's misses only.
            return by_last(self._recording(sel, sel.match))
        return self._recording(sel, sel.compile())

    def _recording(self, sel: Selector, m: Matcher) -> Matcher:
        alive = self.alive
        seen = False

        def rec(n: Node) -> bool:
            nonlocal seen
            if m(n):
                if not seen:
                    seen = True
                    alive.append(sel)
                return True
            return False

        return rec

    def check(
        self,
        tree: Any,
        sels: Iterable[tuple[Any, Selector]],
        *,
        call: str,
        is_leaf: Any,
        leaves_only: bool,
        include_none: bool = False,
    ) -> None:
        """A `NoMatchError` if an atom of the `(label, selector)`s matches no node (no leaf,
        with `leaves_only`) of `tree`, confirmed by a pass that asks the dead atoms alone."""
        sels = list(sels)
        dead = [(lab, s, a) for lab, s in sels for a in atoms(s) if a not in self.alive]
        if not dead:
            return
        survey = Survey(tree, [a for _, _, a in dead], is_leaf, leaves_only, include_none)
        dead = [(lab, s, a) for lab, s, a in dead if not survey.hit[a]]
        if dead:
            raise NoMatchError(survey.dead_message(dead, call=call, leaves_only=leaves_only))


class _Skips(dict[Any, bool]):
    """The last key entries whose nodes a `Survey` need not see again, as a by-last memo
    the engine reads (every answer `False`); `n` counts the nodes it answered, so that
    the survey's count stays every node's."""

    n = 0

    def get(self, e: Any, default: Any = None) -> bool | None:  # type: ignore[override]
        if e in self:
            self.n += 1
            return False
        return None


class Survey:
    """One pass that asks `atoms` about every node (or leaf) and remembers what a message
    needs: a few paths per distinct last segment, the types of the internal nodes."""

    def __init__(
        self,
        tree: Any,
        atoms: list[Selector],
        is_leaf: Any,
        leaves_only: bool,
        include_none: bool,
    ) -> None:
        self.by_last: dict[str, list[Any]] = {}
        self.types: set[type] = set()
        matchers = list(enumerate(a.compile() for a in atoms))
        hit = [False] * len(atoms)
        on_nodes = [False] * len(atoms)  # matched some internal node
        by_last, types = self.by_last, self.types
        count = itertools.count()
        tick = count.__next__

        # The sample list of `by_last` each last key entry adds to (its segment's).
        samples: dict[Any, list[Any]] = {}
        # When every atom answers by the last key entry, a node whose entry was seen and
        # whose segment has its samples adds nothing (the internal nodes' types matter to
        # `of_type` atoms only, which do not answer so): the engine answers it from `skip`.
        skip = _Skips() if all(hasattr(m, "last_memo") for _, m in matchers) else None

        def survey(n: Node) -> bool:
            # Asked at every node but `None`s (a matcher of the pass: leaves come through
            # one reused Node, so the survey allocates nothing per leaf).
            x = n.node
            path = n.path
            if path:
                tick()
                e = path[-1]
                try:
                    some = samples.get(e)
                except TypeError:  # an unhashable key entry
                    some = None
                if some is None:
                    seg = str(n.last)
                    some = by_last.get(seg)
                    if some is None:
                        some = by_last[seg] = []
                    with contextlib.suppress(TypeError):
                        samples[e] = some
                if len(some) < 5:
                    some.append(path)
                elif skip is not None:
                    with contextlib.suppress(TypeError):
                        skip[e] = False  # the atoms are asked below this once more
            is_a_leaf = bool(flags_of(x) & LEAF) or (is_leaf is not None and is_leaf(x))
            if not is_a_leaf:
                types.add(type(x))
            for i, m in matchers:
                if not hit[i] and m(n):
                    if is_a_leaf or not leaves_only:
                        hit[i] = True
                    else:
                        on_nodes[i] = True
            return False

        if skip is not None:
            survey.last_memo = skip  # type: ignore[attr-defined]  # the engine reads it
        Pass(select=survey, include_none=include_none, is_leaf=is_leaf, rebuild=False).run(tree)
        self.count = next(count) + (0 if skip is None else skip.n)
        self.hit = dict(zip(atoms, hit, strict=True))
        self.on_nodes = dict(zip(atoms, on_nodes, strict=True))

    def closest(self, sel: Selector) -> str:
        target = _target(sel)
        last = target.rsplit("/", 1)[-1]
        close = difflib.get_close_matches(last, list(self.by_last), n=5, cutoff=0.0)
        shown = [path_str(p) for seg in close for p in self.by_last[seg]]
        shown = difflib.get_close_matches(target, shown, n=5, cutoff=0.0) or shown
        return ", ".join(repr(p) for p in shown[:5]) or "(the tree has no paths)"

    def dead_message(
        self, dead: list[tuple[Any, Selector, Selector]], *, call: str, leaves_only: bool
    ) -> str:
        lab, sel, atom = dead[0]
        where = "leaf" if leaves_only else "node"
        if lab is not None:
            of = f" (in the selector of label {lab!r}, {brief(sel)})"
        else:
            of = "" if sel == atom else f" (in the selector {brief(sel)})"
        more = ""
        if len(dead) > 1:
            more = " Also dead: " + ", ".join(brief(a) for _, _, a in dead[1:4]) + "."
        why = self._why(atom, leaves_only)
        return (
            f"{call}: {brief(atom)}{of} matches no {where} of the tree ({self.count} "
            f"paths): it selects nothing, and `~` of it everything.{why} Closest paths: "
            f"{self.closest(atom)}.{more} Fix "
            f"the selector (globs are anchored at the root: '**/bias' is any bias, 'bias' "
            f"only a top-level one), or pass strict=False to allow it."
        )

    def slash_hint(self, sel: Selector) -> str:
        """A hint for a glob string on a tree whose keys hold '/' (Haiku's)."""
        if isinstance(sel, inside):
            sel = sel.selector
        if not (isinstance(sel, glob) and isinstance(sel.pattern, str)):
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

    def _why(self, atom: Selector, leaves_only: bool) -> str:
        hint = self.slash_hint(atom)
        if hint:
            return hint
        if self.on_nodes[atom]:
            return (
                f" It matches layers, not leaves, and this call asks leaves only: write "
                f"tw.inside({brief(atom)}) for the leaves of those layers."
            )
        inner = atom.selector if isinstance(atom, inside) else atom
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


def no_match_message(tree: Any, sel: Selector, is_leaf: Any) -> str:
    """Why `sel` matched nothing (every atom matched something, but not together), with the
    paths that come closest."""
    survey = Survey(tree, [], is_leaf, False, False)
    hint = survey.slash_hint(sel)
    return (
        f"selector {brief(sel)} matched nothing ({survey.count} paths in the tree). "
        f"Closest paths: {survey.closest(sel)}.{hint} Fix the selector (globs are anchored "
        f"at the root: '**/bias' is any bias, 'bias' only a top-level one), or pass "
        f"strict=False to allow an empty selection."
    )


def _target(sel: Selector) -> str:
    """The text a path should look like to match `sel` (for the closest paths)."""
    if isinstance(sel, inside):
        return _target(sel.selector)
    if isinstance(sel, name):
        return str(sel.names[0])
    if isinstance(sel, glob):
        p = sel.pattern
        return p if isinstance(p, str) else "/".join(map(str, p))
    if isinstance(sel, regex):
        return sel.pattern
    if isinstance(sel, And | Or) and sel.parts:
        return _target(sel.parts[0])
    if isinstance(sel, Not):
        return _target(sel.selector)
    return repr(sel)
