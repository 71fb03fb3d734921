"""JAX re-implementations of the PyTorch nets in tests/fixtures/make_torch_fixtures.py,
shared by tests/test_load*.py: the same computation in Equinox, Flax NNX, linen and Haiku,
with attributes named like the PyTorch modules (so a state_dict loads with no rules), and
a transformer encoder with its own names (loaded through `rename=`)."""

from __future__ import annotations

import math
from pathlib import Path

import equinox as eqx
import flax.linen as nn
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def io(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The input and PyTorch's output stored for the fixture net `name`."""
    with np.load(FIXTURES / f"torch_{name}_io.npz") as f:
        return f["x"], f["y"]


# ---------------------------------------------------------------------------------------
# Conv2d -> Linear -> LayerNorm -> Linear, input NCHW (N, 3, 6, 6)


class EqxConvNet(eqx.Module):
    conv: eqx.nn.Conv2d
    fc1: eqx.nn.Linear
    norm: eqx.nn.LayerNorm
    fc2: eqx.nn.Linear

    def __init__(self, key: jax.Array) -> None:
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv = eqx.nn.Conv2d(3, 4, 3, key=k1)
        self.fc1 = eqx.nn.Linear(64, 16, key=k2)
        self.norm = eqx.nn.LayerNorm(16)
        self.fc2 = eqx.nn.Linear(16, 16, key=k3)

    def __call__(self, x: jax.Array) -> jax.Array:
        def one(x: jax.Array) -> jax.Array:
            h = jax.nn.relu(self.conv(x)).reshape(-1)
            return self.fc2(self.norm(jax.nn.relu(self.fc1(h))))

        return jax.vmap(one)(x)


class NnxConvNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.conv = nnx.Conv(3, 4, (3, 3), padding="VALID", rngs=rngs)
        self.fc1 = nnx.Linear(64, 16, rngs=rngs)
        self.norm = nnx.LayerNorm(16, epsilon=1e-5, rngs=rngs)
        self.fc2 = nnx.Linear(16, 16, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.conv(x.transpose(0, 2, 3, 1)))  # NHWC
        h = h.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)  # flatten as PyTorch: (C, H, W)
        return self.fc2(self.norm(jax.nn.relu(self.fc1(h))))


class LinenConvNet(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.relu(nn.Conv(4, (3, 3), padding="VALID", name="conv")(x.transpose(0, 2, 3, 1)))
        h = h.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)
        h = jax.nn.relu(nn.Dense(16, name="fc1")(h))
        return nn.Dense(16, name="fc2")(nn.LayerNorm(epsilon=1e-5, name="norm")(h))


def _haiku_convnet(x: jax.Array) -> jax.Array:
    h = jax.nn.relu(hk.Conv2D(4, 3, padding="VALID", name="conv")(x.transpose(0, 2, 3, 1)))
    h = h.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)
    h = jax.nn.relu(hk.Linear(16, name="fc1")(h))
    norm = hk.LayerNorm(-1, create_scale=True, create_offset=True, eps=1e-5, name="norm")
    return hk.Linear(16, name="fc2")(norm(h))


haiku_convnet = hk.without_apply_rng(hk.transform(_haiku_convnet))


def convnets(x: np.ndarray) -> dict:
    """`{framework: (model or params, apply(model, x))}` for the conv net."""
    key = jax.random.key(1)
    linen = LinenConvNet()
    return {
        "equinox": (EqxConvNet(key), lambda m, x: m(x)),
        "nnx": (NnxConvNet(nnx.Rngs(1)), lambda m, x: m(x)),
        "linen": (linen.init(key, x)["params"], lambda p, x: linen.apply({"params": p}, x)),
        "haiku": (haiku_convnet.init(key, x), haiku_convnet.apply),
    }


# ---------------------------------------------------------------------------------------
# A BERT-style encoder (embedding, 2 post-norm layers) with its own names.

