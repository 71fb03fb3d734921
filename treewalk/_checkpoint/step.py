"""One row of a `tw.LoadPlan`: a destination array, the source arrays it is made of, and
how they are converted (transpose, flip, reshape, cast) or why that is undecided; and
the building of the array from them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeAlias

import jax.numpy as jnp
import numpy as np

from .._frameworks.checkpoint import CONVENTIONS, LAYOUTS, Layout, conversion
from .._frameworks.composite import Rows, Term
from .leaves import Index, Leaf, vector_reshape
from .sources import Source, normalise, staging


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
        return " + ".join(
            key + _rows_text(term.take, self.rows0.get(key, 0)) for key, term in self.terms
        )

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
            part = orient(rows(read(key), term.take), self.perm, self.flip)
            region += part.reshape(region.shape).astype(out.dtype)
        return out

    def part(
        self, read_index: Callable[[str, Index], np.ndarray], index: Index
    ) -> np.ndarray | None:
        """The part `index` of the destination array (a shard), made from only the part of
        the source that it comes from (`read_index(key, source_index)`); `None` when the
        conversion does not map a part to a part (a sum of source arrays, rows put in
        place, a matrix reshaped to more axes: `build` the whole then)."""
        assert self.leaf is not None
        key, term = self.terms[0]
        dst = tuple(self.leaf.node.shape)
        if len(self.terms) > 1 or term.put is not None or (self.reshape and self.leaf.matrix):
            return None
        shape = tuple(len(range(*s.indices(n))) for s, n in zip(index, dst, strict=True))
        # Back from the destination to the source: the reshape, the flip, the transpose,
        # then the rows taken.
        got = self.shape if self.perm is None else tuple(self.shape[p] for p in self.perm)
        at = _unsqueezed(index, dst, got) if self.reshape else index
        if at is None:
            return None
        at = tuple(_reversed(s, got[a]) if a in self.flip else s for a, s in enumerate(at))
        if self.perm is not None:
            src: list[slice] = [slice(None)] * len(self.perm)
            for j, axis in enumerate(self.perm):
                src[axis] = at[j]
            at = tuple(src)
        if term.take is not None:
            first = _band(self.rows0[key], term.take)
            a, b, _ = at[0].indices(self.shape[0])
            at = (slice(first.start + a, first.start + b), *at[1:])
        return self.convert(read_index(key, at), shape)

    def convert(self, array: np.ndarray, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """The source array, converted to what the destination (or its part of `shape`)
        holds, in C order."""
        assert self.leaf is not None
        out = orient(array, self.perm, self.flip)
        if self.reshape:
            out = out.reshape(self.leaf.node.shape if shape is None else shape)
        if not self.cast and out.flags.c_contiguous:
            return out
        dst = staging(out.shape, self.leaf.node.dtype if self.cast else out.dtype)
        np.copyto(dst, out, casting="unsafe")
        return dst

    def cells(self) -> list[str]:
        conversion = self.why if self.status == "tied" else self.conversion()
        return [self.destination, self.sources() if self.key else "", conversion, self.status]


def orient(array: np.ndarray, perm: tuple[int, ...] | None, flip: tuple[int, ...]) -> np.ndarray:
    """`array` with its axes permuted (`perm`, `None`: as they are), then reversed along
    the axes `flip`: a weight from one layout to another (`conversion`)."""
    out = array if perm is None else array.transpose(perm)
    return np.flip(out, flip) if flip else out


def _unsqueezed(index: Index, dst: tuple[int, ...], src: tuple[int, ...]) -> Index | None:
    """`index` into an array of shape `dst` as an index into the same values of shape
    `src`, when the two differ only by singleton axes (an Equinox conv bias `(out, 1, 1)`
    from a vector); else `None`."""
    dst_axes = [a for a, n in enumerate(dst) if n != 1]
    src_axes = [a for a, n in enumerate(src) if n != 1]
    if [dst[a] for a in dst_axes] != [src[a] for a in src_axes]:
        return None
    out = [slice(None)] * len(src)
    for a, b in zip(dst_axes, src_axes, strict=True):
        out[b] = index[a]
    return tuple(out)


def _reversed(s: slice, length: int) -> slice:
    """The slice of an axis of `length` that `s` of the axis reversed is."""
    a, b, _ = s.indices(length)
    return slice(length - b, length - a)


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


def make_step(
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
