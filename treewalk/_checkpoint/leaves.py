"""The array leaves of a model as checkpoints see them: each with its path, the layer that
holds it, the framework convention it follows, and its kind and role (see
`treewalk._frameworks.checkpoint`). Shared by `tw.load` (the destination, and a pytree
source) and `tw.export`."""

from __future__ import annotations

from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import keystr

from .._core.engine import Leaves, Pass
from .._core.errors import ArgumentError
from .._core.node import Node
from .._core.paths import Path, path_segments, path_str
from .._frameworks import checkpoint as conv
from .._frameworks import composite
from .._select.atoms import arrays

#: An index into an array: one slice per axis (as JAX gives a shard's).
Index: TypeAlias = tuple[slice, ...]


class Leaf:
    """One array of a model: where it is and what it is."""

    __slots__ = (
        "path",
        "key",
        "name",
        "segments",
        "node",
        "box",
        "framework",
        "kind",
        "role",
        "layout",
        "family",
        "matrix",
        "flat",
        "group",
        "layer_type",
        "after_load",
        "scale",
        "shared",
    )

    def __init__(self, path: Path, node: Any, box: Any) -> None:
        self.path = path
        self.key = keystr(path)
        self.segments = path_segments(path)
        self.name = path_str(path)
        self.node, self.box = node, box
        self.framework: str | None = None
        self.kind, self.role = "", ""
        #: A dense layer's weight: its `Layout` and family (`"dense"`, `"transposed"`).
        self.layout: conv.Layout | None = None
        self.family = ""
        #: The `(in, out)` matrix a weight of more axes is (NNX `LinearGeneral`).
        self.matrix: tuple[int, ...] | None = None
        #: A vector stored with several axes (`LinearGeneral`'s bias).
        self.flat = False
        #: The layer a checkpoint names as a whole that holds the array (attention, RNN).
        self.group: composite.Group | None = None
        #: The name of the type of the module holding the array (`""` for a dict).
        self.layer_type = ""
        #: A flag or counter of an `eqx.nn.State` that loading statistics sets (not read
        #: from a source), else `None`.
        self.after_load: Any = None
        #: What the array is divided by to give the value a checkpoint holds (an Equinox
        #: `BatchNorm(mode="batch")`'s debiasing).
        self.scale = 1.0
        #: Is the array in a shared mutable object (at several paths: an NNX tie)?
        self.shared = False

    def rename(self, segments: tuple[Any, ...]) -> None:
        """Name the leaf by `segments` (its `path` stays where it is in the tree)."""
        self.segments = segments
        self.name = "/".join(map(str, segments))

    def written_as(self, convention: str | None) -> composite.Recipe:
        """How a checkpoint in `convention` holds this array (`tw.export` writes it so):
        the convention's first recipe, else the array's own name."""
        found = self._recipes(convention)
        return found[0] if found else (composite.Term(self.name),)

    def recipes(self, convention: str | None) -> list[composite.Recipe]:
        """Every way a checkpoint in `convention` may hold this array, its own name first."""
        out: list[composite.Recipe] = [(composite.Term(self.name),)]
        out += [r for r in self._recipes(convention) if r != out[0]]
        return out

    def _recipes(self, convention: str | None) -> list[composite.Recipe]:
        if not self.kind or not self.segments:
            return []
        return composite.recipes(convention, self.segments, self.kind, self.role, self.group)


def check_convention(convention: Any, what: str, *, optional: bool = True) -> None:
    """An `ArgumentError` unless `convention` (the argument `what`) is a known one, or
    `None` where `optional`."""
    if (convention is not None or not optional) and convention not in conv.CONVENTIONS:
        raise ArgumentError(
            f"{what}={convention!r} is not a known checkpoint convention; use one of "
            f"{', '.join(map(repr, conv.CONVENTIONS))}."
        )


