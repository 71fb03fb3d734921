"""The rules a user gives `tw.load` and `tw.export` about keys: `rename=` (regex pairs,
callables, `None` to skip) and `layouts=` (how a source's arrays are laid out), and the
rename rule a `LoadError` suggests."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TypeAlias

from .._core.errors import ArgumentError, CallbackError, PatternError

#: One rule of `rename=`: a `(regex, replacement)` pair (`None` as the replacement skips a
#: key the regex finds) or a callable from key to key (or `None`, to skip it).
RenameRule: TypeAlias = tuple[str, str | None] | Callable[[str], str | None]
Rename: TypeAlias = Sequence[RenameRule] | Callable[[str], str | None] | None
#: `layouts=`: `{regex: layout}`, the axis layout of the source arrays whose keys the regex
#: finds (`"io"`, `"oik"`, ...), or `"as-is"` to load them unconverted.
Layouts: TypeAlias = Mapping[str, str] | None


def suggest_rename(missing: list[str], unused: list[str]) -> str | None:
    """A `rename` rule, as text, that maps unused source keys onto missing destination
    paths (both written with `/`): a prefix to drop or add, or one module name to change.
    `None` when no one rule maps a key."""
    votes: dict[tuple[str, str], int] = {}
    for u in unused:
        for m in missing:
            rule = None
            if u.endswith("/" + m):
                rule = "^" + re.escape(u[: -len(m)]), ""
            elif m.endswith("/" + u):
                rule = "^", m[: -len(u)]
            else:
                a, b = u.split("/"), m.split("/")
                diff = [j for j in range(len(a)) if len(a) == len(b) and a[j] != b[j]]
                if len(diff) == 1 and diff[0] < len(a) - 1:
                    rule = f"(?:^|(?<=/)){re.escape(a[diff[0]])}/", f"{b[diff[0]]}/"
            if rule is not None:
                votes[rule] = votes.get(rule, 0) + 1
    if not votes:
        return None
    pattern, replacement = max(votes, key=lambda r: votes[r])
    return f"({pattern!r}, {replacement!r})"


def renamer_of(rename: Rename) -> Callable[[str], str | None]:
    """One function from a source key to its destination path (`None`: skip the key), for
    `rename=`: a callable, or rules applied in order, each a `(regex, replacement)` pair
    (`re.sub`; a replacement of `None` skips a key the regex finds) or a callable."""
    if rename is None:
        return lambda k: k
    if callable(rename):
        return _checked(rename)
    steps: list[Callable[[str], str | None]] = []
    for rule in rename:
        if callable(rule):
            steps.append(_checked(rule))
            continue
        if not (isinstance(rule, tuple | list) and len(rule) == 2):
            raise ArgumentError(
                f"rename= takes (regex, replacement) pairs and callables; got {rule!r}."
            )
        pattern, replacement = rule
        try:
            compiled = re.compile(pattern)
        except re.error as e:
            raise PatternError(f"rename pattern {pattern!r} is not a valid regex: {e}.") from e
        steps.append(_substitute(compiled, replacement))

    def apply(k: str) -> str | None:
        out: str | None = k
        for step in steps:
            out = step(out)
            if out is None:
                return None
        return out

    return apply


def _substitute(pattern: re.Pattern[str], replacement: str | None) -> Callable[[str], str | None]:
    if replacement is None:
        return lambda k: None if pattern.search(k) else k
    return lambda k: pattern.sub(replacement, k)


def _checked(fn: Callable[[str], str | None]) -> Callable[[str], str | None]:
    def call(k: str) -> str | None:
        try:
            out = fn(k)
        except Exception as e:
            raise CallbackError(f"rename raised on source key {k!r}: {e!r}") from e
        if out is not None and not isinstance(out, str):
            raise ArgumentError(
                f"rename returned {type(out).__name__} for source key {k!r}; return the "
                "destination path as a str, or None to skip the key."
            )
        return out

    return call


def layouts_of(layouts: Layouts) -> Callable[[str], str | None]:
    """The function `layouts=` stands for: a source key (written with `/`) to the layout
    the first regex that finds it gives, or `None`."""
    if not layouts:
        return lambda k: None
    rules = []
    for pattern, layout in layouts.items():
        if layout != "as-is" and (
            not isinstance(layout, str) or sorted(layout) not in (["i", "o"], ["i", "k", "o"])
        ):
            raise ArgumentError(
                f"layouts={{{pattern!r}: {layout!r}}}: a layout names each axis of the source "
                "array, 'o' out, 'i' in, 'k' the kernel axes ('oi', 'io', 'oik', 'kio', "
                "'iok'), or is 'as-is' to load it unconverted."
            )
        try:
            rules.append((re.compile(pattern), layout))
        except re.error as e:
            raise PatternError(f"layouts pattern {pattern!r} is not a valid regex: {e}.") from e
    return lambda k: next((layout for p, layout in rules if p.search(k)), None)
