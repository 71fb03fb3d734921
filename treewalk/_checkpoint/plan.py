"""`tw.load_plan`: which source key loads into which destination array, converted how.
`tw.load` builds this plan, checks it whole, and only then reads and places arrays."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

from .._core.errors import ArgumentError, CallbackError, PatternError
from .._frameworks.checkpoint import CONVENTIONS, LAYOUTS, Layout, conversion, source_only
from .._frameworks.composite import Rows, Term
from .leaves import Leaf, check_convention, flatten_source, model_leaves, vector_reshape
from .sources import Source, normalise, open_source, staging

#: One rule of `rename=`: a `(regex, replacement)` pair (`None` as the replacement skips a
#: key the regex finds) or a callable from key to key (or `None`, to skip it).
RenameRule: TypeAlias = tuple[str, str | None] | Callable[[str], str | None]
Rename: TypeAlias = Sequence[RenameRule] | Callable[[str], str | None] | None
#: `layouts=`: `{regex: layout}`, the axis layout of the source arrays whose keys the regex
#: finds (`"io"`, `"oik"`, ...), or `"as-is"` to load them unconverted.
Layouts: TypeAlias = Mapping[str, str] | None

#: The statuses of a plan's rows that are problems (`load`, `tied` and `skip` are not).
PROBLEMS = ("missing", "unused", "mismatch", "undecided", "twice")
_LISTED = 10


class Step:
    """One row of a `LoadPlan`: a destination array and the source key loaded into it, or
    a destination array nothing loads into (`key` is `None`), or a source key nothing
    uses (`leaf` is `None`)."""

    __slots__ = (
        "leaf",
        "key",
        "terms",
        "renamed",
        "rows0",
        "shape",
        "dtype",
        "perm",
        "flip",
        "reshape",
        "cast",
        "status",
        "why",
    )

    leaf: Leaf | None
    key: str | None
    #: The source arrays summed into the destination: `(key, Term)` (rows taken, put).
    terms: list[tuple[str, Term]]
    renamed: str | None
    #: The length of each source array's axis 0, for `sources()`.
    rows0: dict[str, int]
    shape: tuple[int, ...]
    dtype: Any
    perm: tuple[int, ...] | None
    flip: tuple[int, ...]
    reshape: bool
    cast: bool
    status: str
    why: str

    def __init__(self, leaf: Leaf | None, key: str | None, status: str, why: str = "") -> None:
        self.leaf, self.key, self.status, self.why = leaf, key, status, why
        self.terms = [] if key is None else [(key, Term(key))]
        self.renamed = None
        self.rows0 = {}
        self.shape = ()
        self.dtype = None
        self.perm = None
        self.flip = ()
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
        if len(self.terms) > 1:
            out.append("sum")
        if self.perm is not None:
            out.append(f"transpose{self.perm}")
        if self.flip:
            out.append(f"flip{self.flip}")
        if self.reshape:
            out.append(f"reshape {self.shape}->{tuple(self.leaf.node.shape)}")
        if self.cast:
            out.append(f"cast {self.dtype}->{self.leaf.node.dtype}")
        return ", ".join(out)

    @property
    def composite(self) -> bool:
        """Is the destination made of part of a source array, or of several?"""
        return len(self.terms) > 1 or any(t.take or t.put for _, t in self.terms)

    def sources(self) -> str:
        """The source keys, with the rows taken of each (`attn.in_proj_weight[16:32]`)."""
        return " + ".join(key + _rows_text(term.take, n) for (key, term), n in self.lengths())

    def lengths(self) -> list[tuple[tuple[str, Term], int]]:
        """Each term with the length of its source array's axis 0 (0: unknown)."""
        return [(kt, self.rows0.get(kt[0], 0)) for kt in self.terms]

    def build(self, read: Callable[[str], np.ndarray]) -> np.ndarray:
        """The destination array, made from the source arrays `read` gives."""
        assert self.leaf is not None
        if not self.composite:
            return self.convert(read(self.terms[0][0]))
        if len(self.terms) == 1 and self.terms[0][1].put is None:
            key, term = self.terms[0]
            return self.convert(rows(read(key), term.take))
        out = np.zeros(self.leaf.node.shape, self.leaf.node.dtype)
        for key, term in self.terms:
            region = out if term.put is None else out[_band(out.shape[0], term.put)]
            part = self._orient(rows(read(key), term.take))
            region += part.reshape(region.shape).astype(out.dtype)
        return out

    def _orient(self, array: np.ndarray) -> np.ndarray:
        out = array if self.perm is None else array.transpose(self.perm)
        return np.flip(out, self.flip) if self.flip else out

    def convert(self, array: np.ndarray) -> np.ndarray:
        """The source array, converted to what the destination holds (C order)."""
        assert self.leaf is not None
        out = array
        if self.perm is not None:
            out = out.transpose(self.perm)
        if self.flip:
            out = np.flip(out, self.flip)
        if self.reshape:
            out = out.reshape(self.leaf.node.shape)
        if not self.cast and out.flags.c_contiguous:
            return out
        dst = staging(out.shape, self.leaf.node.dtype if self.cast else out.dtype)
        np.copyto(dst, out, casting="unsafe")
        return dst

    def cells(self) -> list[str]:
        conversion = self.why if self.status == "tied" else self.conversion()
        return [self.destination, self.sources() if self.key else "", conversion, self.status]