#: Hub-style PyTorch names -> these modules' names.
ENCODER_RENAME = [
    (r"^embeddings/word_embeddings/", "embed/"),
    (r"^layer/(\d+)/attention/self/query/", r"layers/\1/q/"),
    (r"^layer/(\d+)/attention/self/key/", r"layers/\1/k/"),
    (r"^layer/(\d+)/attention/self/value/", r"layers/\1/v/"),
    (r"^layer/(\d+)/attention/output/dense/", r"layers/\1/o/"),
    (r"^layer/(\d+)/attention/output/LayerNorm/", r"layers/\1/ln1/"),
    (r"^layer/(\d+)/intermediate/dense/", r"layers/\1/up/"),
    (r"^layer/(\d+)/output/dense/", r"layers/\1/down/"),
    (r"^layer/(\d+)/output/LayerNorm/", r"layers/\1/ln2/"),
]


def _attend(q: jax.Array, k: jax.Array, v: jax.Array, heads: int) -> jax.Array:
    t, d = q.shape
    q, k, v = (a.reshape(t, heads, -1).transpose(1, 0, 2) for a in (q, k, v))
    w = jax.nn.softmax(q @ k.transpose(0, 2, 1) / math.sqrt(d // heads), axis=-1)
    return (w @ v).transpose(1, 0, 2).reshape(t, d)


class EqxLayer(eqx.Module):
    q: eqx.nn.Linear
    k: eqx.nn.Linear
    v: eqx.nn.Linear
    o: eqx.nn.Linear
    ln1: eqx.nn.LayerNorm
    up: eqx.nn.Linear
    down: eqx.nn.Linear
    ln2: eqx.nn.LayerNorm
    heads: int = eqx.field(static=True)

    def __init__(self, d: int, ff: int, heads: int, key: jax.Array) -> None:
        ks = jax.random.split(key, 6)
        self.q, self.k, self.v, self.o = (eqx.nn.Linear(d, d, key=k) for k in ks[:4])
        self.up, self.down = eqx.nn.Linear(d, ff, key=ks[4]), eqx.nn.Linear(ff, d, key=ks[5])
        self.ln1, self.ln2 = eqx.nn.LayerNorm(d), eqx.nn.LayerNorm(d)
        self.heads = heads

    def __call__(self, x: jax.Array) -> jax.Array:
        lin = lambda f, x: jax.vmap(f)(x)  # noqa: E731
        h = _attend(lin(self.q, x), lin(self.k, x), lin(self.v, x), self.heads)
        x = jax.vmap(self.ln1)(x + lin(self.o, h))
        h = lin(self.down, jax.nn.gelu(lin(self.up, x), approximate=False))
        return jax.vmap(self.ln2)(x + h)


class EqxEncoder(eqx.Module):
    embed: eqx.nn.Embedding
    layers: list[EqxLayer]

    def __init__(self, key: jax.Array, vocab: int = 11, d: int = 8, ff: int = 16) -> None:
        k0, k1, k2 = jax.random.split(key, 3)
        self.embed = eqx.nn.Embedding(vocab, d, key=k0)
        self.layers = [EqxLayer(d, ff, 2, k) for k in (k1, k2)]

    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = jax.vmap(self.embed)(tokens)
        for layer in self.layers:
            x = layer(x)
        return x


class NnxLayer(nnx.Module):
    def __init__(self, d: int, ff: int, heads: int, rngs: nnx.Rngs) -> None:
        self.q, self.k, self.v, self.o = (nnx.Linear(d, d, rngs=rngs) for _ in range(4))
        self.ln1 = nnx.LayerNorm(d, epsilon=1e-5, rngs=rngs)
        self.up, self.down = nnx.Linear(d, ff, rngs=rngs), nnx.Linear(ff, d, rngs=rngs)
        self.ln2 = nnx.LayerNorm(d, epsilon=1e-5, rngs=rngs)
        self.heads = heads

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.ln1(x + self.o(_attend(self.q(x), self.k(x), self.v(x), self.heads)))
        return self.ln2(x + self.down(jax.nn.gelu(self.up(x), approximate=False)))


class NnxEncoder(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, vocab: int = 11, d: int = 8, ff: int = 16) -> None:
        self.embed = nnx.Embed(vocab, d, rngs=rngs)
        self.layers = nnx.List([NnxLayer(d, ff, 2, rngs) for _ in range(2)])

    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x)
        return x


def close(a: object, b: object) -> None:
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def leaves_equal(a: object, b: object) -> None:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        if isinstance(x, jax.Array | np.ndarray):
            assert jnp.asarray(x).dtype == jnp.asarray(y).dtype
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
