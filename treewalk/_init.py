"""The base of `tw.init`: `Initializer`, an `ArrayFn` whose draw may depend on the leaf's
place in the tree, drawn in batches of leaves with equal parameters.

Where the rest lives: `_init_layout` (weight layouts and fans), `_init_scaling`
(variance scaling, LeCun/He/Glorot, PyTorch's default), `_init_simple` (normal, uniform,
truncated normal, orthogonal), `_empirical` (data-driven init).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._errors import ArgumentError, InitError
from ._helpers import ArrayFn
from ._node import Node
from ._path import Path, show_path


def _check_leaf(n: Node, name: str) -> tuple[tuple[int, ...], Any]:
    node = n.node
    shape, dtype = getattr(node, "shape", None), getattr(node, "dtype", None)
    if shape is None or dtype is None:
        raise InitError(
            f"{name} needs an array leaf at {show_path(n.path)}, got {type(node).__name__}. "
            f"Select array leaves only (e.g. `sel & tw.arrays`)."
        )
    dtype = np.dtype(dtype) if not hasattr(dtype, "kind") else dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        kind = "complex" if jnp.issubdtype(dtype, jnp.complexfloating) else "non-float"
        raise InitError(
            f"{name} draws real floating-point values, but the leaf at {show_path(n.path)} "
            f"has {kind} dtype {dtype} (shape {tuple(shape)}). Leave it out of the selector "
            f"(e.g. `sel & tw.predicate(lambda p, x: jnp.issubdtype(x.dtype, jnp.floating))`)"
            f" or cast it first."
        )
    return tuple(shape), dtype


class Initializer(ArrayFn):
    """Base of `tw.init`: an `ArrayFn` whose draw may depend on the leaf's place in the tree.

    Subclasses define `params(n) -> hashable` (what the draw needs beyond shape, dtype and
    key; the fans for fan-based initialisers) and `sample(key, shape, dtype, params)`.
    Leaves with equal `(shape, dtype, params)` are drawn in one vectorised call.
    """

    needs_key = True

    def params(self, n: Node) -> Any:
        return ()

    def sample(self, key: Any, shape: tuple[int, ...], dtype: Any, params: Any) -> jax.Array:
        raise NotImplementedError

    def draw(self, key: Any, shape: tuple[int, ...], dtype: Any) -> jax.Array:
        return self.sample(key, shape, dtype, ())

    def prepare(self, n: Node) -> tuple[tuple[int, ...], Any, Any]:
        shape, dtype = _check_leaf(n, repr(self))
        if math.prod(shape) == 0 and shape:
            return shape, dtype, None  # empty: nothing to draw
        return shape, dtype, self.params(n)

    def tw_signature(self, n: Node) -> Any:
        return self.prepare(n)

    def tw_call(self, n: Node, key: Any) -> Any:
        shape, dtype, params = self.prepare(n)
        if params is None:
            return jnp.zeros(shape, dtype)
        return _Bound(self, params)(n.path, n.node, key)

    def __call__(self, path: Path, node: Any, key: Any) -> Any:
        return self.tw_call(Node(path, node, None, None), key)

    def tw_batched(self, nodes: Sequence[Any], keys: Any, signature: Any) -> jax.Array:
        shape, dtype, params = signature
        if params is None:
            return jnp.zeros((len(nodes), *shape), dtype)
        if keys is None:
            raise ArgumentError(
                f"{self!r} draws random values and needs a key: pass key=jax.random.key(0) "
                f"to tw.replace (path {show_path(nodes[0].path)})."
            )
        return jax.vmap(lambda k: self.sample(k, shape, dtype, params))(keys)


@dataclasses.dataclass(frozen=True, eq=True)
class _Bound(ArrayFn):
    """An initialiser with its per-leaf parameters fixed: a plain `ArrayFn` (hashable, so
    sharded draws compile once per distinct parameters)."""

    init: Initializer
    params: Any
    needs_key = True

    def draw(self, key: Any, shape: tuple[int, ...], dtype: Any) -> jax.Array:
        return self.init.sample(key, shape, dtype, self.params)

    def __repr__(self) -> str:
        return repr(self.init)


def _fmt(**kw: Any) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kw.items())
