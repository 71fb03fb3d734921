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
- **Fixed children**: node types (Equinox `Module`, penzai `Struct`) whose children's key
  entries are the same in every instance of a class, so the engine learns them once.
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


def is_hidden(entry: Any) -> bool:
    """Is the child at key entry `entry` of a mutable node bookkeeping (`HIDDEN_CHILDREN`)?"""
    return getattr(entry, "name", None) in HIDDEN_CHILDREN


def _mutable_nodes() -> tuple[type, ...]:
    return _attr("flax.nnx.pytreelib", "Pytree") + _attr("flax.nnx.variablelib", "Variable")


def _fixed_children() -> tuple[type, ...]:
    """Pytree node types whose children are the same fields, with the same key entries,
    in every instance of a class: an Equinox `Module` (its dynamic fields) and a penzai
    `Struct` (its pytree fields). The engine learns their key entries once per class."""
    return _attr("equinox", "Module") + _attr("penzai.core.struct", "Struct")


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
        self.fixed_children: tuple[type, ...] = ()
        self.variables: tuple[type, ...] = ()  # NNX `Variable`

    def refresh(self) -> _Registry:
        n = len(sys.modules)
        if n != self._n_modules:
            self._n_modules = n
            self.pytree_boxes = _pytree_boxes()
            self.leaf_boxes = _leaf_boxes()
            self.boxes = self.pytree_boxes + self.leaf_boxes
            self.mutable = _mutable_nodes()
            self.fixed_children = _fixed_children()
            self.variables = _attr("flax.nnx.variablelib", "Variable")
            self.generation += 1
        return self


registry = _Registry()


#: A pytree box class's child entry name (`"value"`), learnt from its first box.
_box_names: dict[type, str] = {}


def unbox(node: Any, pytree_boxes: tuple[type, ...]) -> tuple[str, Any, _Rebox]:
    """Open one box: `(attribute name, inner value, rebox)`.

    `rebox(new_inner)` builds a new box of the same type and metadata around `new_inner`.
    """
    # `issubclass(type(...))`, here and below: NNX's `Variable` answers `isinstance`
    # through a metaclass method in Python, ten times slower.
    if issubclass(type(node), pytree_boxes):
        name = _box_names.get(type(node))
        if name is None:  # the child's key entry, the same in every box of a class
            (((entry,), _),), _ = jax.tree_util.tree_flatten_with_path(
                node, is_leaf=lambda x: x is not node
            )
            name = _box_names[type(node)] = entry.name
        # The plain flatten: a third cheaper than the path flatten, once per box.
        (inner,), treedef = jax.tree_util.tree_flatten(node, is_leaf=lambda x: x is not node)
        return name, inner, lambda new: treedef.unflatten([new])
    # A penzai variable: a mutable leaf with `.value`, `.label` and `.metadata`.
    cls = type(node)
    label, metadata = node.label, node.metadata
    return "value", node.value, lambda new: cls(value=new, label=label, metadata=metadata)


def unboxed(value: Any) -> Any:
    """`value` with every box around it opened (an NNX `Param` gives its array)."""
    reg = registry.refresh()
    while reg.boxes and issubclass(type(value), reg.boxes):
        if issubclass(type(value), reg.variables):  # read, not flattened: 1/20 of the cost
            value = value.get_raw_value()
        else:
            value = unbox(value, reg.pytree_boxes)[1]
    return value


def variable_kind(box: Any) -> str | None:
    """`"param"` for an NNX `Param`, `"other"` for any other NNX `Variable` (`BatchStat`,
    RNG keys and counters, ...), `None` for what is not an NNX variable."""
    var = _attr("flax.nnx.variablelib", "Variable")
    if not var or not isinstance(box, var):
        return None
    return "param" if isinstance(box, _attr("flax.nnx.variablelib", "Param")) else "other"


def is_optimizer_state(x: Any) -> bool:
    """Is `x` an optimiser's state (an optax state such as `ScaleByAdamState`, whose `mu`
    and `nu` mirror the parameters' paths)?"""
    return type(x).__module__.split(".")[0] == "optax"


def _nnx_states() -> tuple[type, ...]:
    return _attr("flax.nnx.statelib", "State", "FlatState")


def is_plain_container(t: type) -> bool:
    """Is `t` a container that holds no layers: a dict, list, tuple, `None` or an
    `nnx.State`?"""
    return t in (dict, list, tuple, type(None)) or issubclass(t, _nnx_states())


def nnx_kind(tree: Any) -> str | None:
    """`"module"` for an NNX module, `"state"` for an `nnx.State`, else `None`."""
    module = _attr("flax.nnx.module", "Module")
    if module and isinstance(tree, module):
        return "module"
    states = _attr("flax.nnx.statelib", "State")
    if states and isinstance(tree, states):
        return "state"
    return None


def nnx_pure(out: Any, kind: str, wrt: Any = None) -> Any:
    """A mask or label tree `out` built from an NNX module or `nnx.State` (`kind`), in the
    form its consumer wants. From a module: the pure state (bools or labels where the
    variables were) of what `nnx.Optimizer(..., wrt=wrt)` optimises, as it hands optax
    the parameters (`wrt` defaults to `nnx.Param`). From a State: its own structure, or
    with `wrt` the pure state of those variables."""
    nnx = sys.modules["flax.nnx"]
    if kind == "module":
        return nnx.as_pure(nnx.state(out, nnx.Param if wrt is None else wrt))
    if wrt is not None:
        return nnx.as_pure(nnx.filter_state(out, wrt))
    return out


from .layouts import BIAS_NAMES as BIAS_NAMES  # noqa: E402
from .layouts import WEIGHT_NAMES as WEIGHT_NAMES  # noqa: E402
from .layouts import box_partitioning as box_partitioning  # noqa: E402
from .layouts import layout_of as layout_of  # noqa: E402
