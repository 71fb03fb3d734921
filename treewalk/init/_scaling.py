"""Fan-based initialisers: variance scaling and PyTorch's default for `Linear`/`Conv`.
Fans come from the layer (`_layout`); the named forms of variance scaling (LeCun,
He, Glorot) are in `_presets`."""

from __future__ import annotations

import inspect
import math
from typing import Any, Literal

import jax
import jax.numpy as jnp

from .._core.errors import ArgumentError, InitError
from .._core.node import Node
from .._core.paths import show_path
from ._base import Initializer, call_repr, integer, real
from ._layout import check_layout, find_fans

Mode = Literal["fan_in", "fan_out", "fan_avg"]
Distribution = Literal["truncated_normal", "normal", "uniform"]

# std of a standard normal truncated to [-2, 2]
_TRUNC_STD = 0.87962566103423978


class variance_scaling(Initializer):
    """Variance scaling with fans read from the layer: `Var = scale / n`.

    `n` is the fan-in, the fan-out or their mean (`mode`). For a weight the fans come from
    its shape read in its layer's layout; for a bias they are **its layer's weight's**
    fans (a bias's own length is the layer's fan-out, which is what Keras wrongly uses).
    The same per-leaf draws as `jax.nn.initializers.variance_scaling` on a `(*k, in, out)`
    kernel with the same key.

    Layouts known without help: Equinox `Linear` `(out, in)` and `Conv`/`ConvTranspose`
    `(out, in, *k)`; linen/NNX `kernel` and Haiku `w`: `(*k, in, out)`. A 1-D leaf that is
    not the bias of such a layer (a norm scale), a scalar, or a weight of an unknown layout
    is a `tw.InitError` that says how to fix the call. Integer, boolean and complex leaves
    are an `InitError`; zero-size leaves are returned as empty arrays (nothing to draw).

    **Arguments:**

    - `scale`: the variance numerator (1 for LeCun/Glorot, 2 for He).
    - `mode`: `"fan_in"`, `"fan_out"` or `"fan_avg"`.
    - `distribution`: `"truncated_normal"` (at two standard deviations, rescaled so the
      variance is exact), `"normal"` or `"uniform"`.
    - `layout`: the weight layout to use instead of the one the layer's type gives, e.g.
      `"oi"` `(out, in)`, `"kio"` `(*k, in, out)`, `"oik"` `(out, in, *k)`.
    - `fan_in`, `fan_out`: fixed fans, used instead of computed ones.

    **Returns:**

    A `fn` for `tw.replace` (needs `key=`).

    !!! Example

        ```python
        import equinox as eqx
        import jax
        import treewalk as tw

        mlp = eqx.nn.MLP(8, 1, 512, 1, key=jax.random.key(0))
        init = tw.init.variance_scaling(2.0, "fan_in", "normal")
        mlp = tw.replace(mlp, tw.arrays, init, key=jax.random.key(1))
        # the bias of the first layer has the variance of its fan-in 8, not of its length 512
        assert 0.3 < mlp.layers[0].bias.std() < 0.7
        ```
    """

    scale: float
    mode: Mode
    distribution: Distribution
    layout: str | None
    fan_in: int | None
    fan_out: int | None
    #: `(name, parameters)` of the `tw.init` function that made it (`he_normal`, ...), for
    #: the repr; not part of equality (`he_normal()` is `variance_scaling(2.0)`).
    preset: tuple[str, tuple[inspect.Parameter, ...]] | None = None

    def __init__(
        self,
        scale: float = 1.0,
        mode: Mode = "fan_in",
        distribution: Distribution = "truncated_normal",
        *,
        layout: str | None = None,
        fan_in: int | None = None,
        fan_out: int | None = None,
    ) -> None:
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ArgumentError(f"mode must be 'fan_in', 'fan_out' or 'fan_avg'; got {mode!r}.")
        if distribution not in ("truncated_normal", "normal", "uniform"):
            raise ArgumentError(
                f"distribution must be 'truncated_normal', 'normal' or 'uniform'; got "
                f"{distribution!r}."
            )
        self.scale = real("scale", scale)
        if not self.scale > 0:
            raise ArgumentError(f"scale must be positive; got {scale!r}.")
        self.mode, self.distribution = mode, distribution
        self.layout = None if layout is None else check_layout(layout)
        self.fan_in, self.fan_out = integer("fan_in", fan_in), integer("fan_out", fan_out)

    def fans(self, n: Node) -> tuple[int, int]:
        fi, fo = self.fan_in, self.fan_out
        need_in = self.mode in ("fan_in", "fan_avg") and fi is None
        need_out = self.mode in ("fan_out", "fan_avg") and fo is None
        if need_in or need_out:
            found_in, found_out = find_fans(n, self.layout, repr(self))
            fi = found_in if fi is None else fi
            fo = found_out if fo is None else fo
        return (fi or 0), (fo or 0)

    def params(self, n: Node) -> Any:
        fi, fo = self.fans(n)
        denom = {"fan_in": fi, "fan_out": fo, "fan_avg": (fi + fo) / 2}[self.mode]
        if denom <= 0:
            raise InitError(
                f"{self!r} at {show_path(n.path)}: the {self.mode} is 0 (fans in/out: "
                f"{fi}/{fo}); a zero-size layer has no variance to scale. Pass fan_in=/fan_out=."
            )
        return ("vs", fi, fo, self.scale / denom)

    def sample(self, key: Any, shape: tuple[int, ...], dtype: Any, params: Any) -> jax.Array:
        variance = params[3]
        if self.distribution == "truncated_normal":
            std = math.sqrt(variance) / _TRUNC_STD
            return jax.random.truncated_normal(key, -2, 2, shape, dtype) * jnp.asarray(std, dtype)
        if self.distribution == "normal":
            return jax.random.normal(key, shape, dtype) * jnp.asarray(math.sqrt(variance), dtype)
        lim = jnp.asarray(math.sqrt(3 * variance), dtype)
        return jax.random.uniform(key, shape, dtype, -1) * lim

    def __repr__(self) -> str:
        if self.preset is None:
            return super().__repr__()
        name, params = self.preset
        return call_repr(f"tw.init.{name}", params, [getattr(self, p.name) for p in params])