def model_leaves(tree: Any, framework: str | None = None) -> tuple[str | None, list[Leaf]]:
    """`(framework, leaves)`: the tree's convention (`framework`, else detected) and its
    loadable array leaves, in traversal order, each with the box around it and the layer
    that holds it, as the pass sees them. PRNG keys and NNX RNG state are left out.

    An Equinox model and its `eqx.nn.State`, as a pair `(model, state)`, is named as the
    model alone is, and each BatchNorm's statistics in the state by the layer's path
    (`bn/running_mean`)."""
    detected: list[str] = []
    leaves: list[Leaf] = []
    context: list[tuple[Any, Any, Any]] = []  # (layer, the layer around it, its name there)
    m = arrays.compile()

    first: dict[int, Path] = {}  # a node's first path (a shared one is met once)
    again: list[tuple[Path, Any]] = []  # a shared mutable object met again, and where

    def at_node(n: Node, state: None) -> None:
        first[id(n.node)] = n.path
        if not detected:
            found = conv.framework_of_node(n.node)
            if found is not None:
                detected.append(found)

    def at_leaf(n: Node, state: None) -> None:
        if not m(n) or jnp.issubdtype(n.node.dtype, jax.dtypes.prng_key):
            return
        if conv.is_rng_state(n.outer):
            return
        if n.outer is not None:
            first[id(n.outer)] = n.path[:-1]
        leaves.append(Leaf(n.path, n.node, n.outer))
        layer = n.parent
        outer = None if layer is None else layer.parent
        attr = path_segments(layer.path)[-1] if layer is not None and layer.path else None
        context.append(
            (None if layer is None else layer.node, None if outer is None else outer.node, attr)
        )

    Pass(Leaves(at_leaf, at_node, at_again=lambda p, y: again.append((p, y))), rebuild=False).run(
        tree
    )
    _name_ties(leaves, context, first, again)
    if composite.model_and_state(tree):
        _name_model_and_state(tree, leaves)
    elif composite.params_and_state(tree):
        _name_params_and_state(leaves)
    if framework is None and detected:
        framework = detected[0]
    if framework is None:
        names = {str(leaf.segments[-1]) for leaf in leaves if leaf.segments}
        segments = {s for leaf in leaves for s in leaf.segments if isinstance(s, str)}
        framework = conv.framework_of_names(names, segments)
    siblings: dict[tuple[Any, ...], set[Any]] = {}
    for leaf in leaves:
        if leaf.segments:
            siblings.setdefault(leaf.segments[:-1], set()).add(leaf.segments[-1])
    for leaf, (layer, outer, attr) in zip(leaves, context, strict=True):
        if not leaf.segments or leaf.kind:
            continue
        found = conv.classify(framework, layer, leaf.segments[-1], siblings[leaf.segments[:-1]])
        leaf.kind, leaf.role, leaf.layout, leaf.family = found[:4]
        leaf.matrix, leaf.flat = found.matrix, found.flat
        leaf.group = composite.group_of(layer, outer, attr) if found.kind else None
        typed = conv.typed_kind(layer)
        leaf.framework = typed.framework if typed is not None else framework
        if conv.framework_of_node(layer) is not None:
            leaf.layer_type = type(layer).__name__
    return framework, leaves


def _name_ties(
    leaves: list[Leaf],
    context: list[Any],
    first: dict[int, Path],
    again: list[tuple[Path, Any]],
) -> None:
    """A shared mutable object (an NNX module or variable at two attributes: a tied
    embedding and head) is met once, at its first path: add its arrays at every other
    path it is at, as the same arrays (`tw.load` loads a tie once, from either key)."""
    for path, obj in again:
        at = first.get(id(obj))
        if at is None:
            continue
        n = len(at)
        for j in range(len(leaves)):
            leaf = leaves[j]
            if leaf.path[:n] != at:
                continue
            tie = Leaf(leaf.path, leaf.node, leaf.box)
            tie.rename(path_segments(path + leaf.path[n:]))
            leaf.shared = tie.shared = True
            leaves.append(tie)
            context.append(context[j])


def _name_model_and_state(tree: tuple[Any, Any], leaves: list[Leaf]) -> None:
    """Name the leaves of `(model, state)`: the model's as the model alone names them,
    the state's BatchNorm statistics by their layer (`bn/running_mean`), its flags and
    counters `after_load`, its other entries by their `StateIndex` in the model."""
    model, state = tree
    slots = composite.state_slots(model, state)
    counters: dict[int, Any] = {}
    stats: list[tuple[Leaf, composite.Slot]] = []
    for leaf in leaves:
        if leaf.segments[0] == 0:
            leaf.rename(leaf.segments[1:])
            continue
        slot = slots[int(leaf.segments[1])] if len(leaf.segments) > 1 else None
        if slot is None:
            continue
        at = path_segments(slot.path)
        if slot.field in composite.BATCHNORM_AFTER_LOAD:
            leaf.rename((*at, slot.field))
            leaf.kind, leaf.framework = "state", "equinox"
            leaf.after_load = composite.BATCHNORM_AFTER_LOAD[slot.field]
            if slot.field == "batch_counter":
                counters[id(slot.layer)] = leaf.node
        elif slot.field in composite.BATCHNORM_STATS and len(leaf.segments) == 3:
            role = ("mean", "var")[int(leaf.segments[2])]
            leaf.rename((*at, conv.NAMES["equinox"]["norm"][role]))
            leaf.kind, leaf.role, leaf.framework = "norm", role, "equinox"
            leaf.layer_type = type(slot.layer).__name__
            stats.append((leaf, slot))
        else:
            leaf.rename(at + leaf.segments[2:])
    for leaf, slot in stats:
        counter = counters.get(id(slot.layer))
        if counter is not None and not isinstance(counter, jax.ShapeDtypeStruct):
            leaf.scale = composite.batch_scale(slot.layer, counter)


