"""Framework knowledge about layers: weight layouts (for `tw.init`'s fans) and the
partitioning metadata boxes carry (for `tw.materialize`)."""

from __future__ import annotations

import sys
from typing import Any

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
    from jax.sharding import PartitionSpec, Sharding

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
