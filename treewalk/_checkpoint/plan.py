"""`tw.load_plan`: which source key loads into which destination array, converted how.
`tw.load` builds this plan, checks it whole, and only then reads and places arrays."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

from .._core.errors import ArgumentError, CallbackError, PatternError
from .._frameworks.checkpoint import CONVENTIONS, source_only
from .leaves import (
    Leaf,
    check_convention,
    convert_weight,
    flatten_source,
    model_leaves,
    vector_reshape,
)
from .sources import Source, normalise, open_source, staging

Rename: TypeAlias = Sequence[tuple[str, str]] | Callable[[str], str | None] | None

#: The statuses of a plan's rows that are problems (`load`, `tied` and `skip` are not).
PROBLEMS = ("missing", "unused", "mismatch", "twice")
_LISTED = 10


class Step:
    """One row of a `LoadPlan`: a destination array and the source key loaded into it, or
    a destination array nothing loads into (`key` is `None`), or a source key nothing
    uses (`leaf` is `None`)."""

    __slots__ = (
        "leaf",
        "key",
        "renamed",
        "shape",
        "dtype",
        "perm",
        "reshape",
        "cast",
        "status",
        "why",
    )

    leaf: Leaf | None
    key: str | None
    renamed: str | None
    shape: tuple[int, ...]
    dtype: Any
    perm: tuple[int, ...] | None
    reshape: bool
    cast: bool
    status: str
    why: str

    def __init__(self, leaf: Leaf | None, key: str | None, status: str, why: str = "") -> None:
        self.leaf, self.key, self.status, self.why = leaf, key, status, why
        self.renamed = None
        self.shape = ()
        self.dtype = None
        self.perm = None
        self.reshape = False
        self.cast = False

    @property
    def destination(self) -> str:
        """The destination path (`tw.path_str`), or `""`."""
        return "" if self.leaf is None else self.leaf.name

    def conversion(self) -> str:
        """What is done to the source array on the way, in words."""
        if self.leaf is None or self.key is None:
            return ""
        out = []
        src_last = (self.renamed or normalise(self.key)).rsplit("/", 1)[-1]
        dst_last = self.leaf.name.rsplit("/", 1)[-1]
        if src_last != dst_last:
            out.append(f"rename {src_last}->{dst_last}")
        if self.perm is not None:
            out.append(f"transpose{self.perm}")
        if self.reshape:
            out.append(f"reshape {self.shape}->{tuple(self.leaf.node.shape)}")
        if self.cast:
            out.append(f"cast {self.dtype}->{self.leaf.node.dtype}")
        return ", ".join(out)

    def convert(self, array: np.ndarray) -> np.ndarray:
        """The source array, converted to what the destination holds (C order)."""
        assert self.leaf is not None
        out = array
        if self.perm is not None:
            out = out.transpose(self.perm)
        if self.reshape:
            out = out.reshape(self.leaf.node.shape)
        if not self.cast and out.flags.c_contiguous:
            return out
        dst = staging(out.shape, self.leaf.node.dtype if self.cast else out.dtype)
        np.copyto(dst, out, casting="unsafe")
        return dst

    def cells(self) -> list[str]:
        conversion = self.why if self.status == "tied" else self.conversion()
        return [self.destination, self.key or "", conversion, self.status]


class LoadPlan:
    """What [`tw.load_plan`][treewalk.load_plan] returns (and `tw.LoadError.plan` holds):
    `str` gives a table of destination path, source key, conversion and status; a notebook
    renders it as HTML.

    Attributes: `steps` (one `Step` per row: `.destination`, `.key`, `.conversion()`,
    `.status` — `load`, `tied` (the same array as another destination being loaded),
    `skip`, or a problem: `missing`, `unused`, `mismatch`, `twice`),
    `convention` (the source's), `framework` (the destination's convention), `source`.
    """

    steps: list[Step]
    convention: str | None
    framework: str | None
    source: Source
    #: Was `convention` passed (or told by a pytree source), not taken from the destination?
    convention_given: bool

    def __init__(
        self, steps: list[Step], convention: str | None, framework: str | None, source: Source
    ) -> None:
        self.steps, self.convention, self.framework = steps, convention, framework
        self.source = source
        self.convention_given = True

    def problems(self, strict: bool = True) -> list[Step]:
        """The rows that stop `tw.load(..., strict=strict)`."""
        bad = PROBLEMS if strict else ("mismatch", "twice")
        return [s for s in self.steps if s.status in bad]

    def summary(self) -> str:
        """The plan's last line: the conventions, and how many rows have each status."""
        kinds = ("load", "tied", "skip", *PROBLEMS)
        counts = {k: sum(s.status == k for s in self.steps) for k in kinds}
        parts = [f"{n} {k}" for k, n in counts.items() if n]
        start = f"{self.convention or 'same'} -> {self.framework or 'pytree'}: "
        return start + ", ".join(parts)

    def __str__(self) -> str:
        header = ["destination", "source key", "conversion", "status"]
        body = [s.cells() for s in self.steps]
        widths = [max([len(header[i])] + [len(c[i]) for c in body]) for i in range(4)]

        def line(cells: list[str]) -> str:
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

        return "\n".join([line(header), *map(line, body), self.summary()])

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        e = html.escape
        rows = "".join(
            "<tr>" + "".join(f"<td><code>{e(c)}</code></td>" for c in s.cells()) + "</tr>"
            for s in self.steps
        )
        head = "".join(
            f"<th>{h}</th>" for h in ("destination", "source key", "conversion", "status")
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"

    def error_message(self, strict: bool = True) -> str:
        """The `tw.LoadError` message: every problem, by kind."""
        bad = self.problems(strict)
        out = [f"tw.load: {len(bad)} problem(s), nothing was loaded ({self.summary()})."]
        for status, title in (
            ("missing", "destination arrays no source key loads into"),
            ("unused", "source keys nothing uses"),
            ("mismatch", "shape or dtype mismatches"),
            ("twice", "destination arrays two source keys load into"),
        ):
            rows = [s for s in bad if s.status == status]
            if not rows:
                continue
            out.append(f"{title}:")
            out += [f"  {_describe(s)}" for s in rows[:_LISTED]]
            if len(rows) > _LISTED:
                out.append(f"  ... and {len(rows) - _LISTED} more")
        if not self.convention_given and any(s.status == "missing" for s in bad):
            out.append(
                f"The source's convention was taken to be the destination's "
                f"({self.convention or 'none known'}); a PyTorch state_dict needs "
                f"convention='torch'."
            )
        out.append(
            "Fix: map source keys onto destination paths with rename=[(regex, replacement)] "
            "(or a callable returning None to skip a key), give the source's convention with "
            f"convention={'|'.join(map(repr, CONVENTIONS))}"
            + (
                ", or pass strict=False to load what matches"
                if strict
                else " (strict=False does not skip shape or dtype mismatches)"
            )
            + "; print(tw.load_plan(...)) shows the whole plan."
        )
        return "\n".join(out)


def _describe(s: Step) -> str:
    if s.status == "unused":
        shown = f" (renamed {s.renamed!r})" if s.renamed and s.renamed != s.key else ""
        return f"{s.key!r}{shown}"
    if s.status == "missing":
        return f"{s.destination!r} (looked for {s.why!r})"
    return f"{s.destination!r} <- {s.key!r}: {s.why}"


def renamer_of(rename: Rename) -> Callable[[str], str | None]:
    if rename is None:
        return lambda k: k
    if callable(rename):
        fn = rename

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
    rules = []
    for pair in rename:
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise ArgumentError(
                f"rename= takes (regex, replacement) pairs or a callable; got {pair!r}."
            )
        try:
            rules.append((re.compile(pair[0]), pair[1]))
        except re.error as e:
            raise PatternError(f"rename pattern {pair[0]!r} is not a valid regex: {e}.") from e

    def apply(k: str) -> str:
        for pattern, replacement in rules:
            k = pattern.sub(replacement, k)
        return k

    return apply


def plan(
    tree: Any,
    source: Any,
    *,
    convention: str | None = None,
    rename: Rename = None,
    into: str | None = None,
) -> LoadPlan:
    check_convention(convention, "convention")
    check_convention(into, "into")
    src = open_source(source, flatten_source)
    framework, leaves = model_leaves(tree, into)
    given = (convention or src.convention) is not None
    convention = convention or src.convention or framework
    aliases: dict[str, int] = {}
    for i, leaf in enumerate(leaves):
        aliases.setdefault(normalise(leaf.name), i)
    for i, leaf in enumerate(leaves):
        alias = leaf.name_in(convention)
        if alias is not None:
            aliases.setdefault(normalise(alias), i)
    renamer = renamer_of(rename)
    found: dict[int, list[tuple[str, str]]] = {}
    extra: list[Step] = []
    for key in src.keys():
        renamed = renamer(normalise(key))
        if renamed is not None:
            renamed = normalise(renamed)
        i = None if renamed is None else aliases.get(renamed)
        if i is not None:
            found.setdefault(i, []).append((key, renamed or key))
            continue
        skipped = renamed is None or source_only(convention, normalise(key).rsplit("/", 1)[-1])
        status = "skip" if skipped else "unused"
        step = Step(None, key, status)
        step.renamed = renamed
        extra.append(step)
    steps = []
    for i, leaf in enumerate(leaves):
        hits = found.get(i)
        if not hits:
            steps.append(Step(leaf, None, "missing", leaf.name_in(convention) or leaf.name))
            continue
        if len(hits) > 1:
            why = f"also from {', '.join(repr(k) for k, _ in hits[1:])}"
            steps.append(Step(leaf, hits[0][0], "twice", why))
            continue
        steps.append(_step(leaf, hits[0][0], hits[0][1], src, convention))
    _ties(steps)
    out = LoadPlan(steps + extra, convention, framework, src)
    out.convention_given = given
    return out


def _ties(steps: list[Step]) -> None:
    """A destination array that is the same object as one being loaded (a tied weight,
    which safetensors files store once) is loaded with it: `replace` keeps ties."""
    loading = {
        id(s.leaf.node): s
        for s in steps
        if s.status == "load" and s.leaf is not None and isinstance(s.leaf.node, jax.Array)
    }
    for s in steps:
        if s.status == "missing" and s.leaf is not None and id(s.leaf.node) in loading:
            s.status, s.why = "tied", f"tied to {loading[id(s.leaf.node)].destination!r}"


def _step(leaf: Leaf, key: str, renamed: str, src: Source, convention: str | None) -> Step:
    step = Step(leaf, key, "load")
    step.renamed = renamed
    shape, dtype = src.meta(key)
    step.shape, step.dtype = shape, dtype
    want, want_dtype = tuple(leaf.node.shape), jnp.dtype(leaf.node.dtype)
    got = shape
    step.perm = convert_weight(leaf, convention, leaf.framework, len(want))
    if step.perm is not None:
        if len(shape) != len(want):
            step.status = "mismatch"
            step.why = f"source shape {shape}, destination {want}"
            return step
        got = tuple(shape[p] for p in step.perm)
    if vector_reshape(leaf, got, want):
        step.reshape, got = True, want
    if got != want:
        step.status = "mismatch"
        after = f", {got} after transpose{step.perm}" if step.perm else ""
        step.why = f"source shape {shape}{after}, destination {want}"
        return step
    if dtype != want_dtype:
        inexact = jnp.issubdtype(dtype, jnp.inexact)
        if (inexact and not jnp.issubdtype(want_dtype, jnp.inexact)) or (
            jnp.issubdtype(dtype, jnp.complexfloating)
            and not jnp.issubdtype(want_dtype, jnp.complexfloating)
        ):
            step.status = "mismatch"
            step.why = f"source dtype {dtype} does not cast to {want_dtype} without loss"
            return step
        step.cast = True
    return step