def _band(length: int, band: Rows) -> slice:
    """The rows `band` `(a, b, n)` of an axis of `length`."""
    a, b, n = band
    return slice(length * a // n, length * b // n)


def rows(array: np.ndarray, band: Rows | None) -> np.ndarray:
    """The rows `band` of `array`'s axis 0 (all when `None`)."""
    return array if band is None else array[_band(array.shape[0], band)]


def _rows_text(band: Rows | None, length: int) -> str:
    if band is None:
        return ""
    if not length:
        return f"[{band[0]}/{band[2]}:{band[1]}/{band[2]}]"
    part = _band(length, band)
    return f"[{part.start}:{part.stop}]"


class LoadPlan:
    """What [`tw.load_plan`][treewalk.load_plan] returns (and `tw.LoadError.plan` holds):
    `str` gives a table of destination path, source key, conversion and status; a notebook
    renders it as HTML.

    Attributes: `steps` (one `Step` per row: `.destination`, `.key`, `.conversion()`,
    `.status` — `load`, `tied` (the same array as another destination being loaded),
    `skip`, or a problem: `missing`, `unused`, `mismatch`, `undecided` (the layout of a
    weight that neither the destination's layer type nor the source decides), `twice`),
    `convention` (the source's), `framework` (the destination's convention), `source`.
    """

    steps: list[Step]
    convention: str | None
    framework: str | None
    source: Source
    #: Was `convention` passed (or told by a pytree source), not taken from the destination?
    convention_given: bool
    #: Arrays no source holds that loading sets (an `eqx.nn.State`'s BatchNorm flags).
    after_load: list[Leaf]

    def __init__(
        self, steps: list[Step], convention: str | None, framework: str | None, source: Source
    ) -> None:
        self.steps, self.convention, self.framework = steps, convention, framework
        self.source = source
        self.convention_given = True
        self.after_load = []

    def problems(self, strict: bool = True) -> list[Step]:
        """The rows that stop `tw.load(..., strict=strict)`."""
        bad = PROBLEMS if strict else ("mismatch", "undecided", "twice")
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
        """The `tw.LoadError` message: every problem, by kind, and the fix for this case."""
        bad = self.problems(strict)
        out = [f"tw.load: {len(bad)} problem(s), nothing was loaded ({self.summary()})."]
        for status, title in (
            ("missing", "destination arrays no source key loads into"),
            ("unused", "source keys nothing uses"),
            ("mismatch", "shape or dtype mismatches"),
            ("undecided", "weights whose layout nothing decides"),
            ("twice", "destination arrays two source keys load into"),
        ):
            rows = [s for s in bad if s.status == status]
            if not rows:
                continue
            out.append(f"{title}:")
            out += [f"  {_describe(s)}" for s in rows[:_LISTED]]
            if len(rows) > _LISTED:
                out.append(
                    f"  ... and {len(rows) - _LISTED} more (the error's .plan, or "
                    "print(tw.load_plan(...)), lists every row)"
                )
        out += self._fixes(bad, strict)
        return "\n".join(out)

    def _fixes(self, bad: list[Step], strict: bool) -> list[str]:
        """The lines that say how to fix these problems."""
        out = []
        statuses = {s.status for s in bad}
        if not self.convention_given and "missing" in statuses:
            out.append(
                f"The source's convention was taken to be the destination's "
                f"({self.convention or 'none known'}); a PyTorch state_dict needs "
                f"convention='torch'."
            )
        stats = [
            s.key
            for s in bad
            if s.status == "unused"
            and normalise(s.key or "").endswith(("running_mean", "running_var"))
        ]
        if stats and self.framework == "equinox" and not self.after_load:
            out.append(
                f"Fix: {stats[0]!r} is a BatchNorm statistic, which Equinox keeps in "
                "eqx.nn.State: load the model with its state, model, state = "
                "tw.load((model, state), source)."
            )
        rule = suggest_rename(
            [s.why for s in bad if s.status == "missing"],
            [s.renamed or normalise(s.key) for s in bad if s.status == "unused" and s.key],
        )
        if rule is not None:
            out.append(f"Fix: the keys differ by a prefix or a module name: rename=[{rule}].")
        elif statuses & {"missing", "unused"}:
            out.append(
                "Fix: map source keys onto destination paths with rename=[(regex, "
                "replacement)] (a replacement of None, or a callable returning None, skips a "
                f"key), or give the source's convention with convention="
                f"{'|'.join(map(repr, CONVENTIONS))}"
                + (", or pass strict=False to load what matches." if strict else ".")
            )
        if statuses & {"mismatch", "undecided"} and not strict:
            out.append(
                "strict=False does not skip shape, dtype or layout problems: skip such keys "
                "with rename=[(regex, None)]."
            )
        return out


def _describe(s: Step) -> str:
    if s.status == "unused":
        shown = (
            f" (renamed {s.renamed!r})"
            if s.renamed and s.renamed != normalise(s.key or "")
            else ""
        )
        return f"{s.key!r}{shown}"
    if s.status == "missing":
        layer = ""
        if s.leaf is not None and s.leaf.layer_type and not s.leaf.kind:
            layer = f"; its layer {s.leaf.layer_type} is not one whose convention is known"
        return f"{s.destination!r} (looked for {s.why!r}{layer})"
    return f"{s.destination!r} <- {s.key!r}: {s.why}"


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


def plan(
    tree: Any,
    source: Any,
    *,
    convention: str | None = None,
    rename: Rename = None,
    layouts: Layouts = None,
    into: str | None = None,
) -> LoadPlan:
    check_convention(convention, "convention")
    check_convention(into, "into")
    src = open_source(source, flatten_source)
    framework, leaves = model_leaves(tree, into)
    given = (convention or src.convention) is not None
    convention = convention or src.convention or framework
    renamer, layout_of = renamer_of(rename), layouts_of(layouts)
    by_name: dict[str, list[str]] = {}  # a source key, renamed and written with "/": keys
    extra: list[Step] = []
    for key in src.keys():
        renamed = renamer(normalise(key))
        if renamed is None or source_only(convention, normalise(key).rsplit("/", 1)[-1]):
            extra.append(Step(None, key, "skip"))
            continue
        by_name.setdefault(normalise(renamed), []).append(key)
    loadable = [leaf for leaf in leaves if leaf.after_load is None]
    own = {leaf.name for leaf in loadable}
    used: set[str] = set()
    steps = []
    for leaf in loadable:
        # The leaf's own name, then its convention's names: those that are another
        # destination's own name are that one's.
        options = [
            r
            for j, r in enumerate(leaf.recipes(convention))
            if j == 0 or not any(t.name in own for t in r)
        ]
        found = [r for r in options if all(t.name in by_name for t in r)]
        if not found:
            looked = options[1] if len(options) > 1 else options[0]
            steps.append(Step(leaf, None, "missing", " + ".join(t.name for t in looked)))
            continue
        keys = [[k for t in r for k in by_name[t.name]] for r in found]
        used.update(k for ks in keys for k in ks)
        if len(found) > 1 or len(keys[0]) > len(found[0]):
            others = [k for ks in keys for k in ks][1:]
            steps.append(
                Step(leaf, keys[0][0], "twice", f"also from {', '.join(map(repr, others))}")
            )
            continue
        terms = [(by_name[t.name][0], t) for t in found[0]]
        step = _step(leaf, terms, src, convention, given, layout_of(normalise(terms[0][0])))
        step.renamed = found[0][0].name if rename is not None else None
        steps.append(step)
    for name, keys in by_name.items():
        for key in keys:
            if key not in used:
                step = Step(None, key, "unused")
                step.renamed = name if rename is not None else None
                extra.append(step)
    order = {k: j for j, k in enumerate(src.keys())}
    extra.sort(key=lambda s: order.get(s.key or "", -1))
    _ties(steps)
    out = LoadPlan(steps + extra, convention, framework, src)
    out.convention_given = given
    out.after_load = [leaf for leaf in leaves if leaf.after_load is not None]
    return out


def _ties(steps: list[Step]) -> None:
    """A destination array that is the same object as one being loaded (a tied weight) is
    loaded with it: `replace` keeps ties. One with no source key of its own (safetensors
    files store a tie once) is `tied`; one with its own key too is `tied` with that key,
    and `tw.load` checks that both keys hold the same values."""
    loading: dict[int, Step] = {}
    for s in steps:
        if s.leaf is None or not (
            s.leaf.shared or isinstance(s.leaf.node, jax.Array | np.ndarray)
        ):
            continue
        first = loading.get(id(s.leaf.node))
        if first is None:
            if s.status == "load":
                loading[id(s.leaf.node)] = s
            continue
        if s.status in ("missing", "load"):
            s.status, s.why = "tied", f"tied to {first.destination!r}"
    for s in steps:  # a tie whose first destination has no key, but a later one has
        if s.status == "missing" and s.leaf is not None and id(s.leaf.node) in loading:
            s.status, s.why = "tied", f"tied to {loading[id(s.leaf.node)].destination!r}"


def tied_to(p: LoadPlan) -> list[tuple[Step, Step]]:
    """`(tied, loaded)` for each tied row with a source key of its own: the row loaded
    into the same array, whose values `tw.load` checks it holds too."""
    loading = {id(s.leaf.node): s for s in p.steps if s.status == "load" and s.leaf is not None}
    return [
        (s, loading[id(s.leaf.node)])
        for s in p.steps
        if s.status == "tied" and s.key is not None and s.leaf is not None
    ]


def _step(
    leaf: Leaf,
    terms: list[tuple[str, Term]],
    src: Source,
    convention: str | None,
    given: bool,
    override: str | None,
) -> Step:
    key = terms[0][0]
    step = Step(leaf, key, "load")
    step.terms = terms
    metas = [src.meta(k) for k, _ in terms]
    step.rows0 = {k: shape[0] for (k, _), (shape, _) in zip(terms, metas, strict=True) if shape}
    want, want_dtype = tuple(leaf.node.shape), jnp.dtype(leaf.node.dtype)
    matrix = leaf.matrix or want
    decided = _weight_conversion(leaf, src.layouts.get(key), override, convention, given, matrix)
    if isinstance(decided, str):
        step.status, step.why = "undecided", decided
        return step
    step.perm, step.flip = decided
    for j, ((k, term), (shape, dtype)) in enumerate(zip(terms, metas, strict=True)):
        taken, region = _taken(shape, term.take), _taken(want, term.put)
        if taken is None or region is None:
            step.status = "mismatch"
            step.why = f"the rows of {k!r} taken do not divide its shape {shape}"
            return step
        if j == 0:
            step.shape, step.dtype = taken, dtype
        why = _shape_problem(step, leaf, taken, region if term.put else matrix, want)
        if why:
            step.status, step.why = "mismatch", why
            return step
        why = _dtype_problem(dtype, want_dtype)
        if why:
            step.status, step.why = "mismatch", why
            return step
        step.cast = step.cast or dtype != want_dtype
    return step


def _taken(shape: tuple[int, ...], band: Rows | None) -> tuple[int, ...] | None:
    """`shape` after taking the rows `band` of axis 0; `None` when they do not divide it."""
    if band is None:
        return shape
    if not shape or shape[0] * (band[1] - band[0]) % band[2]:
        return None
    return (shape[0] * (band[1] - band[0]) // band[2], *shape[1:])


def _shape_problem(
    step: Step, leaf: Leaf, shape: tuple[int, ...], target: tuple[int, ...], want: tuple[int, ...]
) -> str:
    """Why a source array of `shape`, converted as `step` says, does not fill `target` (the
    destination, its rows put, or the matrix it is); `""` when it does (and `step.reshape`
    says whether a reshape to `want` follows)."""
    got = shape
    if step.perm is not None:
        if len(shape) != len(step.perm):
            return f"source shape {shape}, destination {want}"
        got = tuple(shape[p] for p in step.perm)
    if got == target and target != want and leaf.matrix is not None:
        step.reshape = True
        return ""
    if vector_reshape(leaf, got, target):
        step.reshape, got = True, target
    if got == target:
        return ""
    after = f", {got} after transpose{step.perm}" if step.perm else ""
    hint = _layout_hint(leaf, shape, target, step.perm)
    return f"source shape {shape}{after}, destination {target}{hint}"


def _dtype_problem(dtype: Any, want: Any) -> str:
    inexact = jnp.issubdtype(dtype, jnp.inexact)
    if (inexact and not jnp.issubdtype(want, jnp.inexact)) or (
        jnp.issubdtype(dtype, jnp.complexfloating)
        and not jnp.issubdtype(want, jnp.complexfloating)
    ):
        return f"source dtype {dtype} does not cast to {want} without loss"
    return ""


Conversion: TypeAlias = tuple[tuple[int, ...] | None, tuple[int, ...]]


def _weight_conversion(
    leaf: Leaf,
    declared: tuple[str, Layout] | None,
    override: str | None,
    convention: str | None,
    given: bool,
    want: tuple[int, ...],
) -> Conversion | str:
    """`(perm, flip)` for the array of `leaf`, or why its layout is undecided.

    The destination's layout is its layer's type (`leaf.layout`); the source's is, first
    to last: `override` (`layouts=`), `declared` (the source's own layer types: a pytree's
    or a PyTorch module's), the source convention's layout for the destination's family.
    """
    as_is: Conversion = (None, ())
    if len(want) < 2 or override == "as-is":
        return as_is
    if override is not None:
        declared = leaf.family or "dense", Layout(override)
    dst = leaf.layout
    if dst is None:
        unknown = not leaf.kind and leaf.framework not in (None, "penzai")
        differ = declared is not None or _layouts_differ(convention, leaf.framework)
        if not (unknown and differ):
            return as_is
        what = f"{leaf.layer_type} layers" if leaf.layer_type else "this array"
        return (
            f"the layout of {what} is not one treewalk knows, and the source's is "
            f"{'declared' if declared else f'{convention!r}'} ({leaf.framework!r} differs): "
            f"pass layouts={{{_key_regex(leaf)!r}: 'as-is'}} if the source already has the "
            "destination's layout, or skip it with rename=[(regex, None)] and set it yourself"
        )
    if declared is None:
        if not given:
            return _square_check(leaf, want)
        if convention not in LAYOUTS:
            return as_is
        # A convention's layout: a "flax" file holds a ConvTranspose as NNX's default.
        declared = leaf.family, LAYOUTS[convention][leaf.family]
    family, src_layout = declared
    if family != leaf.family:
        return (
            f"the source is a {_FAMILY[family]}'s weight and the destination a "
            f"{_FAMILY[leaf.family]}'s ({leaf.layer_type or 'by its names'})"
        )
    decided = conversion(src_layout, dst, len(want))
    if decided is None:
        return (
            f"the source layout {src_layout.axes!r} does not fit a weight of {len(want)} axes; "
            "give it with layouts={regex: 'oik' | 'kio' | ...}"
        )
    return decided


_FAMILY = {"dense": "Linear or Conv", "transposed": "ConvTranspose"}


def _layouts_differ(convention: str | None, framework: str | None) -> bool:
    if convention not in LAYOUTS or framework not in LAYOUTS or convention == framework:
        return False
    return LAYOUTS[convention]["dense"] != LAYOUTS[framework]["dense"]


def _square_check(leaf: Leaf, want: tuple[int, ...]) -> Conversion | str:
    """Unconverted, unless another convention's layout would fit the same shape (a square
    weight): then which one the source has is undecided."""
    assert leaf.layout is not None
    for convention, layouts in LAYOUTS.items():
        decided = conversion(layouts[leaf.family], leaf.layout, len(want))
        if decided is None or decided == (None, ()):
            continue
        perm, _ = decided
        if perm is None or tuple(want[p] for p in perm) == want:
            return (
                f"the source's convention was not given and this weight's shape {want} "
                f"fits {convention!r}'s layout too: pass convention="
                f"{'|'.join(map(repr, CONVENTIONS))}"
            )
    return None, ()


def _layout_hint(
    leaf: Leaf, shape: tuple[int, ...], want: tuple[int, ...], perm: tuple[int, ...] | None
) -> str:
    """A hint when the source fits the destination the other way round."""
    if len(shape) != 2 or leaf.layout is None or shape == shape[::-1]:
        return ""
    if (shape == want) if perm is not None else (shape[::-1] == want):
        return (
            "; the source looks laid out the other way round already (a transformers "
            "Conv1D stores (in, out)): pass the nn.Module itself, or layouts={regex: 'io'}"
        )
    return ""


def _key_regex(leaf: Leaf) -> str:
    return "^" + re.escape(leaf.name) + "$"
