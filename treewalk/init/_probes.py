"""Probes for `tw.init.empirical`: an identity on a layer's output whose backward pass
hands back that output's statistics, and a gradient scale for the backward pass.

A probe sits on a selected layer's output. Its forward pass is the identity; its backward
pass hands back, as the "gradients" of dummy inputs, the sum of squares of the output, the
per-feature sums of the output (last axis), the sum of squares of the output's cotangent
and the number of elements. Summed by JAX over `vmap`ped and repeated calls, these give
exact batch statistics from one `jax.grad`, inside `jit` and `vmap`. A selected layer's
weights are multiplied by its scale `s` when it is called, so one compiled function
measures the model for any scales. What the probes read and record during one
measurement is a `ProbeState` that the measurement makes and every probe holds.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from .._core.errors import InitError
from .._core.paths import Path, show_path
from .._frameworks.layouts import wrapper_class
from .._ops.replace import replace


@jax.custom_vjp
def _probe(y: Any, t: Any, m: Any, u: Any, c: Any) -> Any:
    return y


def _probe_fwd(y: Any, t: Any, m: Any, u: Any, c: Any) -> Any:
    return y, (y, m)


def _probe_bwd(res: Any, g: Any) -> Any:
    # `m` is a per-feature shift (the previous pass's mean): sums of `y - m` keep the
    # centred variance exact when the mean is large.
    y, m = res
    g32 = g.astype(jnp.float32)
    d = y.astype(jnp.float32) - m
    count = jnp.sum(jnp.where(jnp.isnan(g32), 1.0, 1.0))
    feature_sums = jnp.sum(d.reshape(-1, m.shape[0]), axis=0)
    return (g, jnp.sum(d * d), feature_sums, jnp.sum(g32 * g32), count)


_probe.defvjp(_probe_fwd, _probe_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _grad_scale(y: Any, b: float) -> Any:
    return y


def _grad_scale_fwd(y: Any, b: float) -> Any:
    return y, None


def _grad_scale_bwd(b: float, res: Any, g: Any) -> Any:
    return (g * jnp.asarray(b, g.dtype),)


_grad_scale.defvjp(_grad_scale_fwd, _grad_scale_bwd)


class ProbeState:
    """What one measurement hands its probes while `loss_fn` is traced, and what tracing
    saw. `Measure` makes one and every probe of its model holds it (`Probe`), so nothing
    is shared between measurements (two can run at once, or one inside another).

    - `inputs`: `None` (probes are the identity), `"shapes"` (record the number of
      features of each output) or `(s, t, m, u, c)` (scales, dummy inputs, shifts).
    - `params`: the selector of the leaves scaled by `s`, or `None`.
    - `order`: the probes' indices in the order the layers were called.
    - `features`: the number of features (last axis) of each probed output.
    """

    def __init__(self) -> None:
        self.inputs: Any = None
        self.params: Any = None
        self.order: list[int] = []
        self.features: dict[int, int] = {}


@dataclasses.dataclass(frozen=True, eq=False)
class Probe:
    """What a `Probed` layer holds (a static field): its number and its measurement's
    state. Compared and hashed by identity."""

    state: ProbeState
    index: int

    def __repr__(self) -> str:
        return f"Probe({self.index})"


def _scaled(layer: Any, c: Any, params: Any) -> Any:
    return replace(layer, params, lambda p, x, k: times(x, c), strict=False)


def times(x: Any, c: Any) -> Any:
    """`x * c` in `x`'s dtype for float arrays; anything else as it is."""
    dtype = getattr(x, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        return x
    return (x * c).astype(dtype)


def _tap(probe: Probe, layer: Any, args: Any, kwargs: Any) -> Any:
    state, index = probe.state, probe.index
    inputs = state.inputs
    if inputs is None:
        return layer(*args, **kwargs)
    if isinstance(inputs, str):  # "shapes"
        y = layer(*args, **kwargs)
        state.features[index] = int(y.shape[-1]) if getattr(y, "ndim", 0) else 1
        return y
    s, t, m, u, c = inputs
    if state.params is not None:
        layer = _scaled(layer, s[index], state.params)
    y = layer(*args, **kwargs)
    if not isinstance(y, jax.Array):
        raise InitError(
            f"tw.init.empirical: selected layer #{index} returned a "
            f"{type(y).__name__}, not an array. Select layers that return one array "
            f"(Linear, Conv, ...)."
        )
    if index not in state.order:
        state.order.append(index)
    return _probe(y, t[index], m[index], u[index], c[index])


def _grad_scaled(b: float, layer: Any, args: Any, kwargs: Any) -> Any:
    return _grad_scale(layer(*args, **kwargs), b)


_PROBED_DOC = "A layer whose output is measured by `tw.init.empirical` (made and removed there)."
_GRAD_SCALED_DOC = """A layer whose output gradient is multiplied by `grad_scale` in the backward
pass (the forward pass is the layer's own). Made by `tw.init.empirical`."""


def probed(path: Path, layer: Any, state: ProbeState, index: int) -> Any:
    """`layer` with probe number `index` of the measurement `state` on its output, as a
    module of its own framework."""
    cls = wrapper_class(layer, "Probed", "probe", _tap, _PROBED_DOC)
    return _not_a_module(path, layer) if cls is None else cls(layer, Probe(state, index))


def grad_scaled(path: Path, layer: Any, b: float) -> Any:
    """`layer` with its output's gradient multiplied by `b` in the backward pass."""
    cls = wrapper_class(layer, "GradScaled", "grad_scale", _grad_scaled, _GRAD_SCALED_DOC)
    return _not_a_module(path, layer) if cls is None else cls(layer, b)


def _not_a_module(path: Path, layer: Any) -> Any:
    raise InitError(
        f"tw.init.empirical: the selected node at {show_path(path)} is a "
        f"{type(layer).__name__}, not an Equinox or Flax NNX module. Select layers (e.g. "
        f"`eqx.nn.Linear`, `nnx.Linear`) with the `layers` selector."
    )
