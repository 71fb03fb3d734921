"""Leaves compared and described, for the law checks: a tree's leaves in order (boxes and
`None` kept whole, for messages), by path (boxes opened, as selectors see them), one
leaf against another (exactly, or within a tolerance), and a falsifying tree in a few
lines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._core.matcher import Matcher
from .._core.node import Node
from .._core.paths import Path, path_str
from .._frameworks import registry, unboxed
from .._ops.query import covered
from .._select.atoms import everything

#: Array leaves: what the laws compare by value.
ARRAYS = (jax.Array, np.ndarray)


def is_array(x: Any) -> bool:
    return isinstance(x, ARRAYS)


def is_key(x: Any) -> bool:
    """A typed PRNG key array (`jax.random.key`): compared by its key data."""
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _is_none_or_box(x: Any) -> bool:
    boxes = registry.refresh().boxes
    return x is None or bool(boxes) and isinstance(x, boxes)


def leaf_list(tree: Any) -> list[tuple[Path, Any]]:
    """`(path, leaf)` in JAX's order, with `None` and boxes (an NNX `Variable`, a linen
    `Partitioned`, a penzai `Parameter`) as leaves: what a message names."""
    return jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_none_or_box)[0]


def by_path(tree: Any, m: Matcher | None = None) -> dict[tuple[Any, ...], Any]:
    """`{segments: (path, leaf, covered)}` for every leaf of `tree`, boxes opened (as
    `tw.replace`'s `fn` sees them), `covered` saying whether the compiled selector `m`
    covers it (the leaves `tw.replace(tree, selector, ...)` would change). A leaf
    reached through one shared NNX `Variable` by several paths is listed at its first."""
    out: dict[tuple[Any, ...], Any] = {}

    def at_leaf(n: Node, chosen: bool) -> None:
        out.setdefault(n.segs, (n.path, n.node, chosen))

    covered(tree, everything.compile() if m is None else m, at_leaf, rebuild=False)
    return out


def describe(x: Any) -> str:
    """`float32[2, 3]`, `numpy float32[2]`, `Param(float32[4])`, `None`, or a short repr."""
    boxes = registry.refresh().boxes
    if boxes and isinstance(x, boxes):
        return f"{type(x).__name__}({describe(unboxed(x))})"
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        kind = "numpy " if isinstance(x, np.ndarray) else ""
        return f"{kind}{x.dtype}{list(x.shape)}"
    text = repr(x)
    return text if len(text) <= 30 else text[:27] + "..."


def where(path: Path) -> str:
    """A path as messages show it: `'blocks/0/kernel'`, or `the root`."""
    return repr(path_str(path)) if path else "the root"


def summary(leaves: list[tuple[Path, Any]], limit: int = 24) -> str:
    """The leaves of a tree, one a line (`limit` at most), for a failure's message; in a
    tree of more, the `None`s (an NNX layer's empty slots, absent biases) are counted,
    not listed."""
    if not leaves:
        return "  (no leaves)"
    shown = leaves if len(leaves) <= limit else [(p, x) for p, x in leaves if x is not None]
    nones = len(leaves) - len(shown)
    rows = [(path_str(p) or "<root>", describe(x)) for p, x in shown[:limit]]
    width = max(len(p) for p, _ in rows)
    lines = [f"  {p.ljust(width)}  {d}" for p, d in rows]
    if len(shown) > limit:
        lines.append(f"  ... and {len(shown) - limit} more")
    if nones:
        lines.append(f"  ({nones} None leaves not shown)")
    return "\n".join(lines)


def _values(x: Any) -> np.ndarray:
    if is_key(x):
        x = jax.random.key_data(x)
    u = np.asarray(x)
    if u.dtype.kind not in "biufc":  # bfloat16, float8: compared as float32
        u = u.astype(np.float32)
    return u


def mismatch(x: Any, y: Any, rtol: float = 0.0, atol: float = 0.0) -> str | None:
    """Why `y` is not `x` (shape, dtype, values: the largest difference), or `None`.

    Arrays are compared by value (NaN equal to NaN; exactly unless a tolerance is given,
    and then within a few units in the last place of their dtype at least); other leaves
    by `is` or `==`."""
    if is_array(x) != is_array(y):
        return f"{describe(x)} became {describe(y)}"
    if not is_array(x):
        try:
            same = x is y or bool(x == y)
        except Exception:
            same = False
        return None if same else f"{describe(x)} became {describe(y)}"
    if tuple(x.shape) != tuple(y.shape) or x.dtype != y.dtype:
        return f"{describe(x)} became {describe(y)}"
    u, v = _values(x), _values(y)
    if u.dtype.kind in "fc" and (rtol or atol):
        eps = 4 * float(jnp.finfo(x.dtype).eps)
        ok = np.isclose(u, v, rtol=max(rtol, eps), atol=max(atol, eps), equal_nan=True)
    elif u.dtype.kind in "fc":
        ok = (u == v) | (np.isnan(u) & np.isnan(v))
    else:
        ok = u == v
    if ok.all():
        return None
    with np.errstate(invalid="ignore", over="ignore"):
        gap = np.abs(u.astype(np.float64) - v.astype(np.float64))[~ok]
    known = gap[~np.isnan(gap)]
    top = f" (by up to {known.max():.3g})" if known.size else " (NaN against a number)"
    return f"{int((~ok).sum())} of {ok.size} values differ{top}"


def _leaf_change(x: Any, y: Any) -> str | None:
    """How leaf `y` of the output differs in kind, shape or dtype from leaf `x` of the
    input (`leaf_list`'s leaves: boxes whole), as `"X became Y"`, or `None`."""
    boxes = registry.refresh().boxes
    if boxes and isinstance(x, boxes):
        if type(y) is not type(x):
            return f"a {type(x).__name__} box became a bare {describe(y)}"
        x, y = unboxed(x), unboxed(y)
    if (
        (x is None) != (y is None)
        or is_array(x)
        and (not is_array(y) or (tuple(x.shape), x.dtype) != (tuple(y.shape), y.dtype))
    ):
        return f"{describe(x)} became {describe(y)}"
    return None


def map_once(f: Callable[[Any], Any], tree: Any) -> Any:
    """`jax.tree.map(f, tree)`, `f` called once per leaf object: an array at several
    paths (a tie) gives one result at all of them, so the tie is kept."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    done: dict[int, Any] = {}
    out = []
    for x in leaves:
        if id(x) not in done:
            done[id(x)] = f(x)
        out.append(done[id(x)])
    return treedef.unflatten(out)


def structure_mismatch(tree: Any, out: Any) -> str | None:
    """Why `out` does not have `tree`'s structure (paths, boxes, array shapes and dtypes,
    node types, ties), or `None`."""
    before, after = leaf_list(tree), leaf_list(out)
    for (p, x), (q, y) in zip(before, after, strict=False):
        if p != q:
            return f"the output has a leaf at {where(q)} where the input has {where(p)}"
        change = _leaf_change(x, y)
        if change is not None:
            return f"at {where(p)}, {change}"
    if len(before) > len(after):
        p, x = before[len(after)]
        return f"the output has no leaf at {where(p)} (the input's {describe(x)})"
    if len(after) > len(before):
        q, y = after[len(before)]
        return f"the output has an extra leaf at {where(q)} ({describe(y)})"
    a, b = jax.tree.structure(tree), jax.tree.structure(out)
    if a != b:
        return f"the tree structure changed (a node's type or static data): {_short(a, b)}"
    return _broken_tie(before, after)


def _short(a: Any, b: Any, width: int = 160) -> str:
    """Two treedefs, from a little before where their texts first differ."""
    sa, sb = str(a), str(b)
    start = next((i for i, (u, v) in enumerate(zip(sa, sb, strict=False)) if u != v), 0)
    start = max(0, start - width // 4)
    dots = "..." if start else ""
    return f"{dots}{sa[start : start + width]} -> {dots}{sb[start : start + width]}"


def _broken_tie(before: list[Any], after: list[Any]) -> str | None:
    """A tie of the input (one array or box at several paths) whose paths hold different
    values in the output."""
    first: dict[int, int] = {}
    for i, (_, x) in enumerate(before):
        if not (is_array(x) or unboxed(x) is not x):
            continue
        j = first.setdefault(id(x), i)
        if j != i:
            why = mismatch(unboxed(after[j][1]), unboxed(after[i][1]))
            if why is not None:
                (p, x0), q = before[j], before[i][0]
                return (
                    f"the tie between {where(p)} and {where(q)} (one {describe(x0)} in the "
                    f"input) is broken: the output differs there ({why})"
                )
    return None


def first_difference(a: Any, b: Any, rtol: float = 0.0, atol: float = 0.0) -> str | None:
    """Where and how tree `b` differs from tree `a` (structure first, then values), or
    `None`."""
    why = structure_mismatch(a, b)
    if why is not None:
        return why
    for (p, x), (_, y) in zip(leaf_list(a), leaf_list(b), strict=True):
        diff = mismatch(unboxed(x), unboxed(y), rtol, atol)
        if diff is not None:
            return f"at {where(p)}: {diff}"
    return None
