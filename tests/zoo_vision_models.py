"""JAX twins of the nets of tests/fixtures/make_zoo_vision.py (transformers' ResNet and
ViT, `nn.MultiheadAttention`, `nn.LSTM`, `nn.GRU`), for tests/test_load_zoo_vision.py: an
Equinox and a Flax NNX twin of each (Equinox only for the recurrent nets), with attribute
paths named like the `state_dict` keys (`encoder.stages.1.layers.0.shortcut.convolution`
is `encoder.stages[1].layers[0].shortcut.convolution`), so a checkpoint loads with no
`rename=`.

Numerics follow PyTorch: BatchNorm in eval mode (running statistics, eps 1e-5), stem
conv 7x7/2 then max pool 3x3/2 padded with -inf, ReLU after the residual sum; ViT
pre-norm layers with exact GELU, LayerNorm eps 1e-12, scores scaled by 1/sqrt(head_dim),
pooler tanh(dense(h[:, 0])); attention scaled by 1/sqrt(embed_dim / heads); LSTM gates
(i, f, g, o) and GRU gates (r, z, n) from a zero state. Equinox computes NCHW (one example
at a time, vmapped); NNX convolutions are NHWC, so inputs are transposed in and outputs
back to PyTorch's NCHW.

The nets' `torch.nn.MultiheadAttention` is held at `attn`, and so is Equinox's
`MultiheadAttention` (`attn.query_proj`, ...) and NNX's `MultiHeadAttention`
(`attn.query`, ...); the LSTM and GRU at `rnn`, an `eqx.nn.LSTMCell` / `GRUCell` here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from load_models import FIXTURES

import treewalk as tw

BN_EPS = 1e-5
VIT_EPS = 1e-12
VIT_D, VIT_HEADS, VIT_FF, VIT_LAYERS, PATCH, IMAGE = 32, 4, 64, 2, 4, 16
MHA_D, MHA_HEADS = 16, 4
RNN_IN, RNN_HIDDEN = 5, 8


def path(name: str) -> str:
    return str(FIXTURES / f"zoo_{name}.safetensors")


def io(name: str) -> dict[str, np.ndarray]:
    """The inputs and PyTorch's outputs stored for the fixture `name`."""
    with np.load(FIXTURES / f"zoo_{name}_io.npz") as f:
        return {k: f[k] for k in f.files}


def attend(q: jax.Array, k: jax.Array, v: jax.Array, heads: int) -> jax.Array:
    """Softmax attention of (T, d) projections, heads split off the last axis, scores
    scaled by 1/sqrt(d / heads) (as transformers' eager attention and PyTorch's)."""
    t, d = q.shape
    q, k, v = (a.reshape(a.shape[0], heads, -1).transpose(1, 0, 2) for a in (q, k, v))
    w = jax.nn.softmax(q @ k.transpose(0, 2, 1) / math.sqrt(d // heads), axis=-1)
    return (w @ v).transpose(1, 0, 2).reshape(t, d)


# ---------------------------------------------------------------------------------------
# transformers' ResNetModel: embedding_size 8, hidden_sizes [8, 16], depths [1, 1], basic
# layers. Equinox BatchNorm keeps its running statistics in an `eqx.nn.State`.


def _max_pool_chw(x: jax.Array) -> jax.Array:  # nn.MaxPool2d(3, 2, padding=1)
    pad = ((0, 0), (1, 1), (1, 1))
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3), (1, 2, 2), pad)


class EqxConvLayer(eqx.Module):
    """transformers' `ResNetConvLayer` (and, with no ReLU, `ResNetShortCut`)."""

    convolution: eqx.nn.Conv2d
    normalization: eqx.nn.BatchNorm
    relu: bool = eqx.field(static=True)

    def __init__(self, c_in, c_out, k, stride, relu, mode, key) -> None:
        self.convolution = eqx.nn.Conv2d(
            c_in, c_out, k, stride=stride, padding=k // 2, use_bias=False, key=key
        )
        self.normalization = eqx.nn.BatchNorm(c_out, "batch", eps=BN_EPS, mode=mode)
        self.relu = relu

    def __call__(self, x: jax.Array, state: eqx.nn.State) -> tuple[jax.Array, eqx.nn.State]:
        h, state = self.normalization(self.convolution(x), state, inference=True)
        return (jax.nn.relu(h) if self.relu else h), state


