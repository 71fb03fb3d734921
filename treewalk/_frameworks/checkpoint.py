"""Checkpoint conventions of PyTorch, Equinox, Flax (linen and NNX), Haiku and the
transformers library's `Conv1D`.

`tw.load` and `tw.export` convert names and axis layouts of the layers whose convention
is known. This module is the only place that knows them. Like the rest of
`treewalk._frameworks` it never imports a framework: layer types are looked up in
`sys.modules`.

A layer has a **kind** and each of its arrays a **role**:

| kind    | roles                              | layers                                        |
|---------|------------------------------------|-----------------------------------------------|
| `dense` | `weight`, `bias`                   | Linear / Dense, Conv 1-3D, ConvTranspose 1-3D |
| `norm`  | `scale`, `offset`, `mean`, `var`   | LayerNorm, GroupNorm, BatchNorm, RMSNorm      |
| `embed` | `table`                            | Embedding / Embed                             |

Each framework names a role (`NAMES`). A dense weight has a **family** (`"dense"` for
Linear and Conv, `"transposed"` for ConvTranspose) and a `Layout`: the role of each axis
and whether the kernel is flipped against PyTorch's. The layout is read from the layer's
type (and, for NNX `ConvTranspose`, its `transpose_kernel`), or for a linen or Haiku
params dict from the framework's names (a dict holds no types: its kernels are read as a
Dense or Conv kernel). The other roles are vectors (an Equinox conv bias is
`(out, 1, 1)`, a Haiku BatchNorm scale `(1, 1, 1, C)`): they are reshaped when only
singleton axes differ.
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _attr

#: The conventions `tw.load(convention=...)` and `tw.export(convention=...)` accept.
CONVENTIONS = ("torch", "equinox", "flax", "haiku")

#: What joins the segments of a key in each convention's checkpoints (`tw.export`):
#: `encoder.layers.0.weight` for PyTorch and Equinox, `encoder/layers/0/kernel` for Flax
#: and Haiku.
KEY_SEPARATOR = {"torch": ".", "equinox": ".", "flax": "/", "haiku": "/"}

_DENSE_OIK = {"weight": "weight", "bias": "bias"}
#: `NAMES[framework][kind][role]`: the attribute / key a role goes by.
NAMES: dict[str, dict[str, dict[str, str]]] = {
    "torch": {
        "dense": _DENSE_OIK,
        "norm": {
            "scale": "weight",
            "offset": "bias",
            "mean": "running_mean",
            "var": "running_var",
        },
        "embed": {"table": "weight"},
    },
    "equinox": {
        "dense": _DENSE_OIK,
        # The statistics of a BatchNorm live in `eqx.nn.State`; they go by PyTorch's names.
        "norm": {
            "scale": "weight",
            "offset": "bias",
            "mean": "running_mean",
            "var": "running_var",
        },
        "embed": {"table": "weight"},
        "rnn": {r: r for r in ("weight_ih", "weight_hh", "bias", "bias_n")},
        "weightnorm": {"g": "g"},
    },
    "flax": {
        "dense": {"weight": "kernel", "bias": "bias"},
        "norm": {"scale": "scale", "offset": "bias", "mean": "mean", "var": "var"},
        "embed": {"table": "embedding"},
    },
    "haiku": {
        "dense": {"weight": "w", "bias": "b"},
        # A BatchNorm's averages are state (`X/~/mean_ema/average`); as keys, `X/mean`.
        "norm": {"scale": "scale", "offset": "offset", "mean": "mean", "var": "var"},
        "embed": {"table": "embeddings"},
    },
}


class Layout(NamedTuple):
    """How a weight's axes are laid out: `axes` names each axis, `o` out, `i` in, `k` the
    kernel axes (`"oik"` is `(out, in, *kernel)`, `"kio"` `(*kernel, in, out)`);
    `flipped`: the kernel is spatially flipped against PyTorch's."""

    axes: str
    flipped: bool = False


