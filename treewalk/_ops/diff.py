"""`tw.diff(a, b)`: what differs between two trees, leaf by leaf, aligned by path."""

from __future__ import annotations

import html
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._core.node import Node
from .._core.types import IsLeaf, PyTree
from .._select.algebra import as_selector
from .._select.atoms import everything
from .._select.strict import Recorder, check_selects
from .query import covered


class Change:
    """One row of a `Diff`: a leaf that differs (or is in one tree only).

    Attributes: `path` (`tw.path_str`), `kind` (`"values"`, `"shape"`, `"dtype"`,
    `"only in a"`, `"only in b"`), `a`, `b` (each leaf's shape and dtype, or its `repr`
    for a leaf that is not an array; `""` where absent), `max_abs` (the largest absolute
    difference, `None` where it cannot be computed) and `fraction` (of elements that
    differ, NaN equal to NaN)."""

    __slots__ = ("path", "kind", "a", "b", "max_abs", "fraction")

    def __init__(
        self,
        path: str,
        kind: str,
        a: str,
        b: str,
        max_abs: float | None = None,
        fraction: float | None = None,
    ) -> None:
        self.path, self.kind, self.a, self.b = path, kind, a, b
        self.max_abs, self.fraction = max_abs, fraction

    def cells(self) -> list[str]:
        value = "" if self.max_abs is None else f"{self.max_abs:.3g}"
        frac = "" if self.fraction is None else f"{100 * self.fraction:.3g}%"
        same = self.kind == "values" and self.a == self.b  # an array's values
        what = self.a if same else f"{self.a or '-'} -> {self.b or '-'}"
        return [self.path, self.kind, what, value, frac]


class Diff:
    """What [`tw.diff`][treewalk.diff] returns: `bool()` is whether anything differs,
    `str()` a table that fits the terminal (`max_rows` rows, the first and the last),
    HTML in a notebook.

    Attributes: `changes` (one `Change` per differing leaf, in the first tree's order,
    then the second's), `compared` (how many leaf paths were compared), `max_abs` (the
    largest difference of all, or `None`)."""

    changes: list[Change]
    compared: int
    max_rows: int

    def __init__(self, changes: list[Change], compared: int, max_rows: int) -> None:
        self.changes, self.compared, self.max_rows = changes, compared, max_rows

    def __bool__(self) -> bool:
        return bool(self.changes)

    def __len__(self) -> int:
        return len(self.changes)

    @property
    def max_abs(self) -> float | None:
        values = [c.max_abs for c in self.changes if c.max_abs is not None]
        if not values:
            return None
        known = [v for v in values if v == v]  # NaN only where NaN met a number
        return max(known) if known else float("nan")

    def summary(self) -> str:
        """The last line: how many leaves differ, and how."""
        if not self.changes:
            return f"no differences in {self.compared} leaves"
        kinds: dict[str, int] = {}
        for c in self.changes:
            kinds[c.kind] = kinds.get(c.kind, 0) + 1
        how = ", ".join(f"{n} {k}" for k, n in kinds.items())
        top = "" if self.max_abs is None else f"; max |a - b| {self.max_abs:.3g}"
        return f"{len(self.changes)} of {self.compared} leaves differ ({how}){top}"

    def __str__(self) -> str:
        header = ["path", "change", "a -> b", "max |a-b|", "differ"]
        rows = self.changes
        hidden = 0
        if len(rows) > self.max_rows:
            head = self.max_rows - self.max_rows // 2
            hidden = len(rows) - self.max_rows
            rows = rows[:head] + rows[len(rows) - (self.max_rows - head) :]
        body = [c.cells() for c in rows]
        if not body:
            return self.summary()
        width = shutil.get_terminal_size((100, 20)).columns
        widths = [max([len(header[i])] + [len(r[i]) for r in body]) for i in range(5)]
        room = width - sum(widths[1:]) - 2 * 4
        widths[0] = max(12, min(widths[0], room))

        def line(cells: list[str]) -> str:
            cells = [_fit(cells[0], widths[0]), *cells[1:]]
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

        lines = [line(header), *map(line, body)]
        if hidden:
            head = self.max_rows - self.max_rows // 2
            lines.insert(head + 1, f"... {hidden} more (Diff.changes lists every one)")
        return "\n".join([*lines, self.summary()])

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        e = html.escape
        head = "".join(f"<th>{h}</th>" for h in ("path", "change", "a -> b", "max", "differ"))
        rows = "".join(
            "<tr>" + "".join(f"<td><code>{e(c)}</code></td>" for c in ch.cells()) + "</tr>"
            for ch in self.changes
        )
        return (
            f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
            f"<p>{e(self.summary())}</p>"
        )


