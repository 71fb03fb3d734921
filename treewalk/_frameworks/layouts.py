"""Framework knowledge about layers: weight layouts (for `tw.init`'s fans), the
partitioning metadata boxes carry (for `tw.materialize`), and wrapper layers of a layer's
own framework (for `tw.init.empirical`)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from jax.sharding import PartitionSpec, Sharding

from . import _attr

# ----------------------------------------------------------------------------------------
# Weight layouts, for fan computations in `treewalk.init`.
#
# A layout names the role of each axis of a weight: "o" (output features), "i" (input
# features) and "k" (a receptive-field axis). "oik" means `(out, in, *kernel)`.

#: The names a layer's weight goes by, per framework: Equinox, linen/NNX, Haiku, penzai.
WEIGHT_NAMES = ("weight", "kernel", "w", "weights")
#: The names a layer's bias goes by.
BIAS_NAMES = ("bias", "b")


def layout_of(layer: Any, weight_name: str) -> str | None:
    """The layout of `layer.<weight_name>` when the layer's type says it, else `None`."""
    for module, names, layout in _LAYOUTS:
        if isinstance(layer, _attr(module, *names)):
            return layout
    if weight_name == "kernel":  # linen / NNX convention: (*k, in, out)
        return "kio"
    if weight_name == "w":  # Haiku convention: (*k, in, out)
        return "kio"
    return None


_LAYOUTS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("equinox.nn", ("Linear",), "oi"),
    ("equinox.nn", ("Conv", "ConvTranspose"), "oik"),
    ("flax.nnx", ("Linear", "Conv", "ConvTranspose"), "kio"),
)


# ----------------------------------------------------------------------------------------
# Partitioning metadata on boxes, for `treewalk.materialize`.


def box_partitioning(box: Any) -> tuple[Any, Any] | None:
    """`(spec, mesh or None)` that a box's partitioning metadata names, else `None`.

    `spec` is a `PartitionSpec` or a `Sharding`. Flax NNX variables carry it as
    `out_sharding` (flax >= 0.12; `sharding_names`/`sharding` before), linen `Partitioned`
    as `names` (logical names of `LogicallyPartitioned` go through its rules).
    """
    if isinstance(box, _attr("flax.nnx.variablelib", "Variable")):
        meta = box.get_metadata()
        names = None
        for field in ("out_sharding", "sharding_names", "sharding"):
            names = meta.get(field)
            if names is not None:
                break
        if names is None:
            return None
        spec = names if isinstance(names, Sharding | PartitionSpec) else PartitionSpec(*names)
        return spec, meta.get("mesh")
    if isinstance(box, _attr("flax.linen.spmd", "LogicallyPartitioned")):
        logical_to_mesh_axes = sys.modules["flax.linen.spmd"].logical_to_mesh_axes
        return logical_to_mesh_axes(box.names, box.rules), box.mesh
    if isinstance(box, _attr("flax.core.meta", "Partitioned")):
        return PartitionSpec(*box.names), box.mesh
    return None


# ----------------------------------------------------------------------------------------
# Wrapper layers, for `treewalk.init.empirical`: a module of the layer's own framework
# (Equinox or Flax NNX) around one layer, so the wrapped model is still a model.

#: `call(value, layer, args, kwargs)`: what a wrapper's `__call__(*args, **kwargs)` does.
WrapperCall = Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Any]

_WRAPPERS: dict[tuple[type, str], type] = {}


def module_base(layer: Any) -> type | None:
    """The module base class of `layer`'s framework (`eqx.Module`, `nnx.Module`), or `None`
    when `layer` is not a module of an imported framework."""
    for base in _attr("equinox", "Module") + _attr("flax.nnx", "Module"):
        if isinstance(layer, base):
            return base
    return None


def wrapper_class(layer: Any, name: str, field: str, call: WrapperCall, doc: str) -> type | None:
    """A module class of `layer`'s framework with two attributes, the child `layer` and the
    static `field`, built as `cls(layer, value)`, whose `__call__(*args, **kwargs)` is
    `call(self.<field>, self.layer, args, kwargs)`. `None` when `layer` is not an Equinox
    or NNX module. One class per framework and `name` (the first `call` given is kept)."""
    base = module_base(layer)
    if base is None:
        return None
    cls = _WRAPPERS.get((base, name))
    if cls is not None:
        return cls

    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        return call(getattr(self, field), self.layer, args, kwargs)

    ns: dict[str, Any] = {"__call__": __call__, "__doc__": doc, "__module__": "treewalk.init"}
    if base in _attr("equinox", "Module"):
        # Equinox: dataclass fields; the value is static (not a leaf the optimiser sees).
        ns["__annotations__"] = {"layer": Any, field: Any}
        ns[field] = sys.modules["equinox"].field(static=True)
    else:
        # NNX: plain attributes; a Python number is static there already.
        def __init__(self: Any, layer: Any, value: Any) -> None:
            self.layer = layer
            setattr(self, field, value)

        ns["__init__"] = __init__
    cls = _WRAPPERS[(base, name)] = type(name, (base,), ns)
    return cls
