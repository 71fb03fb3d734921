"""The array leaves of a model as checkpoints see them: each with its path, the layer that
holds it, the framework convention it follows, and its kind and role (see
`treewalk._frameworks.checkpoint`). Shared by `tw.load` (the destination, and a pytree
source) and `tw.export`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import keystr

from .._core.engine import Leaves, Pass
from .._core.errors import ArgumentError
from .._core.node import Node
from .._core.paths import Path, path_segments, path_str
from .._frameworks import checkpoint as conv
from .._select.atoms import arrays


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
        "layer_type",
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
        #: The name of the type of the module holding the array (`""` for a dict).
        self.layer_type = ""

    def name_in(self, convention: str | None) -> str | None:
        """This leaf's path with its last segment named as `convention` names its role."""
        if convention not in conv.NAMES or not self.kind or not self.segments:
            return None
        name = conv.NAMES[convention][self.kind].get(self.role)
        if name is None:
            return None
        return "/".join([*map(str, self.segments[:-1]), name])


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
    that holds it, as the pass sees them. PRNG keys and NNX RNG state are left out."""
    detected: list[str] = []
    leaves: list[Leaf] = []
    layers: list[Any] = []
    m = arrays.compile()

    def at_node(n: Node, state: None) -> None:
        if not detected:
            found = conv.framework_of_node(n.node)
            if found is not None:
                detected.append(found)

    def at_leaf(n: Node, state: None) -> None:
        if not m(n) or jnp.issubdtype(n.node.dtype, jax.dtypes.prng_key):
            return
        if conv.is_rng_state(n.outer):
            return
        leaves.append(Leaf(n.path, n.node, n.outer))
        layers.append(None if n.parent is None else n.parent.node)

    Pass(Leaves(at_leaf, at_node), rebuild=False).run(tree)
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
    for leaf, layer in zip(leaves, layers, strict=True):
        if not leaf.segments:
            continue
        leaf.kind, leaf.role, leaf.layout, leaf.family = conv.classify(
            framework, layer, leaf.segments[-1], siblings[leaf.segments[:-1]]
        )
        typed = conv.typed_kind(layer)
        leaf.framework = typed.framework if typed is not None else framework
        if conv.framework_of_node(layer) is not None:
            leaf.layer_type = type(layer).__name__
    return framework, leaves


def flatten_source(
    tree: Any,
) -> tuple[str | None, dict[str, Any], dict[str, tuple[str, conv.Layout]]]:
    """A pytree source as `(its framework, {path_str: array}, {path_str: (family,
    layout)})`, the last for the weights whose layer type says their layout."""
    framework, leaves = model_leaves(tree)
    layouts = {leaf.name: (leaf.family, leaf.layout) for leaf in leaves if leaf.layout}
    return framework, {leaf.name: leaf.node for leaf in leaves}, layouts


def vector_reshape(leaf: Leaf, shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """May a vector of `shape` be reshaped to `target` (only singleton axes differ)?"""
    if leaf.role not in conv.VECTOR_ROLES or shape == target:
        return False
    return [d for d in shape if d != 1] == [d for d in target if d != 1] and int(
        np.prod(shape)
    ) == int(np.prod(target))
