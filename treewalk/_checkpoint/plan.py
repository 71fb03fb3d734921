"""`tw.load_plan`: which source key loads into which destination array, converted how.
`tw.load` builds this plan, checks it whole, and only then reads and places arrays."""

from __future__ import annotations

import html
from typing import Any

import jax
import numpy as np

from .._frameworks.checkpoint import CONVENTIONS, source_only
from .leaves import Leaf, check_convention, flatten_source, model_leaves
from .rules import Layouts, Rename, layouts_of, renamer_of, suggest_rename
from .sources import Source, normalise, open_source
from .step import Step, make_step

#: The statuses of a plan's rows that are problems (`load`, `tied` and `skip` are not).
PROBLEMS = ("missing", "unused", "mismatch", "undecided", "twice")
_LISTED = 10


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
        step = make_step(leaf, terms, src, convention, given, layout_of(normalise(terms[0][0])))
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
