"""Glob patterns, segment-wise: compiled once, matched against a path's segments."""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from .._core.errors import PatternError

#: A `**` segment (any number of segments), and a `*` one (exactly one).
STAR2 = object()
STAR = object()


def compile_segment(pattern: str, seg: str) -> Any:
    if seg == "**":
        return STAR2
    if seg == "*":
        return STAR
    if "**" in seg:
        raise PatternError(
            f"glob {pattern!r}: '**' must be a whole segment (got {seg!r}). Use '**' alone "
            f"between slashes for any number of segments, or '*' for part of one segment."
        )
    if not any(c in seg for c in "*?["):
        return seg
    depth = 0
    for c in seg:
        if c == "[":
            depth += 1
        elif c == "]" and depth:
            depth = 0
    if depth:
        raise PatternError(
            f"glob {pattern!r}: unbalanced '[' in segment {seg!r}. Close it, e.g. "
            f"'layer_[0-9]', or escape a literal bracket as '[[]'."
        )
    return re.compile(fnmatch.translate(seg), re.DOTALL).match


def match_one(p: Any, s: Any) -> bool:
    """Does segment pattern `p` match segment `s` (an `int` by its decimal text)?"""
    if p is STAR:
        return True
    if type(s) is not str:
        s = str(s)
    return p == s if type(p) is str else p(s) is not None


def match_segs(pat: tuple[Any, ...], segs: tuple[Any, ...]) -> bool:
    # Iterative glob matching with backtracking over the last '**' seen.
    pi = si = 0
    star_pi = star_si = -1
    np_, ns = len(pat), len(segs)
    while si < ns:
        if pi < np_:
            p = pat[pi]
            if p is STAR2:
                star_pi, star_si = pi, si
                pi += 1
                continue
            if match_one(p, segs[si]):
                pi += 1
                si += 1
                continue
        if star_pi < 0:
            return False
        star_si += 1
        si = star_si
        pi = star_pi + 1
    while pi < np_ and pat[pi] is STAR2:
        pi += 1
    return pi == np_
