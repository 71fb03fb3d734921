"""The Keras case (keras#20873): a bias's fan-in is its layer's, and it matters for training.

A 1-hidden-layer ReLU MLP fits sin(pi x) on [-1, 1]. With PyTorch's default drawn through
treewalk, the hidden biases are U(-1, 1) (fan-in 1), so the ReLU kinks spread over the
interval and a wider layer fits better. With a bias fan-in taken from the bias's length
(the layer's fan-out, what Keras does), the biases shrink as 1/sqrt(width), the kinks
crowd at 0 and width helps far less (300 Adam steps, so the init still shows).
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import treewalk as tw

WIDTHS = (10, 100, 1000)
X = jnp.linspace(-1, 1, 256)[:, None]
Y = jnp.sin(jnp.pi * X)


def _keras_bias(key, shape, dtype):
    """The wrong fan: a bias's fan-in taken from its own length."""
    lim = 1 / np.sqrt(shape[0])
    return jax.random.uniform(key, shape, dtype, -lim, lim)


def _eqx_apply(static, params, x):
    return jax.vmap(eqx.combine(params, static))(x)


def _nnx_apply(graphdef, state, x):
    return nnx.merge(graphdef, state)(x)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _fit(apply, static, params):
    opt = optax.adam(3e-3)

    def loss(p):
        return jnp.mean((apply(static, p, X) - Y) ** 2)

    def step(carry, _):
        p, s = carry
        g = jax.grad(loss)(p)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    (p, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=300)
    return loss(p)


class NnxMLP(nnx.Module):
    def __init__(self, width, rngs):
        self.l1 = nnx.Linear(1, width, rngs=rngs)
        self.l2 = nnx.Linear(width, 1, rngs=rngs)

    def __call__(self, x):
        return self.l2(jax.nn.relu(self.l1(x)))


def _eqx_model(width, key):
    return eqx.nn.MLP(1, 1, width, 1, activation=jax.nn.relu, key=key)


def _fit_model(model):
    if isinstance(model, eqx.Module):
        params, static = eqx.partition(model, eqx.is_inexact_array)
        return float(_fit(_eqx_apply, static, params))
    graphdef, state = nnx.split(model)
    return float(_fit(_nnx_apply, graphdef, state))


def _hidden_bias(model):
    if isinstance(model, eqx.nn.MLP):
        return np.asarray(model.layers[0].bias)
    return np.asarray(model.l1.bias[...])


def _out_weight(model):
    if isinstance(model, eqx.nn.MLP):
        return np.asarray(model.layers[1].weight)
    return np.asarray(model.l2.kernel[...])


MAKERS = {
    "equinox": lambda w, seed: _eqx_model(w, jax.random.key(seed)),
    "nnx": lambda w, seed: NnxMLP(w, nnx.Rngs(seed)),
}


@pytest.mark.parametrize("framework", ["equinox", "nnx"])
def test_torch_default_bias_statistics(framework):
    model = MAKERS[framework](1000, 0)
    model = tw.replace(model, tw.arrays, tw.init.torch_default(), key=jax.random.key(1))
    b = _hidden_bias(model)
    # PyTorch's rule: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with the layer's fan_in = 1
    assert np.abs(b).max() <= 1.0 and np.abs(b).max() > 0.95
    assert b.var() == pytest.approx(1 / 3, rel=0.15)
    w = _out_weight(model)  # fan_in 1000
    assert w.var() == pytest.approx(1 / 3000, rel=0.15)
    wrong = tw.replace(model, "**/bias", tw.initializer(_keras_bias), key=jax.random.key(2))
    assert _hidden_bias(wrong).var() == pytest.approx(1 / 3000, rel=0.15)


@pytest.mark.parametrize("framework", ["equinox", "nnx"])
def test_width_helps_only_with_the_right_bias_fan(framework):
    good, bad = [], []
    for width in WIDTHS:
        model = MAKERS[framework](width, 0)
        model = tw.replace(model, tw.arrays, tw.init.torch_default(), key=jax.random.key(1))
        wrong = tw.replace(model, "**/bias", tw.initializer(_keras_bias), key=jax.random.key(2))
        good.append(_fit_model(model))
        bad.append(_fit_model(wrong))
    # Measured (2 seeds, both frameworks): right fan 1e-1 / 1e-3 / 1e-5, wrong fan
    # 1e-1 / 1e-3 / 2e-4: from 100 to 1000 units the right fan gains ~100x, the wrong ~5x.
    assert good[0] > good[1] > 30 * good[2], good
    assert bad[1] < 10 * bad[2], bad
    assert bad[2] > 10 * good[2], (good, bad)
