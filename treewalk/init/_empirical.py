"""Empirical init: rescale layers so activations and gradients are O(1) on dummy data.

The probes live in `_probes`, the measurement in `_stats`; this module
is the search for the scales."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from .._core.errors import ArgumentError, InitError
from .._core.paths import Path, show_path
from .._frameworks import WEIGHT_NAMES
from .._ops.replace import replace
from .._select.algebra import as_selector
from .._select.atoms import name
from ._probes import grad_scaled, times
from ._stats import Measure, call_batch, layer_stats


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
    key = jax.random.key(0) if key is None else key
    if not callable(loss_fn):
        raise ArgumentError(
            f"loss_fn must be callable `(model, batch) -> scalar`; got {loss_fn!r:.60}."
        )
    if not tol > 0:
        raise ArgumentError(f"tol must be positive; got {tol!r}.")
    psel = name(*WEIGHT_NAMES) if params is None else as_selector(params)
    m = Measure(model, call_batch(batch, key), loss_fn, layers, psel)
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
        out = replace(layer, psel, lambda p, x, k: times(x, c), strict=False)
        if grad_scale is not None:
            out = grad_scaled(path, out, grad_scale[path])
        return out

    sel = as_selector(layers, what="layers")
    new = replace(model, sel, rescale)
    if not return_stats:
        return new
    stats = layer_stats(new, batch, loss_fn, layers, key=key)
    return new, dataclasses.replace(stats, passes=passes)
