"""The named forms of variance scaling: LeCun, He (Kaiming) and Glorot (Xavier), normal
and uniform, each with a `mode=` (which fan) that defaults to the usual one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._base import parameters
from ._scaling import Distribution, Mode, variance_scaling


def _preset(
    fn: Callable[..., Any],
    scale: float,
    distribution: Distribution,
    mode: Mode,
    layout: str | None,
    fan_in: int | None,
    fan_out: int | None,
) -> variance_scaling:
    """`variance_scaling(scale, mode, distribution, ...)` whose repr is a call of `fn`."""
    init = variance_scaling(
        scale, mode, distribution, layout=layout, fan_in=fan_in, fan_out=fan_out
    )
    init.preset = fn.__name__, parameters(fn)
    return init


def lecun_normal(
    *,
    mode: Mode = "fan_in",
    layout: str | None = None,
    fan_in: int | None = None,
    fan_out: int | None = None,
) -> variance_scaling:
    """LeCun normal: truncated normal with variance `1 / fan_in`, fans from the layer.

    `variance_scaling(1.0, "fan_in", "truncated_normal", ...)`; the arguments are those of
    [`tw.init.variance_scaling`][treewalk.init.variance_scaling]. Unlike Flax's
    `lecun_normal` as a `bias_init` (which crashes on a 1-D shape), a bias gets its layer's
    fan-in.

    **Arguments:**

    - `mode`: which fan the variance divides by: `"fan_in"`, `"fan_out"` or `"fan_avg"`
      (their mean); default `"fan_in"`.
    - `layout`, `fan_in`, `fan_out`: as for
      [`tw.init.variance_scaling`][treewalk.init.variance_scaling].

    **Returns:**

    A `variance_scaling` `fn` for `tw.replace` (needs `key=`).

    !!! Example

        ```python
        import jax
        import jax.numpy as jnp
        import treewalk as tw

        params = {"dense": {"kernel": jnp.zeros((256, 4)), "bias": jnp.zeros(4)}}
        params = tw.replace(params, tw.arrays, tw.init.lecun_normal(), key=jax.random.key(0))
        assert abs(params["dense"]["kernel"].std() - 1 / 16) < 0.01  # 1 / sqrt(256)
        ```
    """
    return _preset(lecun_normal, 1.0, "truncated_normal", mode, layout, fan_in, fan_out)


def lecun_uniform(
    *,
    mode: Mode = "fan_in",
    layout: str | None = None,
    fan_in: int | None = None,
    fan_out: int | None = None,
) -> variance_scaling:
    """LeCun uniform: `U(-√(3/fan_in), √(3/fan_in))`, fans from the layer.

    `variance_scaling(1.0, "fan_in", "uniform", ...)`.

    **Arguments:**

    - `mode`: which fan the variance divides by: `"fan_in"`, `"fan_out"` or `"fan_avg"`
      (their mean); default `"fan_in"`.
    - `layout`, `fan_in`, `fan_out`: as for
      [`tw.init.variance_scaling`][treewalk.init.variance_scaling].

    **Returns:**

    A `variance_scaling` `fn` for `tw.replace` (needs `key=`).

    !!! Example

        ```python
        import jax
        import jax.numpy as jnp
        import treewalk as tw

        w = tw.replace(jnp.zeros((300, 3)), tw.arrays, tw.init.lecun_uniform(layout="io"),
                       key=jax.random.key(0))
        assert abs(w).max() <= 0.1  # sqrt(3 / 300)
        ```
    """
    return _preset(lecun_uniform, 1.0, "uniform", mode, layout, fan_in, fan_out)


def he_normal(
    *,
    mode: Mode = "fan_in",
    layout: str | None = None,
    fan_in: int | None = None,
    fan_out: int | None = None,
) -> variance_scaling:
    """He (Kaiming) normal: truncated normal with variance `2 / fan_in`, fans from the layer.

    `variance_scaling(2.0, "fan_in", "truncated_normal", ...)`, as
    `jax.nn.initializers.he_normal`.

    **Arguments:**

    - `mode`: which fan the variance divides by: `"fan_in"`, `"fan_out"` or `"fan_avg"`
      (their mean); default `"fan_in"`.
    - `layout`, `fan_in`, `fan_out`: as for
      [`tw.init.variance_scaling`][treewalk.init.variance_scaling].

    **Returns:**

    A `variance_scaling` `fn` for `tw.replace` (needs `key=`).

    !!! Example

        ```python
        import jax
        import treewalk as tw
        from flax import nnx

        model = nnx.Linear(512, 8, rngs=nnx.Rngs(0))
        model = tw.replace(model, "kernel", tw.init.he_normal(), key=jax.random.key(0))
        assert abs(model.kernel[...].std() - (2 / 512) ** 0.5) < 0.01
        ```
    """
    return _preset(he_normal, 2.0, "truncated_normal", mode, layout, fan_in, fan_out)


def he_uniform(
    *,
    mode: Mode = "fan_in",
    layout: str | None = None,
    fan_in: int | None = None,
    fan_out: int | None = None,
) -> variance_scaling:
    """He (Kaiming) uniform: `U(-√(6/fan_in), √(6/fan_in))`, fans from the layer.

    **Arguments:**

    - `mode`: which fan the variance divides by: `"fan_in"`, `"fan_out"` or `"fan_avg"`
      (their mean); default `"fan_in"`.
    - `layout`, `fan_in`, `fan_out`: as for
      [`tw.init.variance_scaling`][treewalk.init.variance_scaling].

    **Returns:**

    A `variance_scaling` `fn` for `tw.replace` (needs `key=`).

    !!! Example

        ```python
        import equinox as eqx
        import jax
        import treewalk as tw

        conv = eqx.nn.Conv2d(6, 4, 3, key=jax.random.key(0))  # weight (4, 6, 3, 3)
        conv = tw.replace(conv, "weight", tw.init.he_uniform(), key=jax.random.key(1))
        assert abs(conv.weight).max() <= (6 / (6 * 9)) ** 0.5
        ```
    """
    return _preset(he_uniform, 2.0, "uniform", mode, layout, fan_in, fan_out)


def glorot_normal(
    *,
    mode: Mode = "fan_avg",
    layout: str | None = None,
    fan_in: int | None = None,
    fan_out: int | None = None,
) -> variance_scaling:
    """Glorot (Xavier) normal: truncated normal with variance `2 / (fan_in + fan_out)`.

    **Arguments:**

    - `mode`: which fan the variance divides by: `"fan_in"`, `"fan_out"` or `"fan_avg"`
      (their mean); default `"fan_avg"`.
    - `layout`, `fan_in`, `fan_out`: as for
      [`tw.init.variance_scaling`][treewalk.init.variance_scaling].

    **Returns:**

    A `variance_scaling` `fn` for `tw.replace` (needs `key=`).

    !!! Example

        ```python
        import jax
        import jax.numpy as jnp
        import treewalk as tw

        tree = {"mlp/~/linear_0": {"w": jnp.zeros((100, 300)), "b": jnp.zeros(300)}}
        tree = tw.replace(tree, tw.arrays, tw.init.glorot_normal(), key=jax.random.key(0))
        assert abs(tree["mlp/~/linear_0"]["w"].std() - (2 / 400) ** 0.5) < 0.005
        ```
    """
    return _preset(glorot_normal, 1.0, "truncated_normal", mode, layout, fan_in, fan_out)


def glorot_uniform(
    *,
    mode: Mode = "fan_avg",
    layout: str | None = None,
    fan_in: int | None = None,
    fan_out: int | None = None,
) -> variance_scaling:
    """Glorot (Xavier) uniform: `U(-√(6/(fan_in+fan_out)), √(6/(fan_in+fan_out)))`.

    **Arguments:**

    - `mode`: which fan the variance divides by: `"fan_in"`, `"fan_out"` or `"fan_avg"`
      (their mean); default `"fan_avg"`.
    - `layout`, `fan_in`, `fan_out`: as for
      [`tw.init.variance_scaling`][treewalk.init.variance_scaling].

    **Returns:**

    A `variance_scaling` `fn` for `tw.replace` (needs `key=`).

    !!! Example

        ```python
        import jax
        import jax.numpy as jnp
        import treewalk as tw

        tree = {"kernel": jnp.zeros((10, 14))}
        tree = tw.replace(tree, "kernel", tw.init.glorot_uniform(), key=jax.random.key(0))
        assert abs(tree["kernel"]).max() <= 0.5  # sqrt(6 / 24)
        ```
    """
    return _preset(glorot_uniform, 1.0, "uniform", mode, layout, fan_in, fan_out)