def _name_params_and_state(leaves: list[Leaf]) -> None:
    """Name the leaves of a Haiku `(params, state)`: the params' as the params alone name
    them, a BatchNorm `X`'s averages `X/mean` and `X/var` (`hidden` follows the average
    and `counter` is warmed up when they load), other state entries by their own path."""
    averages: dict[tuple[Any, ...], Leaf] = {}
    followers: list[tuple[Leaf, tuple[Any, ...]]] = []
    for leaf in leaves:
        if leaf.segments[0] == 0:
            leaf.rename(leaf.segments[1:])
            continue
        module, field = leaf.segments[1], leaf.segments[-1] if len(leaf.segments) == 3 else None
        suffix = next((s for s in composite.HAIKU_EMAS if str(module).endswith(s)), None)
        if suffix is None or field not in ("average", "hidden", "counter"):
            leaf.rename(leaf.segments[1:])
            continue
        layer, role = str(module)[: -len(suffix)], composite.HAIKU_EMAS[suffix]
        if field == "average":
            leaf.rename((layer, role))
            leaf.kind, leaf.role, leaf.framework = "norm", role, "haiku"
            averages[(layer, role)] = leaf
            continue
        leaf.rename((layer, f"{role}_{field}"))
        leaf.kind, leaf.framework = "state", "haiku"
        if field == "counter":
            leaf.after_load = composite.HAIKU_WARM
        else:
            followers.append((leaf, (layer, role)))
    for leaf, of in followers:
        leaf.after_load = averages.get(of, 0.0)


def flatten_source(
    tree: Any,
) -> tuple[str | None, dict[str, Any], dict[str, tuple[str, conv.Layout]]]:
    """A pytree source as `(its framework, {path_str: array}, {path_str: (family,
    layout)})`, the last for the weights whose layer type says their layout. A weight
    that is a matrix of more axes (`LinearGeneral`) is given as that matrix; statistics
    as a checkpoint holds them."""
    framework, leaves = model_leaves(tree)
    flat: dict[str, Any] = {}
    for leaf in leaves:
        if leaf.after_load is not None:
            continue
        node = leaf.node if leaf.matrix is None else leaf.node.reshape(leaf.matrix)
        flat[leaf.name] = node if leaf.scale == 1.0 else node / leaf.scale
    layouts = {leaf.name: (leaf.family, leaf.layout) for leaf in leaves if leaf.layout}
    return framework, flat, layouts


def vector_reshape(leaf: Leaf, shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """May a vector of `shape` be reshaped to `target` (only singleton axes differ, or
    the layer declares the vector's axes: `LinearGeneral`'s bias)?"""
    if leaf.role not in conv.VECTOR_ROLES or shape == target:
        return False
    if leaf.flat and len(shape) <= 1 or leaf.flat and len(target) <= 1:
        return int(np.prod(shape)) == int(np.prod(target))
    return [d for d in shape if d != 1] == [d for d in target if d != 1] and int(
        np.prod(shape)
    ) == int(np.prod(target))


def held(array: Any) -> list[tuple[Index, Any]]:
    """`(index, values)` of each distinct part of `array` that this process's devices hold,
    the values a single-device array (a numpy array: all of it, as it is)."""
    if not isinstance(array, jax.Array):
        return [((slice(None),) * np.ndim(array), array)]
    out: dict[Any, tuple[Index, Any]] = {}
    for shard in array.addressable_shards:
        out.setdefault(index_key(shard.index, array.shape), (shard.index, shard.data))
    return list(out.values())


def index_key(index: Index, shape: tuple[int, ...]) -> tuple[tuple[int, int, int], ...]:
    """`index` into an array of `shape`, hashable (a slice is not, before Python 3.12)."""
    return tuple(s.indices(n) for s, n in zip(index, shape, strict=True))


def on_host(part: Any) -> np.ndarray:
    """A part `held` gives, as numpy, leaving no copy cached on the model's array: on the
    CPU a view of its memory; from another device, through a CPU array of its own
    (`np.asarray` of an accelerator's array keeps its host copy for the array's life)."""
    if isinstance(part, jax.Array) and any(d.platform != "cpu" for d in part.devices()):
        part = jax.device_put(part, jax.local_devices(backend="cpu")[0])
    return np.asarray(part)
