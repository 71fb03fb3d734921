"""Everything treewalk knows about particular frameworks, in one place.

The core never imports a framework. A framework's types are looked up in `sys.modules`
only: if Flax was never imported, no tree can hold an NNX `Variable`, so there is
nothing to recognise.

What lives here:

- **Boxes**: wrappers whose only child is the real value (Flax NNX `Variable`, linen
  `AxisMetadata` such as `Partitioned`/`LogicallyPartitioned`, penzai `Parameter`,
  `ParameterValue`, `NamedArray`). `replace` and the queries look through them: `fn`
  sees the bare array and the box is rebuilt around the new value with its metadata.
- **Mutable nodes** (NNX modules and variables, penzai variables): always rebuilt, never
  shared between the input and the output of `replace`.
- **Weight layouts** of the common layers, used by `treewalk.init` to compute fans.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import jax

_Rebox = Callable[[Any], Any]


def _attr(module: str, *names: str) -> tuple[type, ...]:
    mod = sys.modules.get(module)
    if mod is None:
        return ()
    return tuple(t for t in (getattr(mod, n, None) for n in names) if isinstance(t, type))


def _pytree_boxes() -> tuple[type, ...]:
    """Box types that are JAX pytree nodes with exactly one child."""
    return (
        _attr("flax.nnx.variablelib", "Variable")
        + _attr("flax.core.meta", "AxisMetadata")
        + _attr("penzai.core.variables", "AbstractVariableValue")
        + _attr("penzai.core.named_axes", "NamedArrayBase")
    )


def _leaf_boxes() -> tuple[type, ...]:
    """Box types that are JAX leaves (mutable objects holding a value)."""
    return _attr("penzai.core.variables", "Parameter", "StateVariable")


#: Children of framework nodes that are bookkeeping, not model content (NNX's per-module
#: trace state). Queries and `replace` keep them as they are and never show them.
HIDDEN_CHILDREN = frozenset({"_pytree__state"})


def _mutable_nodes() -> tuple[type, ...]:
    return _attr("flax.nnx.pytreelib", "Pytree") + _attr("flax.nnx.variablelib", "Variable")


class _Registry:
    """Caches the framework types; refreshed when `sys.modules` grows."""

    def __init__(self) -> None:
        self._n_modules = -1
        #: Bumped whenever the known framework types change (caches keyed on types use it).
        self.generation = 0
        self.pytree_boxes: tuple[type, ...] = ()
        self.leaf_boxes: tuple[type, ...] = ()
        self.boxes: tuple[type, ...] = ()
        self.mutable: tuple[type, ...] = ()

    def refresh(self) -> _Registry:
        n = len(sys.modules)
        if n != self._n_modules:
            self._n_modules = n
            self.pytree_boxes = _pytree_boxes()
            self.leaf_boxes = _leaf_boxes()
            self.boxes = self.pytree_boxes + self.leaf_boxes
            self.mutable = _mutable_nodes()
            self.generation += 1
        return self


registry = _Registry()


def unbox(node: Any, pytree_boxes: tuple[type, ...]) -> tuple[str, Any, _Rebox]:
    """Open one box: `(attribute name, inner value, rebox)`.

    `rebox(new_inner)` builds a new box of the same type and metadata around `new_inner`.
    """
    if isinstance(node, pytree_boxes):
        (((entry,), inner),), treedef = jax.tree_util.tree_flatten_with_path(
            node, is_leaf=lambda x: x is not node
        )
        return entry.name, inner, lambda new: treedef.unflatten([new])
    # A penzai variable: a mutable leaf with `.value`, `.label` and `.metadata`.
    cls = type(node)
    label, metadata = node.label, node.metadata
    return "value", node.value, lambda new: cls(value=new, label=label, metadata=metadata)


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
