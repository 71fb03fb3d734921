"""What kind of node an object is, learnt once per type: the flags the engine (and the
front-ends) test instead of `isinstance` (which on an Equinox module goes through its
slow `__getattribute__`)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.core import Tracer

from .._frameworks import registry

LEAF, PYTREE_BOX, LEAF_BOX, MUTABLE, ARRAY, TIE, KEYLESS = 1, 2, 4, 8, 16, 32, 64
BOX = PYTREE_BOX | LEAF_BOX
SHARED = LEAF_BOX | MUTABLE  # mutable objects: visited once, one output however reached
SPECIAL = BOX | SHARED
# KEYLESS: an array type whose instances never hold a PRNG key dtype (numpy's, and JAX's
# concrete array class), so that `tw.arrays` is decided by type.

#: Array leaves: jax/numpy arrays, tracers and `ShapeDtypeStruct`s.
ARRAY_TYPES: tuple[type, ...] = (jax.Array, np.ndarray, jax.ShapeDtypeStruct)


class TypeKinds(dict[type, int]):
    """`kinds[type(x)]`: the flags above, learnt from the first `x` of each type
    (`kinds.get(type(x))` or `kinds.learn(x)`)."""

    generation = -1

    def learn(self, x: Any) -> int:
        t = type(x)
        reg = registry
        f = 0
        if issubclass(t, ARRAY_TYPES) or issubclass(t, Tracer):
            f |= ARRAY | LEAF
            if t is np.ndarray or _is_array_impl(t):
                f |= KEYLESS
        elif _is_jax_leaf(x):
            f |= LEAF
        if reg.pytree_boxes and issubclass(t, reg.pytree_boxes):
            f = (f & ~LEAF) | PYTREE_BOX
        if reg.leaf_boxes and issubclass(t, reg.leaf_boxes):
            f |= LEAF_BOX
        if reg.mutable and issubclass(t, reg.mutable):
            f |= MUTABLE
        # A tie is an object reached by several paths that stays one object: a shared
        # mutable object, or an array (not a `ShapeDtypeStruct`: it may describe many).
        if f & SHARED or (f & ARRAY and t is not jax.ShapeDtypeStruct):
            f |= TIE
        self[t] = f
        return f


def _is_array_impl(t: type) -> bool:
    """Is `t` JAX's concrete array class, whose instances never hold a PRNG key dtype?
    (Typed keys are `PRNGKeyArray`s.) Found by name: the class is private to jaxlib."""
    return t.__name__ == "ArrayImpl" and t.__module__.split(".")[0] in ("jaxlib", "jax")


def _is_jax_leaf(x: Any) -> bool:
    """Is `x` a leaf to JAX? (`None`, an empty container and a static node are nodes
    without children, not leaves.) One level only: `x` may be a whole model."""
    return jax.tree_util.default_registry.flatten_one_level(x) is None


_kinds = TypeKinds()
#: `children.ChildKeys`' per-type knowledge, cleared with the flags.
child_kinds: dict[type, Any] = {}


def type_kinds() -> TypeKinds:
    """The per-type flags, valid for the framework types known now."""
    registry.refresh()
    if _kinds.generation != registry.generation:
        _kinds.clear()
        child_kinds.clear()
        _kinds.generation = registry.generation
    return _kinds


def flags_of(x: Any) -> int:
    """The flags of `x`'s type (learnt now if `x` is the first of its type)."""
    f = _kinds.get(type(x))
    return _kinds.learn(x) if f is None else f


def tie_id(x: Any, f: int) -> int | None:
    """`id(x)` if `x` (of flags `f`) is a tie (`TIE`), else `None`."""
    return id(x) if f & TIE else None