class torch_default(Initializer):
    """PyTorch's default for `Linear`/`Conv`: `U(-1/√fan_in, 1/√fan_in)` for weight and bias.

    PyTorch draws the weight with `kaiming_uniform_(a=√5)`, whose bound
    `√(6 / ((1 + a²) fan_in))` is `1/√fan_in`, and the bias from `U(-1/√fan_in, 1/√fan_in)`
    with the *weight's* fan-in. Here a bias's fan-in is likewise its layer's (Equinox
    `Linear`/`Conv` use the same bounds). This is what Keras gets wrong for biases
    (keras#20873): it uses the bias's length, the layer's fan-out.

    **Arguments:**

    - `layout`, `fan_in`: as for [`tw.init.variance_scaling`][treewalk.init.variance_scaling].

    !!! Example

        ```python
        import equinox as eqx
        import jax
        import treewalk as tw

        mlp = eqx.nn.MLP(4, 1, 1000, 1, key=jax.random.key(0))
        mlp = tw.replace(mlp, tw.arrays, tw.init.torch_default(), key=jax.random.key(1))
        assert abs(mlp.layers[0].bias).max() <= 0.5   # 1 / sqrt(4), not 1 / sqrt(1000)
        assert abs(mlp.layers[1].weight).max() <= 1000 ** -0.5
        ```
    """

    layout: str | None
    fan_in: int | None

    def __init__(self, *, layout: str | None = None, fan_in: int | None = None) -> None:
        self.layout = None if layout is None else check_layout(layout)
        self.fan_in = integer("fan_in", fan_in)

    def params(self, n: Node) -> Any:
        fi = self.fan_in
        if fi is None:
            fi = find_fans(n, self.layout, repr(self))[0]
        if not fi:
            raise InitError(
                f"{self!r} at {show_path(n.path)}: the layer's fan-in is 0. Pass fan_in=."
            )
        return ("fan_in", fi)

    def sample(self, key: Any, shape: tuple[int, ...], dtype: Any, params: Any) -> jax.Array:
        lim = jnp.asarray(1 / math.sqrt(params[1]), dtype)
        return jax.random.uniform(key, shape, dtype, -1) * lim
