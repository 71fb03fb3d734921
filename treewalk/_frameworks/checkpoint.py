"""Checkpoint conventions of PyTorch, Equinox, Flax (linen and NNX) and Haiku.

`tw.load` and `tw.export` convert names and axis layouts of the layers whose convention
is known. This module is the only place that knows them. Like the rest of
`treewalk._frameworks` it never imports a framework: layer types are looked up in
`sys.modules`.

A layer has a **kind** and each of its arrays a **role**:

| kind    | roles                              | layers                                   |
|---------|------------------------------------|------------------------------------------|
| `dense` | `weight`, `bias`                   | Linear / Dense, Conv 1-3D                |
| `norm`  | `scale`, `offset`, `mean`, `var`   | LayerNorm, GroupNorm, BatchNorm, RMSNorm |
| `embed` | `table`                            | Embedding / Embed                        |

Each framework names a role (`NAMES`) and lays out a dense weight (`WEIGHT_AXES`):
PyTorch and Equinox `(out, in, *kernel)`, Flax and Haiku `(*kernel, in, out)`. The other
roles are vectors (an Equinox conv bias is `(out, 1, 1)`, a Haiku BatchNorm scale
`(1, 1, 1, C)`): they are reshaped when only singleton axes differ.
"""

from __future__ import annotations

from typing import Any

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
        "norm": {"scale": "weight", "offset": "bias"},
        "embed": {"table": "weight"},
    },
    "flax": {
        "dense": {"weight": "kernel", "bias": "bias"},
        "norm": {"scale": "scale", "offset": "bias", "mean": "mean", "var": "var"},
        "embed": {"table": "embedding"},
    },
    "haiku": {
        "dense": {"weight": "w", "bias": "b"},
        "norm": {"scale": "scale", "offset": "offset"},
        "embed": {"table": "embeddings"},
    },
}

#: How each framework lays out a dense (Linear or Conv) weight: `o` out, `i` in, `k` the
#: kernel axes (none for a Linear).
WEIGHT_AXES = {"torch": "oik", "equinox": "oik", "flax": "kio", "haiku": "kio"}

#: Roles whose arrays are vectors (reshaped when only singleton axes differ).
VECTOR_ROLES = frozenset({"bias", "scale", "offset", "mean", "var"})

#: The last names of keys a convention's checkpoints hold that no JAX framework has
#: (PyTorch BatchNorm's counter): `tw.load` skips them.
_SOURCE_ONLY = {"torch": frozenset({"num_batches_tracked"})}


def source_only(convention: str | None, name: str) -> bool:
    """Is `name` (the last segment of a source key) an array only checkpoints in
    `convention` hold (`num_batches_tracked` in a PyTorch state_dict), skipped by `tw.load`?"""
    return convention is not None and name in _SOURCE_ONLY.get(convention, ())


_TYPED = (
    ("equinox.nn", ("Linear", "Conv"), "equinox", "dense"),
    ("equinox.nn", ("LayerNorm", "GroupNorm", "BatchNorm", "RMSNorm"), "equinox", "norm"),
    ("equinox.nn", ("Embedding",), "equinox", "embed"),
    ("flax.nnx", ("Linear", "Conv"), "flax", "dense"),
    ("flax.nnx", ("LayerNorm", "GroupNorm", "BatchNorm", "RMSNorm"), "flax", "norm"),
    ("flax.nnx", ("Embed",), "flax", "embed"),
)
#: Subclasses of the types above whose weight has another layout (not converted).
_NOT_CONVERTED = (("equinox.nn", ("ConvTranspose",)), ("flax.nnx", ("ConvTranspose",)))


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


def typed_kind(layer: Any) -> tuple[str, str] | None:
    """`(framework, kind)` of an Equinox or NNX layer whose convention is known."""
    cls = type(layer)
    # A type's answer never changes (a class made before Equinox was imported cannot be an
    # Equinox layer), so it is worked out once per type.
    if cls not in _KINDS:
        _KINDS[cls] = _typed_kind(layer)
    return _KINDS[cls]


_KINDS: dict[type, tuple[str, str] | None] = {}


def _typed_kind(layer: Any) -> tuple[str, str] | None:
    for module, names in _NOT_CONVERTED:
        if isinstance(layer, _attr(module, *names)):
            return None
    for module, names, framework, kind in _TYPED:
        if isinstance(layer, _attr(module, *names)):
            return framework, kind
    return None


def role_in(framework: str, kind: str, name: str) -> str | None:
    """The role `name` plays in a `kind` layer of `framework`."""
    for role, n in NAMES[framework][kind].items():
        if n == name:
            return role
    return None


def classify(framework: str | None, layer: Any, name: Any, siblings: Any) -> tuple[str, str]:
    """`(kind, role)` of the array `name` of `layer`, or `("", "")` when not known.

    `layer` is the node holding the array (a module, or a dict for linen/Haiku params),
    `siblings` the names of the arrays next to it.
    """
    if not isinstance(name, str):
        return "", ""
    typed = typed_kind(layer)
    if typed is not None:
        role = role_in(typed[0], typed[1], name)
        return (typed[1], role) if role else ("", "")
    if framework == "flax":
        if name == "bias":
            return ("dense", "bias") if "kernel" in siblings else ("norm", "offset")
        for kind in ("dense", "embed", "norm"):
            role = role_in("flax", kind, name)
            if role:
                return kind, role
    if framework == "haiku":
        for kind in ("dense", "embed", "norm"):
            role = role_in("haiku", kind, name)
            if role:
                return kind, role
    return "", ""


def weight_perm(src: str, dst: str, ndim: int) -> tuple[int, ...] | None:
    """The axes permutation taking a dense weight of `ndim` axes from the layout of
    framework `src` to that of `dst` (`None` when they agree)."""
    a, b = _axes(WEIGHT_AXES[src], ndim), _axes(WEIGHT_AXES[dst], ndim)
    if a == b or ndim < 2:
        return None
    return tuple(a.index(role) for role in b)


def _axes(layout: str, ndim: int) -> list[str]:
    kernel = [f"k{j}" for j in range(ndim - 2)]
    return ["o", "i", *kernel] if layout == "oik" else [*kernel, "i", "o"]


def is_rng_state(box: Any) -> bool:
    """Is `box` an NNX RNG variable (a key or a counter, never loaded)?"""
    return isinstance(box, _attr("flax.nnx", "RngState") + _attr("flax.nnx.rnglib", "RngState"))


def is_tensor(value: Any) -> bool:
    """A numpy or JAX array, or a PyTorch tensor (a value of a flat checkpoint mapping)."""
    return isinstance(value, np.ndarray | jax.Array) or (
        type(value).__module__.startswith("torch") and hasattr(value, "shape")
    )


def to_numpy(value: Any) -> np.ndarray:
    """A host numpy array of `value`: a numpy or JAX array, or a PyTorch tensor."""
    if type(value).__module__.startswith("torch"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def meta_of(value: Any) -> tuple[tuple[int, ...], np.dtype]:
    """`(shape, dtype)` of an array or PyTorch tensor, without copying it."""
    if type(value).__module__.startswith("torch"):
        return tuple(value.shape), jnp.dtype(str(value.dtype).removeprefix("torch."))
    return tuple(value.shape), jnp.dtype(value.dtype)
