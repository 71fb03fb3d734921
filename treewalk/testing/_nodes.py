"""The custom nodes `treewalk.testing`'s trees are built of, and tree equality."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar, NamedTuple

import jax
import numpy as np

from .._frameworks import unboxed
from ._compare import is_key


class Pair(NamedTuple):
    """A namedtuple node (JAX names its children `.first`, `.second`)."""

    first: Any
    second: Any


@jax.tree_util.register_pytree_with_keys_class
class Keyed:
    """A custom node registered *with* keys: children `left`/`right` under `GetAttrKey`s."""

    left: Any
    right: Any

    def __init__(self, left: Any, right: Any) -> None:
        self.left, self.right = left, right

    def tree_flatten_with_keys(self) -> tuple[Any, None]:
        GetAttrKey = jax.tree_util.GetAttrKey
        return ((GetAttrKey("left"), self.left), (GetAttrKey("right"), self.right)), None

    def tree_flatten(self) -> tuple[tuple[Any, Any], None]:
        return (self.left, self.right), None

    @classmethod
    def tree_unflatten(cls, aux: None, children: Any) -> Keyed:
        return cls(*children)

    def __eq__(self, other: object) -> bool:
        return type(other) is Keyed and _eq(self.left, other.left) and _eq(self.right, other.right)

    __hash__: ClassVar[None] = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Keyed({self.left!r}, {self.right!r})"


@jax.tree_util.register_pytree_node_class
class Unkeyed:
    """A custom node registered *without* keys: children get `FlattenedIndexKey`s."""

    items: tuple[Any, ...]

    def __init__(self, *items: Any) -> None:
        self.items = tuple(items)

    def tree_flatten(self) -> tuple[tuple[Any, ...], None]:
        return self.items, None

    @classmethod
    def tree_unflatten(cls, aux: None, children: Any) -> Unkeyed:
        return cls(*children)

    def __eq__(self, other: object) -> bool:
        return type(other) is Unkeyed and _eq(self.items, other.items)

    __hash__: ClassVar[None] = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Unkeyed{self.items!r}"


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Static:
    """A static node (`jax.tree_util.register_static`): no children, part of the treedef."""

    tag: str


def _eq(a: Any, b: Any) -> bool:
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    if ta != tb:
        return False
    for x, y in zip(la, lb, strict=True):
        ux, uy = unboxed(x), unboxed(y)
        if ux is not x or uy is not y:  # a box that is a leaf (a penzai Parameter)
            if type(x) is not type(y) or getattr(x, "label", None) != getattr(y, "label", None):
                return False
            x, y = ux, uy
        if is_key(x) or is_key(y):  # typed PRNG keys: by their key data
            if not (is_key(x) and is_key(y)):
                return False
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        if isinstance(x, jax.Array | np.ndarray) or isinstance(y, jax.Array | np.ndarray):
            if not (np.shape(x) == np.shape(y) and np.array_equal(x, y, equal_nan=True)):
                return False
        elif x is not y and x != y:
            return False
    return True


def trees_equal(a: Any, b: Any) -> bool:
    """Same structure, and equal leaves (arrays compared by value, NaN equal to NaN)."""
    return _eq(a, b)


@functools.cache
def eqx_node() -> type | None:
    """`EqxNode`, an Equinox module with two children and a static field; `None` without
    Equinox. Made on first use: importing `treewalk.testing` imports no framework."""
    try:
        import equinox as eqx
    except ImportError:  # pragma: no cover
        return None

    class EqxNode(eqx.Module):
        """An Equinox module with two children and a static field."""

        a: Any
        b: Any
        tag: str = eqx.field(static=True, default="node")

    EqxNode.__module__, EqxNode.__qualname__ = "treewalk.testing", "EqxNode"
    return EqxNode