class EqxBasicLayer(eqx.Module):
    shortcut: EqxConvLayer | None
    layer: list[EqxConvLayer]

    def __init__(self, c_in, c_out, stride, mode, key) -> None:
        k1, k2, k3 = jax.random.split(key, 3)
        downsample = c_in != c_out or stride != 1
        self.shortcut = (
            EqxConvLayer(c_in, c_out, 1, stride, False, mode, k3) if downsample else None
        )
        self.layer = [
            EqxConvLayer(c_in, c_out, 3, stride, True, mode, k1),
            EqxConvLayer(c_out, c_out, 3, 1, False, mode, k2),
        ]

    def __call__(self, x, state):
        h = x
        for conv in self.layer:
            h, state = conv(h, state)
        residual = x
        if self.shortcut is not None:
            residual, state = self.shortcut(x, state)
        return jax.nn.relu(h + residual), state


class EqxStage(eqx.Module):
    layers: list[EqxBasicLayer]

    def __init__(self, c_in, c_out, stride, mode, key) -> None:
        self.layers = [EqxBasicLayer(c_in, c_out, stride, mode, key)]

    def __call__(self, x, state):
        for layer in self.layers:
            x, state = layer(x, state)
        return x, state


class EqxResNetEncoder(eqx.Module):
    stages: list[EqxStage]

    def __init__(self, mode, key) -> None:
        k1, k2 = jax.random.split(key)
        self.stages = [EqxStage(8, 8, 1, mode, k1), EqxStage(8, 16, 2, mode, k2)]


class EqxResNetEmbeddings(eqx.Module):
    embedder: EqxConvLayer


class EqxResNet(eqx.Module):
    embedder: EqxResNetEmbeddings
    encoder: EqxResNetEncoder

    def __init__(self, key: jax.Array, mode: str = "ema") -> None:
        k1, k2 = jax.random.split(key)
        self.embedder = EqxResNetEmbeddings(EqxConvLayer(3, 8, 7, 2, True, mode, k1))
        self.encoder = EqxResNetEncoder(mode, k2)

    def __call__(self, x: jax.Array, state: eqx.nn.State):
        """One (3, H, W) image -> (last hidden state (16, h, w), pooled (16, 1, 1))."""
        h, state = self.embedder.embedder(x, state)
        h = _max_pool_chw(h)
        for stage in self.encoder.stages:
            h, state = stage(h, state)
        return (h, h.mean(axis=(1, 2), keepdims=True)), state


def eqx_resnet(mode: str = "ema") -> tuple[EqxResNet, eqx.nn.State]:
    """`(model, state)`; `mode` is Equinox BatchNorm's (its running statistics are kept
    differently in `"ema"` and `"batch"` modes)."""
    return eqx.nn.make_with_state(EqxResNet)(jax.random.key(0), mode=mode)


@eqx.filter_jit
def apply_eqx_resnet(model_state, inputs: dict) -> dict:
    model, state = model_state
    y, pooled = jax.vmap(lambda x: model(x, state)[0], axis_name="batch")(inputs["x"])
    return {"y": y, "pooled": pooled}


class NnxConvLayer(nnx.Module):
    def __init__(self, c_in, c_out, k, stride, relu, rngs: nnx.Rngs) -> None:
        p = k // 2
        self.convolution = nnx.Conv(
            c_in,
            c_out,
            (k, k),
            strides=stride,
            padding=((p, p), (p, p)),
            use_bias=False,
            rngs=rngs,
        )
        self.normalization = nnx.BatchNorm(
            c_out, use_running_average=True, epsilon=BN_EPS, rngs=rngs
        )
        self.relu = relu

    def __call__(self, x: jax.Array) -> jax.Array:  # NHWC
        h = self.normalization(self.convolution(x))
        return jax.nn.relu(h) if self.relu else h


