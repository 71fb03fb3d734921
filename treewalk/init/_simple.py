"""Initialisers that need only the leaf's shape (and, for `orthogonal`, its output axis):
normal, uniform, truncated normal, orthogonal; the same values as `jax.nn.initializers`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .._core.errors import ArgumentError, InitError
from .._core.node import Node
from .._core.paths import show_path
from ._base import Initializer, integer, real
from ._layout import check_layout, output_axis


class normal(Initializer):
    """`N(0, stddev²)`, as `jax.nn.initializers.normal(stddev)` (same values, same key).

    !!! Example

        ```python
        import jax
        import jax.numpy as jnp
        import treewalk as tw

        emb = {"embedding": jnp.zeros((1000, 16))}
        emb = tw.replace(emb, tw.arrays, tw.init.normal(0.02), key=jax.random.key(0))
        assert abs(emb["embedding"].std() - 0.02) < 0.002
        ```
    """

    stddev: float

    def __init__(self, stddev: float = 1e-2) -> None:
        self.stddev = real("stddev", stddev)

    def sample(self, key: Any, shape: tuple[int, ...], dtype: Any, params: Any) -> jax.Array:
        return jax.random.normal(key, shape, dtype) * jnp.asarray(self.stddev, dtype)


class uniform(Initializer):
    """`U[0, scale)`, as `jax.nn.initializers.uniform(scale)` (same values, same key).

    For a symmetric interval, use `uniform(2 * a)` and subtract `a`, or
    [`tw.init.torch_default`][treewalk.init.torch_default] / `lecun_uniform`.

    !!! Example

        ```python
        import jax
        import jax.numpy as jnp
        import treewalk as tw

        x = tw.replace(jnp.zeros(100), tw.arrays, tw.init.uniform(0.5), key=jax.random.key(0))
        assert (0 <= x).all() and (x < 0.5).all()
        ```
    """

    scale: float

    def __init__(self, scale: float = 1e-2) -> None:
        self.scale = real("scale", scale)

    def sample(self, key: Any, shape: tuple[int, ...], dtype: Any, params: Any) -> jax.Array:
        return jax.random.uniform(key, shape, dtype) * jnp.asarray(self.scale, dtype)


class truncated_normal(Initializer):
    """Normal with standard deviation `stddev`, truncated to `[lower, upper]` standard
    deviations, as `jax.nn.initializers.truncated_normal` (same values, same key).

    !!! Example

        ```python
        import jax
        import jax.numpy as jnp
        import treewalk as tw

        x = tw.replace(jnp.zeros(1000), tw.arrays, tw.init.truncated_normal(0.1),
                       key=jax.random.key(0))
        assert abs(x).max() <= 0.2
        ```
    """

    stddev: float
    lower: float
    upper: float

    def __init__(self, stddev: float = 1e-2, lower: float = -2.0, upper: float = 2.0) -> None:
        self.stddev, self.lower, self.upper = (
            real("stddev", stddev),
            real("lower", lower),
            real("upper", upper),
        )
        if not self.lower < self.upper:
            raise ArgumentError(f"lower must be below upper; got {lower!r}, {upper!r}.")

    def sample(self, key: Any, shape: tuple[int, ...], dtype: Any, params: Any) -> jax.Array:
        x = jax.random.truncated_normal(key, self.lower, self.upper, shape, dtype)
        return x * jnp.asarray(self.stddev, dtype)


class orthogonal(Initializer):
    """A (semi-)orthogonal matrix times `scale`, the output axis read from the layer.

    The weight is viewed as a matrix with the output axis as columns and every other axis
    flattened into rows, as `jax.nn.initializers.orthogonal(scale, column_axis)`. The
    output axis comes from the layer's layout (axis 0 for Equinox's `(out, in)`, the last
    for linen/NNX/Haiku kernels), from `layout=`, or from `column_axis=`; otherwise it is
    an `InitError`. 1-D leaves and scalars are an `InitError` (no orthogonal vector).

    !!! Example

        ```python
        import equinox as eqx
        import jax
        import jax.numpy as jnp
        import treewalk as tw

        lin = eqx.nn.Linear(16, 4, key=jax.random.key(0))  # weight (4, 16)
        lin = tw.replace(lin, "weight", tw.init.orthogonal(), key=jax.random.key(1))
        assert jnp.allclose(lin.weight @ lin.weight.T, jnp.eye(4), atol=1e-5)
        ```
    """

    scale: float
    layout: str | None
    column_axis: int | None

    def __init__(
        self, scale: float = 1.0, *, layout: str | None = None, column_axis: int | None = None
    ) -> None:
        self.scale = real("scale", scale)
        self.layout = None if layout is None else check_layout(layout)
        self.column_axis = integer("column_axis", column_axis, positive=False)

    def params(self, n: Node) -> Any:
        shape = tuple(n.node.shape)
        if len(shape) < 2:
            raise InitError(
                f"{self!r} at {show_path(n.path)}: a leaf of shape {shape} cannot be "
                f"orthogonal (it needs at least 2 axes). Select weights only, e.g. "
                f"`tw.name('weight', 'kernel', 'w')`."
            )
        if self.column_axis is not None:
            return ("orth", self.column_axis % len(shape))
        axis = output_axis(n, self.layout)
        if axis is None:
            raise InitError(
                f"{self!r} at {show_path(n.path)}: cannot tell the output axis of the leaf of "
                f"shape {shape}. Pass `column_axis=` (e.g. -1 for (in, out), 0 for (out, in)) "
                f"or `layout=`."
            )
        return ("orth", axis)

    def sample(self, key: Any, shape: tuple[int, ...], dtype: Any, params: Any) -> jax.Array:
        return jax.nn.initializers.orthogonal(self.scale, params[1])(key, shape, dtype)
