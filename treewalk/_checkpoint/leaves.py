"""The array leaves of a model as checkpoints see them: each with its path, the layer that
holds it, the framework convention it follows, and its kind and role (see
`treewalk._frameworks.checkpoint`). Shared by `tw.load` (the destination, and a pytree
source) and `tw.export`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import DictKey, GetAttrKey, SequenceKey, keystr

from .._core.errors import ArgumentError
from .._core.paths import BoxKey, Path, path_segments, path_str
from .._frameworks import checkpoint as conv
from .._ops.query import select
from .._select.atoms import arrays, everything


class Leaf:
    """One array of a model: where it is and what it is."""

    __slots__ = ("path", "key", "name", "segments", "node", "box", "framework", "kind", "role")

    def __init__(self, path: Path, node: Any, box: Any) -> None:
        self.path = path
        self.key = keystr(path)
        self.segments = path_segments(path)
        self.name = path_str(path)
        self.node, self.box = node, box
        self.framework: str | None = None
        self.kind, self.role = "", ""

    def name_in(self, layout: str | None) -> str | None:
        """This leaf's path with its last segment named as `layout` names its role."""
        if layout not in conv.NAMES or not self.kind or not self.segments:
            return None
        name = conv.NAMES[layout][self.kind].get(self.role)
        if name is None:
            return None
        return "/".join([*map(str, self.segments[:-1]), name])


def check_layout(layout: Any, what: str) -> None:
    if layout is not None and layout not in conv.LAYOUTS:
        raise ArgumentError(
            f"{what}={layout!r} is not a known convention; use one of "
            f"{', '.join(map(repr, conv.LAYOUTS))}."
        )


def model_leaves(tree: Any, framework: str | None = None) -> tuple[str | None, list[Leaf]]:
    """`(framework, leaves)`: the tree's convention (`framework`, else detected) and its
    loadable array leaves, in traversal order. PRNG keys and NNX RNG state are left out."""
    nodes: dict[tuple[Any, ...], Any] = {}
    detected = None
    for path, node in select(tree, everything):
        segs = path_segments(path)
        if segs not in nodes:
            nodes[segs] = node
        if detected is None:
            detected = conv.framework_of_node(node)
    leaves: list[Leaf] = []
    for path, node in select(tree, arrays):
        if jnp.issubdtype(node.dtype, jax.dtypes.prng_key):
            continue
        box = None
        if len(path) > 1 and isinstance(path[-1], BoxKey):
            box = _child(nodes.get(path_segments(path[:-2])), path[-2])
            if conv.is_rng_state(box):
                continue
        leaves.append(Leaf(tuple(path), node, box))
    if framework is None:
        framework = detected
    if framework is None:
        names = {str(leaf.segments[-1]) for leaf in leaves if leaf.segments}
        segments = {s for leaf in leaves for s in leaf.segments if isinstance(s, str)}
        framework = conv.framework_of_names(names, segments)
    siblings: dict[tuple[Any, ...], set[Any]] = {}
    for leaf in leaves:
        if leaf.segments:
            siblings.setdefault(leaf.segments[:-1], set()).add(leaf.segments[-1])
    for leaf in leaves:
        if not leaf.segments:
            continue
        parent_segs = leaf.segments[:-1]
        layer = nodes.get(parent_segs)
        leaf.kind, leaf.role = conv.classify(
            framework, layer, leaf.segments[-1], siblings[parent_segs]
        )
        typed = conv.typed_kind(layer)
        leaf.framework = typed[0] if typed is not None else framework
    return framework, leaves


def _child(node: Any, entry: Any) -> Any:
    """The child of `node` at key entry `entry` (the box around a boxed array)."""
    try:
        if isinstance(entry, DictKey):
            return node[entry.key]
        if isinstance(entry, SequenceKey):
            return node[entry.idx]
        if isinstance(entry, GetAttrKey):
            return getattr(node, entry.name)
    except (KeyError, IndexError, AttributeError, TypeError):
        return None
    return None


def flatten_source(tree: Any) -> tuple[str | None, dict[str, Any]]:
    """A pytree source as `(its framework, {path_str: array})`."""
    framework, leaves = model_leaves(tree)
    return framework, {leaf.name: leaf.node for leaf in leaves}


def convert_weight(
    leaf: Leaf, src: str | None, dst: str | None, ndim: int
) -> tuple[int, ...] | None:
    """The transpose that takes `leaf`'s weight from convention `src` to `dst`, if any."""
    if leaf.kind != "dense" or leaf.role != "weight":
        return None
    if src not in conv.WEIGHT_AXES or dst not in conv.WEIGHT_AXES:
        return None
    return conv.weight_perm(src, dst, ndim)


def vector_reshape(leaf: Leaf, shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """May a vector of `shape` be reshaped to `target` (only singleton axes differ)?"""
    if leaf.role not in conv.VECTOR_ROLES or shape == target:
        return False
    return [d for d in shape if d != 1] == [d for d in target if d != 1] and int(
        np.prod(shape)
    ) == int(np.prod(target))