#: `LAYOUTS[convention][family]`: how a checkpoint in `convention` lays out the weight of
#: a layer of `family`, when the convention says it alone (a file holds no layer types).
#: PyTorch's `ConvTranspose` weight is `(in, out, *kernel)`; Equinox's is
#: `(out, in, *kernel)`, flipped; Flax's is NNX's default (`transpose_kernel=False`),
#: `(*kernel, in, out)` flipped; Haiku's `(*kernel, out, in)`.
LAYOUTS: dict[str, dict[str, Layout]] = {
    "torch": {"dense": Layout("oik"), "transposed": Layout("iok")},
    "equinox": {"dense": Layout("oik"), "transposed": Layout("oik", True)},
    "flax": {"dense": Layout("kio"), "transposed": Layout("kio", True)},
    "haiku": {"dense": Layout("kio"), "transposed": Layout("koi")},
}

#: Roles whose arrays are vectors (reshaped when only singleton axes differ).
VECTOR_ROLES = frozenset({"bias", "scale", "offset", "mean", "var"})

#: The last names of keys a convention's checkpoints hold that no JAX framework has
#: (PyTorch BatchNorm's counter): `tw.load` skips them.
_SOURCE_ONLY = {"torch": frozenset({"num_batches_tracked"})}


def source_only(convention: str | None, name: str) -> bool:
    """Is `name` (the last segment of a source key) an array only checkpoints in
    `convention` hold (`num_batches_tracked` in a PyTorch state_dict), skipped by `tw.load`?"""
    return convention is not None and name in _SOURCE_ONLY.get(convention, ())


class Typed(NamedTuple):
    """What a layer's type says: its framework, its kind, and for a `dense` layer its
    weight's family (`"dense"` or `"transposed"`)."""

    framework: str
    kind: str
    family: str = ""


#: The layers whose convention is known, most specific first.
_TYPED = (
    ("equinox.nn", ("ConvTranspose",), Typed("equinox", "dense", "transposed")),
    ("equinox.nn", ("Linear", "Conv"), Typed("equinox", "dense", "dense")),
    ("equinox.nn", ("LayerNorm", "GroupNorm", "BatchNorm", "RMSNorm"), Typed("equinox", "norm")),
    ("equinox.nn", ("Embedding",), Typed("equinox", "embed")),
    ("equinox.nn", ("LSTMCell", "GRUCell"), Typed("equinox", "rnn")),
    ("equinox.nn", ("WeightNorm",), Typed("equinox", "weightnorm")),
    ("flax.nnx", ("ConvTranspose",), Typed("flax", "dense", "transposed")),
    ("flax.nnx", ("LinearGeneral",), Typed("flax", "dense", "dense")),
    ("flax.nnx", ("Linear", "Conv"), Typed("flax", "dense", "dense")),
    ("flax.nnx", ("LayerNorm", "GroupNorm", "BatchNorm", "RMSNorm"), Typed("flax", "norm")),
    ("flax.nnx", ("Embed",), Typed("flax", "embed")),
)


def framework_of_node(node: Any) -> str | None:
    """`"equinox"`, `"flax"` or `"penzai"` for a node of those frameworks (a module,
    an `nnx.State`, a penzai layer)."""
    if isinstance(node, _attr("equinox", "Module")):
        return "equinox"
    if isinstance(node, _attr("flax.nnx", "Module", "State", "Variable")):
        return "flax"
    if isinstance(node, _attr("penzai.core.struct", "Struct")):
        return "penzai"  # named axes: no convention is converted, names load as they are
    return None


def framework_of_names(names: set[str], segments: set[str]) -> str | None:
    """The framework a dict of params comes from, told by its leaf names: linen's
    `kernel`/`embedding`, Haiku's `w`/`b`/`offset`/`embeddings` or `/~/` module names."""
    if names & {"kernel", "embedding"}:
        return "flax"
    if names & {"w", "b", "offset", "embeddings"} or any("/~/" in s for s in segments):
        return "haiku"
    return None