class NnxBasicLayer(nnx.Module):
    def __init__(self, c_in, c_out, stride, rngs: nnx.Rngs) -> None:
        downsample = c_in != c_out or stride != 1
        self.shortcut = NnxConvLayer(c_in, c_out, 1, stride, False, rngs) if downsample else None
        self.layer = nnx.List(
            [
                NnxConvLayer(c_in, c_out, 3, stride, True, rngs),
                NnxConvLayer(c_out, c_out, 3, 1, False, rngs),
            ]
        )

    def __call__(self, x):
        h = x
        for conv in self.layer:
            h = conv(h)
        return jax.nn.relu(h + (x if self.shortcut is None else self.shortcut(x)))


class NnxStage(nnx.Module):
    def __init__(self, c_in, c_out, stride, rngs: nnx.Rngs) -> None:
        self.layers = nnx.List([NnxBasicLayer(c_in, c_out, stride, rngs)])


class NnxResNetEncoder(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.stages = nnx.List([NnxStage(8, 8, 1, rngs), NnxStage(8, 16, 2, rngs)])


class NnxResNetEmbeddings(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.embedder = NnxConvLayer(3, 8, 7, 2, True, rngs)


class NnxResNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.embedder = NnxResNetEmbeddings(rngs)
        self.encoder = NnxResNetEncoder(rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(N, 3, H, W) as PyTorch's -> (last hidden state, pooled), NCHW."""
        h = self.embedder.embedder(x.transpose(0, 2, 3, 1))
        h = nnx.max_pool(h, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage in self.encoder.stages:
            for layer in stage.layers:
                h = layer(h)
        h = h.transpose(0, 3, 1, 2)
        return h, h.mean(axis=(2, 3), keepdims=True)


@nnx.jit
def apply_nnx_resnet(model: NnxResNet, inputs: dict) -> dict:
    y, pooled = model(inputs["x"])
    return {"y": y, "pooled": pooled}


# ---------------------------------------------------------------------------------------
# transformers' ViTModel: hidden 32, 2 pre-norm layers, 4 heads, image 16, patch 4. Its
# `cls_token` and `position_embeddings` are bare parameters: plain arrays (Equinox) and
# `nnx.Param`s here.


class EqxPatchEmbeddings(eqx.Module):
    projection: eqx.nn.Conv2d


class EqxViTEmbeddings(eqx.Module):
    cls_token: jax.Array
    position_embeddings: jax.Array
    patch_embeddings: EqxPatchEmbeddings

    def __init__(self, key: jax.Array) -> None:
        k1, k2, k3 = jax.random.split(key, 3)
        patches = (IMAGE // PATCH) ** 2
        self.cls_token = jax.random.normal(k1, (1, 1, VIT_D))
        self.position_embeddings = jax.random.normal(k2, (1, patches + 1, VIT_D))
        self.patch_embeddings = EqxPatchEmbeddings(
            eqx.nn.Conv2d(3, VIT_D, PATCH, stride=PATCH, key=k3)
        )

    def __call__(self, x: jax.Array) -> jax.Array:  # (3, H, W) -> (1 + patches, d)
        h = self.patch_embeddings.projection(x)  # (d, H / p, W / p)
        h = h.reshape(VIT_D, -1).T  # patches in row-major order, as flatten(2)
        return jnp.concatenate([self.cls_token[0], h]) + self.position_embeddings[0]


class EqxViTAttention(eqx.Module):
    q_proj: eqx.nn.Linear
    k_proj: eqx.nn.Linear
    v_proj: eqx.nn.Linear
    o_proj: eqx.nn.Linear

    def __init__(self, key: jax.Array) -> None:
        ks = jax.random.split(key, 4)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (
            eqx.nn.Linear(VIT_D, VIT_D, key=k) for k in ks
        )

    def __call__(self, x: jax.Array) -> jax.Array:  # (T, d)
        lin = lambda f: jax.vmap(f)(x)  # noqa: E731
        h = attend(lin(self.q_proj), lin(self.k_proj), lin(self.v_proj), VIT_HEADS)
        return jax.vmap(self.o_proj)(h)


class EqxViTMLP(eqx.Module):
    fc1: eqx.nn.Linear
    fc2: eqx.nn.Linear

    def __init__(self, key: jax.Array) -> None:
        k1, k2 = jax.random.split(key)
        self.fc1 = eqx.nn.Linear(VIT_D, VIT_FF, key=k1)
        self.fc2 = eqx.nn.Linear(VIT_FF, VIT_D, key=k2)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.vmap(self.fc2)(jax.nn.gelu(jax.vmap(self.fc1)(x), approximate=False))


class EqxViTLayer(eqx.Module):
    attention: EqxViTAttention
    layernorm_before: eqx.nn.LayerNorm
    layernorm_after: eqx.nn.LayerNorm
    mlp: EqxViTMLP

    def __init__(self, key: jax.Array) -> None:
        k1, k2 = jax.random.split(key)
        self.attention = EqxViTAttention(k1)
        self.layernorm_before = eqx.nn.LayerNorm(VIT_D, eps=VIT_EPS)
        self.layernorm_after = eqx.nn.LayerNorm(VIT_D, eps=VIT_EPS)
        self.mlp = EqxViTMLP(k2)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attention(jax.vmap(self.layernorm_before)(x))
        return x + self.mlp(jax.vmap(self.layernorm_after)(x))


class EqxPooler(eqx.Module):
    dense: eqx.nn.Linear


class EqxViT(eqx.Module):
    embeddings: EqxViTEmbeddings
    layers: list[EqxViTLayer]
    layernorm: eqx.nn.LayerNorm
    pooler: EqxPooler

    def __init__(self, key: jax.Array) -> None:
        ks = jax.random.split(key, VIT_LAYERS + 2)
        self.embeddings = EqxViTEmbeddings(ks[0])
        self.layers = [EqxViTLayer(k) for k in ks[1:-1]]
        self.layernorm = eqx.nn.LayerNorm(VIT_D, eps=VIT_EPS)
        self.pooler = EqxPooler(eqx.nn.Linear(VIT_D, VIT_D, key=ks[-1]))

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One (3, 16, 16) image -> (last hidden state (17, d), pooled (d,))."""
        h = self.embeddings(x)
        for layer in self.layers:
            h = layer(h)
        h = jax.vmap(self.layernorm)(h)
        return h, jnp.tanh(self.pooler.dense(h[0]))


@eqx.filter_jit
def apply_eqx_vit(model: EqxViT, inputs: dict) -> dict:
    y, pooled = jax.vmap(model)(inputs["x"])
    return {"y": y, "pooled": pooled}


class NnxPatchEmbeddings(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.projection = nnx.Conv(
            3, VIT_D, (PATCH, PATCH), strides=PATCH, padding="VALID", rngs=rngs
        )


class NnxViTEmbeddings(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        patches = (IMAGE // PATCH) ** 2
        self.cls_token = nnx.Param(jax.random.normal(rngs.params(), (1, 1, VIT_D)))
        self.position_embeddings = nnx.Param(
            jax.random.normal(rngs.params(), (1, patches + 1, VIT_D))
        )
        self.patch_embeddings = NnxPatchEmbeddings(rngs)

    def __call__(self, x: jax.Array) -> jax.Array:  # (N, 3, H, W) -> (N, 1 + patches, d)
        h = self.patch_embeddings.projection(x.transpose(0, 2, 3, 1))  # (N, H/p, W/p, d)
        h = h.reshape(x.shape[0], -1, VIT_D)  # row-major patches, as PyTorch's flatten(2)
        cls = jnp.broadcast_to(self.cls_token[...], (x.shape[0], 1, VIT_D))
        return jnp.concatenate([cls, h], axis=1) + self.position_embeddings[...]


class NnxViTAttention(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.q_proj = nnx.Linear(VIT_D, VIT_D, rngs=rngs)
        self.k_proj = nnx.Linear(VIT_D, VIT_D, rngs=rngs)
        self.v_proj = nnx.Linear(VIT_D, VIT_D, rngs=rngs)
        self.o_proj = nnx.Linear(VIT_D, VIT_D, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:  # (N, T, d)
        one = lambda q, k, v: attend(q, k, v, VIT_HEADS)  # noqa: E731
        return self.o_proj(jax.vmap(one)(self.q_proj(x), self.k_proj(x), self.v_proj(x)))


class NnxViTMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.fc1 = nnx.Linear(VIT_D, VIT_FF, rngs=rngs)
        self.fc2 = nnx.Linear(VIT_FF, VIT_D, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class NnxViTLayer(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.attention = NnxViTAttention(rngs)
        self.layernorm_before = nnx.LayerNorm(VIT_D, epsilon=VIT_EPS, rngs=rngs)
        self.layernorm_after = nnx.LayerNorm(VIT_D, epsilon=VIT_EPS, rngs=rngs)
        self.mlp = NnxViTMLP(rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attention(self.layernorm_before(x))
        return x + self.mlp(self.layernorm_after(x))


class NnxPooler(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.dense = nnx.Linear(VIT_D, VIT_D, rngs=rngs)


class NnxViT(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.embeddings = NnxViTEmbeddings(rngs)
        self.layers = nnx.List([NnxViTLayer(rngs) for _ in range(VIT_LAYERS)])
        self.layernorm = nnx.LayerNorm(VIT_D, epsilon=VIT_EPS, rngs=rngs)
        self.pooler = NnxPooler(rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = self.embeddings(x)
        for layer in self.layers:
            h = layer(h)
        h = self.layernorm(h)
        return h, jnp.tanh(self.pooler.dense(h[:, 0]))


@nnx.jit
def apply_nnx_vit(model: NnxViT, inputs: dict) -> dict:
    y, pooled = model(inputs["x"])
    return {"y": y, "pooled": pooled}


# ---------------------------------------------------------------------------------------
# nn.MultiheadAttention(16, 4, batch_first=True) at `attn`: self-attention (packed
# in_proj), and cross-attention with key/value sizes of their own (q/k/v_proj_weight).


class EqxAttention(eqx.Module):
    attn: eqx.nn.MultiheadAttention

    def __init__(
        self,
        kdim: int | None = None,
        vdim: int | None = None,
        d: int = MHA_D,
        heads: int = MHA_HEADS,
    ) -> None:
        self.attn = eqx.nn.MultiheadAttention(
            heads,
            d,
            key_size=kdim,
            value_size=vdim,
            output_size=d,
            use_query_bias=True,
            use_key_bias=True,
            use_value_bias=True,
            use_output_bias=True,
            key=jax.random.key(0),
        )

    def __call__(self, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:  # (N, T, .)
        return jax.vmap(self.attn)(q, k, v)


class NnxAttention(nnx.Module):
    def __init__(self, kv: int | None = None, d: int = MHA_D, heads: int = MHA_HEADS) -> None:
        self.attn = nnx.MultiHeadAttention(
            heads,
            d,
            qkv_features=d,
            out_features=d,
            in_kv_features=kv,
            decode=False,
            rngs=nnx.Rngs(0),
        )

    def __call__(self, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        return self.attn(q, k, v)


def _apply_attention(model, inputs: dict) -> dict:
    x = inputs["x"]
    return {"y": model(x, inputs.get("key", x), inputs.get("value", x))}


apply_attention = eqx.filter_jit(_apply_attention)
apply_nnx_attention = nnx.jit(_apply_attention)


# ---------------------------------------------------------------------------------------
# nn.LSTM(5, 8, batch_first=True) / nn.GRU(5, 8, batch_first=True) at `rnn`, from a zero
# state: every step's hidden state.


class EqxLSTM(eqx.Module):
    rnn: eqx.nn.LSTMCell

    def __init__(self, n_in: int = RNN_IN, hidden: int = RNN_HIDDEN) -> None:
        self.rnn = eqx.nn.LSTMCell(n_in, hidden, key=jax.random.key(0))

    def __call__(self, xs: jax.Array) -> jax.Array:  # (N, T, in) -> (N, T, hidden)
        def one(xs):
            zero = jnp.zeros(self.rnn.hidden_size)

            def step(hc, x):
                hc = self.rnn(x, hc)
                return hc, hc[0]

            return jax.lax.scan(step, (zero, zero), xs)[1]

        return jax.vmap(one)(xs)


class EqxGRU(eqx.Module):
    rnn: eqx.nn.GRUCell

    def __init__(self, n_in: int = RNN_IN, hidden: int = RNN_HIDDEN) -> None:
        self.rnn = eqx.nn.GRUCell(n_in, hidden, key=jax.random.key(0))

    def __call__(self, xs: jax.Array) -> jax.Array:
        def one(xs):
            def step(h, x):
                h = self.rnn(x, h)
                return h, h

            return jax.lax.scan(step, jnp.zeros(self.rnn.hidden_size), xs)[1]

        return jax.vmap(one)(xs)


@eqx.filter_jit
def apply_rnn(model, inputs: dict) -> dict:
    return {"y": model(inputs["x"])}


# ---------------------------------------------------------------------------------------


class Case(NamedTuple):
    fixture: str  # tests/fixtures/zoo_<fixture>.safetensors
    framework: str  # "equinox" or "nnx"
    make: Callable[[], Any]  # the twin with its own random weights
    apply: Callable[[Any, dict], dict]  # (twin, inputs) -> {"y": ..., "pooled": ...}
    load_kw: dict | None = None  # what tw.load needs besides convention="torch"

    def load(self, source: Any, *, destination: str = "abstract") -> Any:
        """`tw.load` the checkpoint `source` into the twin (`"abstract"`: its shapes only;
        `"zeros"`: a concrete one)."""
        tree = (abstract if destination == "abstract" else zeros)(self.make, self.framework)
        return tw.load(tree, source, convention="torch", **(self.load_kw or {}))


#: NNX holds ViT's bare `cls_token` and `position_embeddings` as `Param`s of a module whose
#: layout treewalk cannot know, and refuses to guess it (status `undecided`); PyTorch's
#: `(1, 1, d)` / `(1, T, d)` is the twin's layout.
VIT_NNX_LAYOUTS = {r"^embeddings/(cls_token|position_embeddings)$": "as-is"}

#: The twins. An Equinox ResNet is `(model, state)`, in each of BatchNorm's two modes.
CASES: dict[str, Case] = {
    "resnet-equinox-ema": Case("resnet", "equinox", lambda: eqx_resnet("ema"), apply_eqx_resnet),
    "resnet-equinox-batch": Case(
        "resnet", "equinox", lambda: eqx_resnet("batch"), apply_eqx_resnet
    ),
    "resnet-nnx": Case("resnet", "nnx", lambda: NnxResNet(nnx.Rngs(0)), apply_nnx_resnet),
    "vit-equinox": Case("vit", "equinox", lambda: EqxViT(jax.random.key(0)), apply_eqx_vit),
    "vit-nnx": Case(
        "vit", "nnx", lambda: NnxViT(nnx.Rngs(0)), apply_nnx_vit, {"layouts": VIT_NNX_LAYOUTS}
    ),
    "mha-equinox": Case("mha", "equinox", EqxAttention, apply_attention),
    "mha-nnx": Case("mha", "nnx", NnxAttention, apply_nnx_attention),
    "mha_kdim-equinox": Case("mha_kdim", "equinox", lambda: EqxAttention(8, 12), apply_attention),
    "mha_kv-equinox": Case("mha_kv", "equinox", lambda: EqxAttention(8, 8), apply_attention),
    "mha_kv-nnx": Case("mha_kv", "nnx", lambda: NnxAttention(8), apply_nnx_attention),
    "lstm-equinox": Case("lstm", "equinox", EqxLSTM, apply_rnn),
    "gru-equinox": Case("gru", "equinox", EqxGRU, apply_rnn),
}


def abstract(make: Callable[[], Any], framework: str) -> Any:
    """The twin's shapes only (nothing initialised: random initialisation of each layer,
    op by op, takes seconds): `tw.load` materialises it from the checkpoint."""
    return nnx.eval_shape(make) if framework == "nnx" else eqx.filter_eval_shape(make)


def zeros(make: Callable[[], Any], framework: str) -> Any:
    """A concrete twin (all zeros, cheaply), for the concrete-destination path."""

    def fill(leaf):
        if isinstance(leaf, jax.ShapeDtypeStruct):
            return jnp.asarray(np.zeros(leaf.shape, leaf.dtype))
        return leaf

    tree = abstract(make, framework)
    if framework == "nnx":
        graphdef, state = nnx.split(tree)
        return nnx.merge(graphdef, jax.tree.map(fill, state))
    return jax.tree.map(fill, tree)


def arrays(tree: Any) -> list:
    """The twin's arrays, in order (an NNX module's through its state)."""
    if isinstance(tree, nnx.Module):
        tree = nnx.state(tree)
    return [leaf for leaf in jax.tree.leaves(tree) if eqx.is_array(leaf)]
