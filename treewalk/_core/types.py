"""The types in treewalk's signatures, named once so that type checkers and the docs
know them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

#: Any JAX pytree: a container of containers and leaves (dicts, lists, tuples, Equinox
#: and Flax NNX modules, `nnx.State`, registered nodes) or a single leaf. Spelled `Any`
#: for type checkers: a pytree's structure is not something they can check.
PyTree: TypeAlias = Any

#: JAX's `is_leaf`: `is_leaf(node) -> bool`, true where flattening stops (or `None`).
IsLeaf: TypeAlias = Callable[[Any], bool] | None