def typed_kind(layer: Any) -> Typed | None:
    """What the type of an Equinox or NNX layer whose convention is known says."""
    cls = type(layer)
    # A type's answer never changes (a class made before Equinox was imported cannot be an
    # Equinox layer), so it is worked out once per type.
    if cls not in _KINDS:
        _KINDS[cls] = next(
            (typed for module, names, typed in _TYPED if isinstance(layer, _attr(module, *names))),
            None,
        )
    return _KINDS[cls]


_KINDS: dict[type, Typed | None] = {}


def role_in(framework: str, kind: str, name: str) -> str | None:
    """The role `name` plays in a `kind` layer of `framework`."""
    for role, n in NAMES[framework][kind].items():
        if n == name:
            return role
    return None


class Classified(NamedTuple):
    """What a model array is, for checkpoints (`classify`)."""

    kind: str = ""
    role: str = ""
    #: A dense layer's weight: its `Layout` and family (`"dense"`, `"transposed"`).
    layout: Layout | None = None
    family: str = ""
    #: A weight of more than two axes that is one matrix `(in, out)` (NNX `LinearGeneral`:
    #: `(*in_features, *out_features)`), C order: the shape of that matrix.
    matrix: tuple[int, ...] | None = None
    #: A vector that is several axes of its layer's declared shape (`LinearGeneral`'s bias
    #: `out_features`): reshaped from and to a vector of the same size.
    flat: bool = False


_UNKNOWN = Classified()


def classify(framework: str | None, layer: Any, name: Any, siblings: Any) -> Classified:
    """What the array `name` of `layer` is; `Classified()` when not known.

    `layer` is the node holding the array (a module, or a dict for linen/Haiku params),
    `siblings` the names of the arrays next to it. A module's type decides; a linen or
    Haiku params dict (which holds no types) is read by its framework's names.
    """
    if not isinstance(name, str):
        return _UNKNOWN
    typed = typed_kind(layer)
    if typed is not None:
        role = role_in(typed.framework, typed.kind, name)
        if not role:
            return _UNKNOWN
        general = _general(layer)
        if role != "weight" or typed.kind != "dense":
            return Classified(typed.kind, role, flat=general is not None and role == "bias")
        if general is not None:
            return Classified(typed.kind, role, Layout("io"), "dense", general)
        return Classified(typed.kind, role, _layer_layout(layer, typed), typed.family)
    if framework not in ("flax", "haiku") or framework_of_node(layer) is not None:
        return _UNKNOWN  # a module of no known type: its names decide nothing
    if framework == "flax" and name == "bias":
        return (
            Classified("dense", "bias") if "kernel" in siblings else Classified("norm", "offset")
        )
    for kind in ("dense", "embed", "norm"):
        role = role_in(framework, kind, name)
        if role == "weight":
            return Classified(kind, role, LAYOUTS[framework]["dense"], "dense")
        if role:
            return Classified(kind, role)
    return _UNKNOWN


def _general(layer: Any) -> tuple[int, ...] | None:
    """The matrix `(in, out)` an NNX `LinearGeneral`'s kernel is, or `None` for another
    layer; a `LinearGeneral` with batch axes is no matrix (`(0, 0)`: nothing fits)."""
    if not isinstance(layer, _attr("flax.nnx", "LinearGeneral")):
        return None
    if getattr(layer, "batch_axis", None):
        return 0, 0
    ins, outs = layer.in_features, layer.out_features
    return int(np.prod(ins)), int(np.prod(outs))


def _layer_layout(layer: Any, typed: Typed) -> Layout:
    if typed.framework == "flax" and typed.family == "transposed":
        # NNX `ConvTranspose(transpose_kernel=True)` takes the kernel of the forward conv.
        return Layout("koi") if getattr(layer, "transpose_kernel", False) else Layout("kio", True)
    return LAYOUTS[typed.framework][typed.family]


