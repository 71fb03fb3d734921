"""`tw.show`: a table of a tree's leaves, and of what a selector would act on."""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from .._core.matcher import Matcher
from .._core.node import Node
from .._core.paths import Path, path_str
from .._core.types import PyTree
from .._frameworks import is_optimizer_state
from .._select.algebra import above, as_selector
from .._select.atoms import params
from .query import covered


class Row:
    """One leaf of the tree, as `tw.show` lists it."""

    __slots__ = ("path", "type", "shape", "dtype", "size", "selected")
    path: Path
    type: str
    shape: tuple[int, ...] | None
    dtype: str
    size: int
    selected: bool

    def __init__(
        self,
        path: Path,
        type: str,
        shape: tuple[int, ...] | None,
        dtype: str,
        size: int,
        selected: bool,
    ) -> None:
        self.path, self.type, self.shape, self.dtype = path, type, shape, dtype
        self.size, self.selected = size, selected

    def cells(self) -> list[str]:
        shape = "" if self.shape is None else str(self.shape)
        size = "" if self.shape is None else f"{self.size:,}"
        return [path_str(self.path) or "<root>", self.type, shape, self.dtype, size]


class Table:
    """What [`tw.show`][treewalk.show] returns: its `str` is a plain-text table, and in a
    notebook it renders as HTML.

    Attributes: `rows` (one `Row` per leaf: `.path`, `.type`, `.shape`, `.dtype`,
    `.size`, `.selected`), `selector` (or `None`), `total` and `selected` (parameter
    counts: elements of array leaves), `notes` (warnings about the selection, printed
    under the table).
    """

    rows: list[Row]
    selector: Any
    max_rows: int | None
    total: int
    selected: int
    notes: list[str]

    def __init__(
        self,
        rows: list[Row],
        selector: Any,
        max_rows: int | None,
        notes: list[str] | None = None,
    ) -> None:
        self.rows = rows
        self.selector = selector
        self.max_rows = max_rows
        self.notes = notes or []
        self.total = sum(r.size for r in rows)
        self.selected = sum(r.size for r in rows if r.selected)

    def _shown(self) -> tuple[list[Row], list[Row], int]:
        rows, m = self.rows, self.max_rows
        if m is None or len(rows) <= m:
            return rows, [], 0
        head = max(1, m - m // 2)
        tail = m - head
        return rows[:head], rows[len(rows) - tail :] if tail else [], len(rows) - m

    def summary(self) -> str:
        """The totals line."""
        n = len(self.rows)
        leaves = f"{n} leaf" if n == 1 else f"{n} leaves"
        if self.selector is None:
            return f"{leaves}, {self.total:,} parameters"
        k = sum(r.selected for r in self.rows)
        pct = f" ({100 * self.selected / self.total:.1f}%)" if self.total else ""
        return (
            f"selector {self.selector!r}: {k} of {leaves}, "
            f"{self.selected:,} of {self.total:,} parameters{pct}"
        )

    def __str__(self) -> str:
        header = ["path", "type", "shape", "dtype", "params"]
        mark = self.selector is not None
        if mark:
            header.append("sel")
        head, tail, hidden = self._shown()
        body = [r.cells() + (["*" if r.selected else ""] if mark else []) for r in head + tail]
        widths = [max([len(header[i])] + [len(c[i]) for c in body]) for i in range(len(header))]
        right = {4}

        def line(cells: list[str]) -> str:
            out = [
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ]
            return "  ".join(out).rstrip()

        lines = [line(header)]
        lines += [line(c) for c in body[: len(head)]]
        if hidden:
            lines.append(f"... {hidden} more rows ...")
        lines += [line(c) for c in body[len(head) :]]
        lines.append(self.summary())
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        mark = self.selector is not None
        header = ["path", "type", "shape", "dtype", "params"] + (["sel"] if mark else [])
        head, tail, hidden = self._shown()
        e = html.escape
        out = ['<table class="treewalk-show">', "<thead><tr>"]
        out += [f"<th>{e(h)}</th>" for h in header]
        out.append("</tr></thead><tbody>")

        def row(r: Row) -> str:
            style = ' style="font-weight:bold"' if mark and r.selected else ""
            cells = r.cells() + (["&#10003;" if r.selected else ""] if mark else [])
            tds = "".join(
                f"<td><code>{e(c)}</code></td>" if i == 0 else f"<td>{c if i == 5 else e(c)}</td>"
                for i, c in enumerate(cells)
            )
            return f"<tr{style}>{tds}</tr>"

        out += [row(r) for r in head]
        if hidden:
            out.append(f'<tr><td colspan="{len(header)}">... {hidden} more rows ...</td></tr>')
        out += [row(r) for r in tail]
        out.append(f"</tbody></table><p>{e(self.summary())}</p>")
        out += [f"<p><strong>note:</strong> {e(note)}</p>" for note in self.notes]
        return "".join(out)


def _type_name(n: Node) -> str:
    if n.outer is not None:
        return type(n.outer).__name__
    x = n.node
    if isinstance(x, jax.Array):
        return "Array"
    if isinstance(x, jax.ShapeDtypeStruct):
        return "ShapeDtypeStruct"
    if isinstance(x, np.ndarray):
        return "ndarray"
    if callable(x) and not isinstance(x, type):
        return "function"
    return type(x).__name__


def _row(n: Node, selected: bool) -> Row:
    x = n.node
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None or dtype is None or isinstance(x, int | float | complex | bool):
        return Row(n.path, _type_name(n), None, "", 0, selected)
    shape = tuple(shape)
    return Row(
        n.path,
        _type_name(n),
        shape,
        str(np.dtype(dtype)) if _np_dtype(dtype) else str(dtype),
        math.prod(shape) if params.match(n) else 0,
        selected,
    )


def _np_dtype(dtype: Any) -> bool:
    try:
        np.dtype(dtype)
    except TypeError:
        return False
    return True


def show(
    tree: PyTree,
    selector: Any = None,
    *,
    is_leaf: Callable[[Any], bool] | None = None,
    max_rows: int | None = 60,
) -> Table:
    """A table of the tree's leaves, and of what `selector` would act on.

    Look before you change: one row per leaf (boxes looked through, so an NNX `Param`
    is one row, typed `Param`), with its path, type, shape, dtype and parameter count
    (elements of an array that [`tw.params`][treewalk.params] selects: float arrays,
    NNX `Param`s; PRNG keys, RNG counters, `BatchStat`s, integer arrays and non-array
    leaves such as activation functions count 0), and,
    given a `selector`, a `*` on the rows that [`tw.replace`][treewalk.replace] would
    change: leaves the selector matches and leaves inside a node it matches (a whole
    layer). The last line gives the totals: selected of all leaves and parameters.

    `None` children (absent optional arrays) are not leaves and are not listed.

    **Arguments:**

    - `tree`: any pytree; abstract trees (`jax.ShapeDtypeStruct` leaves) too.
    - `selector`: optional; anything `tw.replace` takes.
    - `is_leaf`: as in JAX.
    - `max_rows`: show at most this many rows (the first and last ones); the totals
      always count every leaf. `None` shows all.

    **Returns:**

    A `Table`: `print` it for plain text; a notebook renders it as HTML. Its `.rows`,
    `.total`, `.selected` and `.notes` are there for code.

    !!! Example

        ```python
        import jax.numpy as jnp
        import treewalk as tw

        params = {"dense": {"kernel": jnp.ones((4, 8)), "bias": jnp.zeros(8)}}
        table = tw.show(params, "**/bias")
        print(table)
        assert (table.selected, table.total) == (8, 40)
        ```
    """
    sel = None if selector is None else as_selector(selector)
    m = Matcher(_nothing) if sel is None else sel.compile()
    rows: list[Row] = []
    in_optimizer = above(Matcher(lambda n: is_optimizer_state(n.node)))
    optimizer: list[str] = []  # the selected leaves inside an optimiser's state

    def at_leaf(n: Node, selected: bool) -> None:
        rows.append(_row(n, selected))
        if selected and in_optimizer(n.parent):
            optimizer.append(path_str(n.path))

    covered(tree, m, at_leaf, is_leaf=is_leaf, rebuild=False)
    notes = []
    if optimizer:
        notes.append(
            f"{len(optimizer)} selected leaves are inside an optimiser's state (e.g. "
            f"{optimizer[0]!r}: optax's moments mirror the parameters' paths), so "
            f"tw.replace would change them too. Select within the parameters, e.g. "
            f"'params/**/kernel' on a TrainState, or pass the params alone."
        )
    return Table(rows, sel, max_rows, notes)


def _nothing(n: Node) -> bool:
    return False
