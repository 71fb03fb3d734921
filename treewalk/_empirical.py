"""Empirical init: rescale layers so activations and gradients are O(1) on dummy data."""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._errors import ArgumentError, InitError
from ._frameworks import WEIGHT_NAMES
from ._path import Path, path_str, show_path
from ._selectors import as_selector, name

# ------------------------------------------------------------------------------ probes
#
# A probe sits on a selected layer's output. Its forward pass is the identity; its
# backward pass hands back, as the "gradients" of dummy inputs, the sum of squares of the
# output, the per-feature sums of the output (last axis), the sum of squares of the
# output's cotangent and the number of elements. Summed by JAX over `vmap`ped and
# repeated calls, these give exact batch statistics from one `jax.grad`, inside `jit`
# and `vmap`. A selected layer's weights are multiplied by its scale `s` when it is
# called, so one compiled function measures the model for any scales.


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


class _State:
    """The probes' inputs during one traced measurement, and what tracing saw."""

    def __init__(self) -> None:
        self.inputs: Any = None
        self.params: Any = None
        self.order: list[int] = []
        self.features: dict[int, int] = {}


_STATE = _State()


def _scaled(layer: Any, c: Any, params: Any) -> Any:
    from ._replace import replace

    return replace(layer, params, lambda p, x, k: _times(x, c), strict=False)