def conversion(
    src: Layout, dst: Layout, ndim: int
) -> tuple[tuple[int, ...] | None, tuple[int, ...]] | None:
    """`(perm, flip)` taking a weight of `ndim` axes laid out as `src` to `dst`: the axes
    permutation (`None` when they agree), then the axes to reverse. `None` when a layout
    does not fit `ndim` axes (an `"io"` matrix is not a conv kernel)."""
    a, b = _axes(src.axes, ndim), _axes(dst.axes, ndim)
    if a is None or b is None:
        return None
    perm = None if a == b else tuple(a.index(role) for role in b)
    flip = tuple(j for j, r in enumerate(b) if r[0] == "k") if src.flipped != dst.flipped else ()
    return perm, flip


def _axes(axes: str, ndim: int) -> list[str] | None:
    kernel = [f"k{j}" for j in range(ndim - 2)]
    out = [a for c in axes for a in (kernel if c == "k" else [c])]
    return out if len(out) == ndim else None


def torch_layouts(module: Any) -> dict[str, tuple[str, Layout]]:
    """`{state_dict key: (family, layout)}` of the weights of a PyTorch module's layers
    whose type says their layout: `nn.Linear` and `nn.ConvNd` `(out, in, *kernel)`,
    `nn.ConvTransposeNd` `(in, out, *kernel)`, and the transformers library's `Conv1D`
    (GPT-2's projections) `(in, out)`."""
    conv = sys.modules["torch.nn.modules.conv"]
    linear = sys.modules["torch.nn"].Linear
    out: dict[str, tuple[str, Layout]] = {}
    for name, sub in module.named_modules():
        if isinstance(sub, conv._ConvTransposeNd):
            family, layout = "transposed", LAYOUTS["torch"]["transposed"]
        elif isinstance(sub, linear | conv._ConvNd):
            family, layout = "dense", LAYOUTS["torch"]["dense"]
        elif type(sub).__name__ == "Conv1D" and type(sub).__module__.startswith("transformers"):
            family, layout = "dense", Layout("io")
        else:
            continue
        out[f"{name}.weight" if name else "weight"] = family, layout
    return out


def is_torch_module(value: Any) -> bool:
    """Is `value` a PyTorch `nn.Module` (a transformers model included)?"""
    return isinstance(value, _attr("torch.nn", "Module"))


def is_rng_state(box: Any) -> bool:
    """Is `box` an NNX RNG variable (a key or a counter, never loaded)?"""
    return isinstance(box, _attr("flax.nnx", "RngState") + _attr("flax.nnx.rnglib", "RngState"))


def is_tensor(value: Any) -> bool:
    """A numpy or JAX array, or a PyTorch tensor (a value of a flat checkpoint mapping)."""
    return isinstance(value, np.ndarray | jax.Array) or (
        type(value).__module__.startswith("torch") and hasattr(value, "shape")
    )


def to_numpy(value: Any) -> np.ndarray:
    """A host numpy array of `value`: a numpy or JAX array, or a PyTorch tensor. A tensor
    of a dtype numpy lacks (`bfloat16`, the `float8`s) is read as its bits and viewed as
    the `ml_dtypes` type JAX uses, never through a float32 copy."""
    if not type(value).__module__.startswith("torch"):
        return np.asarray(value)
    value = value.detach().cpu()
    dtype = _torch_dtype(value)
    if dtype.kind != "V" and dtype.type.__module__ == "numpy":
        return value.numpy()
    torch = sys.modules["torch"]
    bits = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[dtype.itemsize]
    return value.view(bits).numpy().view(dtype)


def _torch_dtype(value: Any) -> np.dtype:
    return jnp.dtype(str(value.dtype).removeprefix("torch."))


def meta_of(value: Any) -> tuple[tuple[int, ...], np.dtype]:
    """`(shape, dtype)` of an array or PyTorch tensor, without copying it."""
    if type(value).__module__.startswith("torch"):
        return tuple(value.shape), _torch_dtype(value)
    return tuple(value.shape), jnp.dtype(value.dtype)
