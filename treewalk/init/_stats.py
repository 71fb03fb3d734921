"""Measurement for `tw.init.empirical`: one compiled `loss` + `jax.grad` with probes on
the selected layers, and `tw.init.layer_stats`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._core.errors import InitError
from .._core.paths import Path, path_str, show_path
from .._ops.query import paths as _paths
from .._ops.replace import replace
from .._select.algebra import as_selector
from ._probes import ProbeState, probed


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


class Measure:
    """One compiled `loss` + `jax.grad` with probes on the selected layers."""

    def __init__(
        self, model: Any, batch: Any, loss_fn: Callable[..., Any], layers: Any, params: Any
    ) -> None:
        sel = as_selector(layers, what="layers")
        self.paths: list[Path] = _paths(model, sel)
        if not self.paths:
            raise InitError(
                f"tw.init.empirical: the layers selector {sel!r} selects nothing. Pass the "
                f"layer type, e.g. `eqx.nn.Linear` or `nnx.Linear`."
            )
        index = {p: i for i, p in enumerate(self.paths)}
        state = self.state = ProbeState()
        with_probes = replace(model, sel, lambda p, layer, k: probed(p, layer, state, index[p]))
        leaves, treedef = jax.tree_util.tree_flatten(with_probes)
        is_arr = [isinstance(x, jax.Array) for x in leaves]
        arrs = [x for x, a in zip(leaves, is_arr, strict=True) if a]
        statics = [None if a else x for x, a in zip(leaves, is_arr, strict=True)]
        n = len(self.paths)

        def loss_of(inputs: Any, arrs: Any) -> Any:
            it = iter(arrs)
            full = [next(it) if a else x for x, a in zip(statics, is_arr, strict=True)]
            m = jax.tree_util.tree_unflatten(treedef, full)
            state.inputs, state.params = inputs, params
            try:
                return loss_fn(m, batch)
            finally:
                state.inputs = state.params = None

        jax.eval_shape(lambda a: loss_of("shapes", a), arrs)
        features = [state.features.get(i, 1) for i in range(n)]

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
        self.state.order = []
        shifts = self.shifts
        loss, (sq, sums, gsq, count) = self._measure(
            jnp.asarray(s, jnp.float32), [jnp.asarray(x) for x in shifts], self._arrs
        )
        if self.order is None:
            self.order = list(self.state.order)
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


def call_batch(batch: Any, key: Any) -> Any:
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
    m = Measure(model, call_batch(batch, key), loss_fn, layers, None)
    act, std, grad = m(np.ones(m.n))
    return _stats(m, act, std, grad, 0)


def _stats(
    m: Measure, act: np.ndarray, std: np.ndarray, grad: np.ndarray, passes: int
) -> LayerStats:
    order = m.order or list(range(m.n))
    ref = grad[order[-1]]
    rel = grad / ref if ref > 0 else grad
    paths = tuple(path_str(m.paths[i]) for i in order)
    return LayerStats(paths, act[order], std[order], rel[order], passes)
