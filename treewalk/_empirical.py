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
from ._frameworks import BIAS_NAMES, WEIGHT_NAMES
from ._path import Path, path_str, show_path
from ._selectors import arrays, as_selector, name

# ------------------------------------------------------------------------------ probes
#
# A probe sits on a selected layer's output. In the forward pass it multiplies the output
# by a scale `s`; in the backward pass it hands back, as the "gradients" of three dummy
# inputs, the sum of squares of the (scaled) output, the sum of squares of the output's
# cotangent, and the number of elements. Summed by JAX over `vmap`ped calls and repeated
# calls, these give exact batch statistics from one `jax.grad`, inside `jit` and `vmap`.


@jax.custom_vjp
def _probe(y: Any, s: Any, t: Any, u: Any, c: Any) -> Any:
    return y * s.astype(y.dtype)


def _probe_fwd(y: Any, s: Any, t: Any, u: Any, c: Any) -> Any:
    return _probe(y, s, t, u, c), (y, s)


def _probe_bwd(res: Any, g: Any) -> Any:
    y, s = res
    ys = (y * s.astype(y.dtype)).astype(jnp.float32)
    g32 = g.astype(jnp.float32)
    count = jnp.sum(jnp.where(jnp.isnan(g32), 1.0, 1.0))
    return (
        g * s.astype(g.dtype),
        jnp.sum(g32 * y.astype(jnp.float32)),
        jnp.sum(ys * ys),
        jnp.sum(g32 * g32),
        count,
    )


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
    """The probes' inputs during one traced measurement, and the call order seen."""

    def __init__(self) -> None:
        self.inputs: Any = None
        self.order: list[int] = []


_STATE = _State()


def _tap(index: int, y: Any) -> Any:
    inputs = _STATE.inputs
    if inputs is None:
        return y
    if not isinstance(y, jax.Array):
        raise InitError(
            f"tw.init.empirical: selected layer #{index} returned a "
            f"{type(y).__name__}, not an array. Select layers that return one array "
            f"(Linear, Conv, ...)."
        )
    if index not in _STATE.order:
        _STATE.order.append(index)
    s, t, u, c = (x[index] for x in inputs)
    return _probe(y, s, t, u, c)


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
                return _tap(self.index, self.layer(*args, **kwargs))

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
                return _tap(self.index, self.layer(*args, **kwargs))

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
    - `grad_rms`: root mean square of the loss gradient with respect to each layer's
      output (after any `grad_scale`), divided by that of the last layer called, so
      the numbers do not depend on how the loss is normalised (mean or sum, batch size).
    - `passes`: forward and backward passes `empirical` used (0 for `layer_stats`).
    """

    paths: tuple[str, ...]
    act_rms: np.ndarray
    grad_rms: np.ndarray
    passes: int = 0


class _Measure:
    """One compiled `loss` + `jax.grad` with probes on the selected layers."""

    def __init__(self, model: Any, batch: Any, loss_fn: Callable[..., Any], layers: Any):
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

        def loss_of(probes: Any, arrs: Any) -> Any:
            it = iter(arrs)
            full = [next(it) if a else x for x, a in zip(statics, is_arr, strict=True)]
            m = jax.tree_util.tree_unflatten(treedef, full)
            _STATE.inputs = probes
            try:
                return loss_fn(m, batch)
            finally:
                _STATE.inputs = None

        def measure(s: Any, arrs: Any) -> Any:
            z = jnp.zeros(n, jnp.float32)
            loss, grads = jax.value_and_grad(loss_of)((s, z, z, z), arrs)
            return loss, grads[1], grads[2], grads[3]

        self._arrs = arrs
        self._measure = jax.jit(measure)
        self.n = n
        self.order: list[int] | None = None

    def __call__(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _STATE.order = []
        loss, sq, gsq, count = self._measure(jnp.asarray(s, jnp.float32), self._arrs)
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
        act = np.sqrt(np.asarray(sq, np.float64) / count)
        grad = np.sqrt(np.asarray(gsq, np.float64) / count)
        if not np.isfinite(float(loss)) and not np.isfinite(act).any():
            raise InitError("tw.init.empirical: the loss is not finite on the dummy batch.")
        return act, grad


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
    m = _Measure(model, _call_batch(batch, key), loss_fn, layers)
    act, grad = m(np.ones(m.n))
    return _stats(m, act, grad, 0)


def _stats(m: _Measure, act: np.ndarray, grad: np.ndarray, passes: int) -> LayerStats:
    order = m.order or list(range(m.n))
    ref = grad[order[-1]]
    rel = grad / ref if ref > 0 else grad
    return LayerStats(tuple(path_str(m.paths[i]) for i in order), act[order], rel[order], passes)


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
    the root mean square (RMS) of the activations and of the loss gradient. Then:

    1. **Forward.** Each layer's parameters (`params`, by default its weight and bias) are
       multiplied by a factor that makes its output RMS 1. This is exact for layers whose
       output is linear in those parameters (Linear, Conv); the factors are found layer by
       layer in call order, as LSUV does, but every pass also corrects all later layers
       assuming positive homogeneity (ReLU-like), so ReLU networks need 2 passes whatever
       their depth and saturating ones (tanh) a few more; at most one pass per layer.
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
      weight and bias (`tw.name("weight", "kernel", "w", "bias", "b")`).
    - `grad_scales`: also equalise the backward pass (see 2.).
    - `tol`: accept a layer whose output RMS is within `1 ± tol`.
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

        mlp = eqx.nn.MLP(1, 1, 64, 16, activation=jnp.tanh, key=jax.random.key(0))
        mlp = tw.replace(mlp, "**/weight", tw.init.normal(0.1), key=jax.random.key(1))
        loss = lambda m, b: jnp.mean((jax.vmap(m)(b[0]) - b[1]) ** 2)

        def batch(key):
            x = jax.random.uniform(key, (256, 1), minval=-1, maxval=1)
            return x, jnp.sin(3 * x)

        mlp, stats = tw.init.empirical(mlp, batch, loss, eqx.nn.Linear, return_stats=True)
        assert (abs(stats.act_rms - 1) < 0.05).all()
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
    psel = name(*WEIGHT_NAMES, *BIAS_NAMES) if params is None else as_selector(params)
    psel = psel & arrays
    m = _Measure(model, _call_batch(batch, key), loss_fn, layers)
    n = m.n
    s = np.ones(n)
    cap = n + 1 if max_passes is None else max_passes
    passes = 0
    h = np.ones(n)  # estimated response of each layer's output to its input's scale
    prev_logr: Any = None
    prev_step: Any = None
    while True:
        act, grad = m(s)
        passes += 1
        order = m.order or list(range(n))
        r = act[order]
        bad = [j for j in range(n) if not (abs(r[j] - 1) <= tol)]
        if not bad or passes >= cap:
            break
        first = bad[0]
        if not (np.isfinite(r[first]) and r[first] > 0):
            i = order[first]
            raise InitError(
                f"tw.init.empirical: the output of the layer at {show_path(m.paths[i])} is "
                f"{'all zero' if r[first] == 0 else 'not finite'} on the dummy batch "
                f"even though every layer before it has RMS 1; rescaling cannot fix that."
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
        out = replace(layer, psel, lambda p, x, k: (x * c).astype(x.dtype), strict=False)
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