def diff(
    a: PyTree,
    b: PyTree,
    selector: Any = None,
    *,
    is_leaf: IsLeaf = None,
    strict: bool = True,
    max_rows: int = 20,
) -> Diff:
    """The leaves that differ between `a` and `b`, aligned by path (as `tw.replace`
    aligns its trees): values, shapes and dtypes, and the paths in one tree only.

    `assert not tw.diff(frozen_before, frozen_after)` checks that a step left leaves
    bit-identical (NaN equal to NaN); `print(tw.diff(a, b))` shows which layers moved and
    by how much.

    **Arguments:**

    - `a`, `b`: the trees (any two: an NNX module and its `nnx.State`, an Equinox model
      and a dict of its names, ...). Boxes are opened.
    - `selector`: only the leaves it covers (in either tree), e.g. `"encoder/**"`;
      every leaf by default.
    - `strict`: every atom of `selector` must match in `a` or `b` (a typo would
      otherwise compare nothing and report no difference): `tw.NoMatchError`.
    - `max_rows`: how many rows `str()` prints.

    **Returns:**

    A `Diff`.

    !!! Example

        ```python
        import jax.numpy as jnp
        import treewalk as tw

        before = {"encoder": {"w": jnp.ones(3)}, "head": {"w": jnp.zeros(2)}}
        after = {"encoder": {"w": jnp.ones(3)}, "head": {"w": jnp.array([0.0, 0.5])}}
        assert not tw.diff(before, after, "encoder/**")
        d = tw.diff(before, after)
        assert [c.path for c in d.changes] == ["head/w"] and d.max_abs == 0.5
        ```
    """
    sel = everything if selector is None else as_selector(selector)
    rec = Recorder() if strict and selector is not None else None
    m = sel.compile(None if rec is None else rec.wrap)
    left, right = _leaves(a, m, is_leaf), _leaves(b, m, is_leaf)
    if rec is not None:  # an atom alive in either tree is alive; a dead one is looked for in a
        rec.check(a, [(None, sel)], call="tw.diff", is_leaf=is_leaf)
    changes = []
    for segs, (x, chosen) in left.items():
        other = right.get(segs)
        if other is None:
            if chosen:
                changes.append(Change(_name(segs), "only in a", _describe(x), ""))
            continue
        y, chosen_b = other
        if chosen or chosen_b:
            change = _compare(_name(segs), x, y)
            if change is not None:
                changes.append(change)
    for segs, (y, chosen) in right.items():
        if chosen and segs not in left:
            changes.append(Change(_name(segs), "only in b", "", _describe(y)))
    compared = len({s for s, (_, c) in (*left.items(), *right.items()) if c})
    if rec is not None and not compared:
        check_selects(a, sel, call="tw.diff", is_leaf=is_leaf, include_none=False)
    return Diff(changes, compared, max_rows)


def _leaves(tree: Any, m: Any, is_leaf: IsLeaf) -> dict[tuple[Any, ...], tuple[Any, bool]]:
    """`{segments: (leaf, covered)}` for every leaf of `tree` (boxes opened)."""
    out: dict[tuple[Any, ...], tuple[Any, bool]] = {}

    def at_leaf(n: Node, chosen: bool) -> None:
        out.setdefault(n.segs, (n.node, chosen))

    covered(tree, m, at_leaf, is_leaf=is_leaf, rebuild=False)
    return out


def _name(segs: tuple[Any, ...]) -> str:
    return "/".join(map(str, segs)) or "<root>"


def _describe(x: Any) -> str:
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"{x.dtype}{list(x.shape)}"
    text = repr(x)
    return text if len(text) <= 24 else text[:21] + "..."


def _compare(path: str, x: Any, y: Any) -> Change | None:
    arrays = hasattr(x, "shape") and hasattr(x, "dtype")
    if arrays != (hasattr(y, "shape") and hasattr(y, "dtype")):
        return Change(path, "type", _describe(x), _describe(y))
    if not arrays:
        try:
            same = bool(x == y) and type(x) is type(y)
        except Exception:
            same = x is y
        return None if same else Change(path, "values", _describe(x), _describe(y))
    if tuple(x.shape) != tuple(y.shape):
        return Change(path, "shape", _describe(x), _describe(y))
    if x.dtype != y.dtype:
        return Change(path, "dtype", _describe(x), _describe(y))
    if isinstance(x, jax.ShapeDtypeStruct) or isinstance(y, jax.ShapeDtypeStruct):
        return None  # abstract: only shapes and dtypes to compare
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):  # an NNX Dropout's key: its key data
        x, y = jax.random.key_data(x), jax.random.key_data(y)
    u, v = np.asarray(x), np.asarray(y)
    if u.dtype.kind not in "biufc":  # bfloat16, float8: compare as float32
        u, v = u.astype(np.float32), v.astype(np.float32)
    differ = u != v
    if u.dtype.kind in "fc":
        differ &= ~(np.isnan(u) & np.isnan(v))
    n = int(differ.sum())
    if not n:
        return None
    with np.errstate(invalid="ignore", over="ignore"):
        gap = np.abs(u.astype(np.float64) - v.astype(np.float64))[differ]
    top = float(np.nanmax(gap)) if (~np.isnan(gap)).any() else float("nan")
    return Change(path, "values", _describe(x), _describe(y), top, n / differ.size)


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[len(text) - width + 3 :]
