"""The base of `tw.init`: `Initializer`, an `ArrayFn` whose draw may depend on the leaf's
place in the tree, drawn in batches of leaves with equal parameters.

Where the rest lives: `_layout` (weight layouts and fans), `_scaling` (variance
scaling, PyTorch's default), `_presets` (LeCun, He, Glorot), `_simple` (normal, uniform,
truncated normal, orthogonal), `_empirical`, `_stats` and `_probes` (data-driven init).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._core.errors import InitError
from .._core.node import Node
from .._core.paths import Path, show_path
from .._fns import ArrayFn


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

    A numpy leaf gets a numpy array of its own dtype: the values are drawn by JAX in the
    dtype JAX has for it (for `float64` while x64 is off, `float32`: float32 precision)
    and converted. With x64 on, a numpy `float64` leaf gets the values a JAX `float64`
    leaf gets with the same key.
    """

    needs_key = True

    def params(self, n: Node) -> Any:
        """What the draw at node `n` needs beyond shape, dtype and key (hashable; the
        fans, for fan-based initialisers). The default: `()`."""
        return ()

    def sample(self, key: Any, shape: tuple[int, ...], dtype: Any, params: Any) -> jax.Array:
        """The JAX array for one leaf, given `params(n)`."""
        raise NotImplementedError

    def draw(self, key: Any, shape: tuple[int, ...], dtype: Any) -> jax.Array:
        """`sample` with no per-leaf parameters."""
        return self.sample(key, shape, dtype, ())

    def prepare(self, n: Node) -> tuple[tuple[int, ...], Any, Any]:
        """`(shape, dtype, params)`; `params` is `None` for an empty leaf (nothing to draw)."""
        shape, dtype = _check_leaf(n, repr(self))
        if math.prod(shape) == 0 and shape:
            return shape, dtype, None
        return shape, dtype, self.params(n)

    def tw_signature(self, n: Node) -> Any:
        """`(shape, dtype, params, is numpy)`: leaves with equal ones are drawn in one batch."""
        return (*self.prepare(n), isinstance(n.node, np.ndarray))

    def tw_call(self, n: Node, key: Any) -> Any:
        """The new leaf at node `n` (what `replace` calls instead of `fn(path, node, key)`)."""
        shape, dtype, params = self.prepare(n)
        if params is None:
            return _zeros(shape, dtype, isinstance(n.node, np.ndarray | np.generic))
        return _Bound(self, params)(n.path, n.node, key)

    def __call__(self, path: Path, node: Any, key: Any) -> Any:
        return self.tw_call(Node(path, node, None, None), key)

    def tw_batched(self, nodes: Sequence[Any], keys: Any, signature: Any) -> Any:
        """Draw `len(nodes)` leaves of one `tw_signature` at once: `[n, *shape]`."""
        shape, dtype, params, numpy = signature
        if params is None:
            return _zeros((len(nodes), *shape), dtype, numpy)
        if keys is None:
            raise self._no_key(nodes[0].path)
        jax_dtype = jax.dtypes.canonicalize_dtype(dtype)
        out = jax.vmap(lambda k: self.sample(k, shape, jax_dtype, params))(keys)
        return np.asarray(out).astype(dtype) if numpy else out


def _zeros(shape: tuple[int, ...], dtype: Any, numpy: bool) -> Any:
    return np.zeros(shape, dtype) if numpy else jnp.zeros(shape, dtype)


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


def fmt_kwargs(**kw: Any) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kw.items())