def _times(x: Any, c: Any) -> Any:
    """`x * c` in `x`'s dtype for float arrays; anything else as it is."""
    dtype = getattr(x, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        return x
    return (x * c).astype(dtype)


def _tap(index: int, layer: Any, args: Any, kwargs: Any) -> Any:
    inputs = _STATE.inputs
    if inputs is None:
        return layer(*args, **kwargs)
    if inputs == "shapes":
        y = layer(*args, **kwargs)
        _STATE.features[index] = int(y.shape[-1]) if getattr(y, "ndim", 0) else 1
        return y
    s, t, m, u, c = inputs
    if _STATE.params is not None:
        layer = _scaled(layer, s[index], _STATE.params)
    y = layer(*args, **kwargs)
    if not isinstance(y, jax.Array):
        raise InitError(
            f"tw.init.empirical: selected layer #{index} returned a "
            f"{type(y).__name__}, not an array. Select layers that return one array "
            f"(Linear, Conv, ...)."
        )
    if index not in _STATE.order:
        _STATE.order.append(index)
    return _probe(y, t[index], m[index], u[index], c[index])


def _wrappers() -> list[tuple[type, Callable[[Any, int], Any], Callable[[Any, float], Any]]]:
    """`(module base, probe wrapper, grad-scale wrapper)` for the frameworks imported."""
    out = []
    eqx = sys.modules.get("equinox")
    if eqx is not None:
        out.append((eqx.Module, *_eqx_wrappers(eqx)))
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None:
        out.append((nnx.Module, *_nnx_wrappers(nnx)))
    return out


_CACHE: dict[str, Any] = {}


def _named(*classes: type) -> Any:
    for cls in classes:
        cls.__qualname__ = cls.__name__
        cls.__module__ = "treewalk.init"
    return classes


def _eqx_wrappers(eqx: Any) -> tuple[Any, Any]:
    if "eqx" not in _CACHE:

        class Probed(eqx.Module):
            layer: Any
            index: int = eqx.field(static=True)

            def __call__(self, *args: Any, **kwargs: Any) -> Any:
                return _tap(self.index, self.layer, args, kwargs)

        class GradScaled(eqx.Module):
            """A layer whose output gradient is multiplied by `grad_scale` in the backward
            pass (the forward pass is the layer's own). Made by `tw.init.empirical`."""

            layer: Any
            grad_scale: float = eqx.field(static=True)

            def __call__(self, *args: Any, **kwargs: Any) -> Any:
                return _grad_scale(self.layer(*args, **kwargs), self.grad_scale)

        _CACHE["eqx"] = _named(Probed, GradScaled)
    return _CACHE["eqx"]


def _nnx_wrappers(nnx: Any) -> tuple[Any, Any]:
    if "nnx" not in _CACHE:

        class Probed(nnx.Module):
            def __init__(self, layer: Any, index: int) -> None:
                self.layer, self.index = layer, index

            def __call__(self, *args: Any, **kwargs: Any) -> Any:
                return _tap(self.index, self.layer, args, kwargs)

        class GradScaled(nnx.Module):
            """A layer whose output gradient is multiplied by `grad_scale` in the backward
            pass (the forward pass is the layer's own). Made by `tw.init.empirical`."""

            def __init__(self, layer: Any, grad_scale: float) -> None:
                self.layer, self.grad_scale = layer, grad_scale

            def __call__(self, *args: Any, **kwargs: Any) -> Any:
                return _grad_scale(self.layer(*args, **kwargs), self.grad_scale)

        _CACHE["nnx"] = _named(Probed, GradScaled)
    return _CACHE["nnx"]


def _wrapper_for(path: Path, layer: Any, which: int) -> Any:
    for base, probe, scaled in _wrappers():
        if isinstance(layer, base):
            return (probe, scaled)[which]
    raise InitError(
        f"tw.init.empirical: the selected node at {show_path(path)} is a "
        f"{type(layer).__name__}, not an Equinox or Flax NNX module. Select layers (e.g. "
        f"`eqx.nn.Linear`, `nnx.Linear`) with the `layers` selector."
    )


# ------------------------------------------------------------------------ measurement


@dataclasses.dataclass(frozen=True)
class LayerStats:
    """Per-layer statistics on one batch, in the order the layers are called.

    - `paths`: the layers' paths (`path_str` form).
    - `act_rms`: root mean square of each layer's output.
    - `act_std`: its standard deviation over the batch (per feature, the last axis,
      then averaged in square): the part of the output that depends on the input.
    - `grad_rms`: root mean square of the loss gradient with respect to each layer's
      output (after any `grad_scale`), divided by that of the last layer called, so
      the numbers do not depend on how the loss is normalised (mean or sum, batch size).
    - `passes`: forward and backward passes `empirical` used (0 for `layer_stats`).
    """

    paths: tuple[str, ...]
    act_rms: np.ndarray
    act_std: np.ndarray
    grad_rms: np.ndarray
    passes: int = 0


class _Measure:
    """One compiled `loss` + `jax.grad` with probes on the selected layers."""

    def __init__(
        self, model: Any, batch: Any, loss_fn: Callable[..., Any], layers: Any, params: Any
    ) -> None:
        sel = as_selector(layers, what="layers")
        from ._query import paths as _paths
        from ._replace import replace

        self.paths: list[Path] = _paths(model, sel)
        if not self.paths:
            raise InitError(
                f"tw.init.empirical: the layers selector {sel!r} selects nothing. Pass the "
                f"layer type, e.g. `eqx.nn.Linear` or `nnx.Linear`."
            )
        index = {p: i for i, p in enumerate(self.paths)}
        probed = replace(
            model, sel, lambda p, layer, k: _wrapper_for(p, layer, 0)(layer, index[p])
        )
        leaves, treedef = jax.tree_util.tree_flatten(probed)
        is_arr = [isinstance(x, jax.Array) for x in leaves]
        arrs = [x for x, a in zip(leaves, is_arr, strict=True) if a]
        statics = [None if a else x for x, a in zip(leaves, is_arr, strict=True)]
        n = len(self.paths)

        def loss_of(inputs: Any, arrs: Any) -> Any:
            it = iter(arrs)
            full = [next(it) if a else x for x, a in zip(statics, is_arr, strict=True)]
            m = jax.tree_util.tree_unflatten(treedef, full)
            _STATE.inputs, _STATE.params = inputs, params
            try:
                return loss_fn(m, batch)
            finally:
                _STATE.inputs = _STATE.params = None

        _STATE.features = {}
        jax.eval_shape(lambda a: loss_of("shapes", a), arrs)
        features = [_STATE.features.get(i, 1) for i in range(n)]

        def measure(s: Any, shifts: Any, arrs: Any) -> Any:
            z = jnp.zeros(n, jnp.float32)
            loss, grads = jax.value_and_grad(loss_of)((s, z, shifts, z, z), arrs)
            return loss, grads[1:]

        self._arrs = arrs
        self._measure = jax.jit(measure)
        self.n = n
        self.features = np.asarray(features, np.float64)
        self.shifts = [np.zeros(f, np.float32) for f in features]
        self.order: list[int] | None = None

    def __call__(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`(activation RMS, activation std, gradient RMS)` per layer at scales `s`."""
        _STATE.order = []
        shifts = self.shifts
        loss, (sq, sums, gsq, count) = self._measure(
            jnp.asarray(s, jnp.float32), [jnp.asarray(x) for x in shifts], self._arrs
        )
        if self.order is None:
            self.order = list(_STATE.order)
            missing = sorted(set(range(self.n)) - set(self.order))
            if missing:
                raise InitError(
                    f"tw.init.empirical: the selected layer at "
                    f"{show_path(self.paths[missing[0]])} is never called by `loss_fn`. "
                    f"Select only layers the model uses."
                )
        count = np.maximum(np.asarray(count, np.float64), 1)
        sq = np.asarray(sq, np.float64)  # sums of (y - shift)^2
        sums = [np.asarray(x, np.float64) for x in sums]  # per-feature sums of y - shift
        per_feature = count / self.features
        act, var = np.zeros(self.n), np.zeros(self.n)
        for i in range(self.n):
            mean_d = sums[i] / per_feature[i]  # per-feature mean of y - shift
            var[i] = sq[i] / count[i] - np.mean(mean_d**2)
            mean = mean_d + shifts[i]
            act[i] = var[i] + np.mean(mean**2)
            if np.isfinite(mean).all():
                self.shifts[i] = mean.astype(np.float32)
        act = np.sqrt(np.maximum(act, 0))
        std = np.sqrt(np.maximum(var, 0))
        grad = np.sqrt(np.asarray(gsq, np.float64) / count)
        if not np.isfinite(float(loss)) and not np.isfinite(act).any():
            raise InitError("tw.init.empirical: the loss is not finite on the dummy batch.")
        return act, std, grad


def _call_batch(batch: Any, key: Any) -> Any:
    return batch(key) if callable(batch) else batch


def layer_stats(
    model: Any,
    batch: Any,
    loss_fn: Callable[[Any, Any], Any],
    layers: Any,
    *,
    key: Any = None,
) -> LayerStats:
    """Activation and gradient RMS at the output of each selected layer, on one batch.

    **Arguments:**

    - `model`: an Equinox or Flax NNX model.
    - `batch`: a batch, or a function `key -> batch`.
    - `loss_fn`: `loss_fn(model, batch) -> scalar`.
    - `layers`: a selector of the layers to look at (e.g. `eqx.nn.Linear`).
    - `key`: passed to `batch` when it is a function (default `jax.random.key(0)`).

    **Returns:**

    A `LayerStats` (`paths`, `act_rms`, `grad_rms`), in the order the layers are called.
    `grad_rms` is relative to the last layer called.

    !!! Example

        ```python
        import equinox as eqx
        import jax
        import jax.numpy as jnp
        import treewalk as tw

        mlp = eqx.nn.MLP(1, 1, 32, 4, key=jax.random.key(0))
        x = jnp.linspace(-1, 1, 64)[:, None]
        loss = lambda m, x: jnp.mean((jax.vmap(m)(x) - jnp.sin(x)) ** 2)
        stats = tw.init.layer_stats(mlp, x, loss, eqx.nn.Linear)
        assert stats.act_rms.shape == (5,) and stats.grad_rms[-1] == 1
        ```
    """
    key = jax.random.key(0) if key is None else key
    m = _Measure(model, _call_batch(batch, key), loss_fn, layers, None)
    act, std, grad = m(np.ones(m.n))
    return _stats(m, act, std, grad, 0)


def _stats(
    m: _Measure, act: np.ndarray, std: np.ndarray, grad: np.ndarray, passes: int
) -> LayerStats:
    order = m.order or list(range(m.n))
    ref = grad[order[-1]]
    rel = grad / ref if ref > 0 else grad
    paths = tuple(path_str(m.paths[i]) for i in order)
    return LayerStats(paths, act[order], std[order], rel[order], passes)


def empirical(
    model: Any,
    batch: Any,
    loss_fn: Callable[[Any, Any], Any],
    layers: Any,
    *,
    key: Any = None,
    params: Any = None,
    grad_scales: bool = True,
    tol: float = 0.05,
    max_passes: int | None = None,
    return_stats: bool = False,
) -> Any:
    """Data-driven init: rescale layers so activations and gradients are O(1) at every depth.

    Runs the model on a dummy batch and measures, at the output of every selected layer,
    the standard deviation of the activations over the batch and the root mean square
    (RMS) of the loss gradient. Then:

    1. **Forward.** Each layer's weight (`params`) is multiplied by a factor that makes
       the standard deviation of its output 1 (as LSUV does; the bias is left alone, so a
       layer whose output is mostly its bias gets its signal back instead of a scaled
       bias). This is exact for layers whose output is linear in the weight (Linear,
       Conv). The factors are found in call order: every pass fixes the first layer out
       of tolerance exactly and corrects all later ones using each layer's measured
       response to its input's scale (1 for ReLU-like layers, near 0 when saturated), so
       the number of passes grows slowly with depth; it is at most one per layer.
    2. **Backward** (`grad_scales=True`). Each layer is wrapped in a module (`GradScaled`,
       Equinox or NNX as the layer) whose forward pass is the layer's own and whose
       backward pass multiplies the gradient by a constant, so the gradient RMS at every
       layer's output equals the last layer's. In a chain of layers this is exact from the
       measurement already made (the backward pass is linear in the gradient), so it costs
       no extra pass. With `grad_scales=False` the model keeps its structure and only the
       forward scaling is done.

    Every pass is one call of one compiled `jax.grad` of `loss_fn` (probes record the
    statistics inside `jit` and `vmap`); the compile happens once.

    **Arguments:**

    - `model`: an Equinox or Flax NNX model (NNX: the input is not modified).
    - `batch`: a dummy batch, or a function `key -> batch`.
    - `loss_fn`: `loss_fn(model, batch) -> scalar`, calling the model as in training.
    - `layers`: a selector of the layers to rescale, e.g. `eqx.nn.Linear`, `nnx.Linear`
      or `tw.of_type(nnx.Linear, nnx.Conv)`.
    - `key`: passed to `batch` when it is a function (default `jax.random.key(0)`).
    - `params`: a selector, relative to each layer, of the leaves to scale; default its
      weight (`tw.name("weight", "kernel", "w", "weights")`).
    - `grad_scales`: also equalise the backward pass (see 2.).
    - `tol`: accept a layer whose output standard deviation is within `1 ± tol`.
    - `max_passes`: cap on forward/backward passes (default: the number of layers + 1).
    - `return_stats`: also return the final `LayerStats` (with `passes`).

    **Returns:**

    The new model (and its `LayerStats` with `return_stats=True`).

    !!! Example

        ```python
        import equinox as eqx
        import jax
        import jax.numpy as jnp
        import treewalk as tw

        mlp = eqx.nn.MLP(1, 1, 32, 8, activation=jnp.tanh, key=jax.random.key(0))
        mlp = tw.replace(mlp, "**/weight", tw.init.normal(0.1), key=jax.random.key(1))
        loss = lambda m, b: jnp.mean((jax.vmap(m)(b[0]) - b[1]) ** 2)

        def batch(key):
            x = jax.random.uniform(key, (256, 1), minval=-1, maxval=1)
            return x, jnp.sin(3 * x)

        mlp, stats = tw.init.empirical(mlp, batch, loss, eqx.nn.Linear, return_stats=True)
        assert (abs(stats.act_std - 1) < 0.05).all()
        assert (abs(stats.grad_rms - 1) < 0.05).all()
        ```
    """
    from ._query import paths as _paths
    from ._replace import replace

    key = jax.random.key(0) if key is None else key
    if not callable(loss_fn):
        raise ArgumentError(
            f"loss_fn must be callable `(model, batch) -> scalar`; got {loss_fn!r:.60}."
        )
    if not tol > 0:
        raise ArgumentError(f"tol must be positive; got {tol!r}.")
    psel = name(*WEIGHT_NAMES) if params is None else as_selector(params)
    m = _Measure(model, _call_batch(batch, key), loss_fn, layers, psel)
    n = m.n
    s = np.ones(n)
    cap = n + 1 if max_passes is None else max_passes
    passes = 0
    h = np.ones(n)  # estimated response of each layer's output to its input's scale
    prev_logr: Any = None
    prev_step: Any = None
    while True:
        act, std, grad = m(s)
        passes += 1
        order = m.order or list(range(n))
        r = std[order]
        bad = [j for j in range(n) if not (abs(r[j] - 1) <= tol)]
        if not bad or passes >= cap:
            break
        first = bad[0]
        if not (np.isfinite(r[first]) and r[first] > 0):
            i = order[first]
            raise InitError(
                f"tw.init.empirical: the output of the layer at {show_path(m.paths[i])} "
                f"{'does not vary over' if r[first] == 0 else 'is not finite on'} the dummy "
                f"batch although every layer before it has standard deviation 1 (e.g. all "
                f"ReLUs before it dead); scaling its weight cannot fix that. Use a larger or "
                f"more varied batch, or select fewer layers."
            )
        # Exact for the first layer out of tolerance. For each later layer, its output's
        # response to its input's scale (1 for ReLU-like layers, 0 when saturated) is
        # estimated from the last two passes, and its scale set to bring it to 1.
        logr = np.log(np.where(np.isfinite(r) & (r > 0), r, 1.0))
        if prev_logr is not None:
            d_in = np.concatenate([[0.0], logr[:-1] - prev_logr[:-1]])
            d_out = logr - prev_logr - prev_step
            ok = np.abs(d_in) > 1e-3
            h = np.where(ok, np.clip(d_out / np.where(ok, d_in, 1), 0.0, 1.5), h)
        step = np.zeros(n)
        step[first] = -logr[first]
        for j in range(first + 1, n):
            usable = np.isfinite(r[j]) and r[j] > 0 and np.isfinite(r[j - 1]) and r[j - 1] > 0
            if usable:
                step[j] = -logr[j] + h[j] * logr[j - 1]
        prev_logr, prev_step = logr, step
        for j in range(n):
            s[order[j]] *= math.exp(step[j])
    if grad_scales and grad[order[-1]] > 0:
        g = grad[order]
        b = np.ones(n)
        for j in range(n - 1):
            b[j] = g[j + 1] / g[j] if g[j] > 0 and np.isfinite(g[j]) else 1.0
        # b[j] is the ratio of neighbours; the cotangent at layer j carries all b's above it
        grad_scale = {m.paths[order[j]]: float(b[j]) for j in range(n)}
    else:
        grad_scale = None

    scale = {p: float(s[i]) for i, p in enumerate(m.paths)}

    def rescale(path: Path, layer: Any, _: Any) -> Any:
        c = scale[path]
        out = replace(layer, psel, lambda p, x, k: _times(x, c), strict=False)
        if grad_scale is not None:
            out = _wrapper_for(path, layer, 1)(out, grad_scale[path])
        return out

    sel = as_selector(layers, what="layers")
    assert _paths(model, sel) == m.paths
    new = replace(model, sel, rescale)
    if not return_stats:
        return new
    stats = layer_stats(new, batch, loss_fn, layers, key=key)
    return new, dataclasses.replace(stats, passes=passes)
