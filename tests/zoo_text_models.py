"""JAX twins of the transformers models of tests/fixtures/make_zoo_text.py (HF GPT-2 and
BERT), for tests/test_load_zoo_text.py: an Equinox and a Flax NNX twin of each, with
attribute paths named like the `state_dict` keys (`transformer.h.0.attn.c_attn.weight` is
`transformer.h[0].attn.c_attn.weight`; BERT's `LayerNorm` spelled as HF spells it), so a
checkpoint loads with no `rename=`.

GPT-2's `Conv1D` projections are plain Linear layers here; their `(in, out)` layout is
said by the source (the `nn.Module`'s types, or `layouts=` for a file). Numerics follow
transformers' eager attention: GPT-2 `gelu_new` (tanh GELU), causal mask, LayerNorm eps
1e-5, `c_attn` split into q, k, v on its last axis, scores scaled by 1/sqrt(head_dim),
logits through the tied embedding; BERT exact GELU, eps 1e-12, padded keys masked with
float32's most negative value, pooler tanh(dense(h[:, 0]))."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from load_models import FIXTURES

GPT2_FILE = FIXTURES / "zoo_gpt2.safetensors"
BERT_FILE = FIXTURES / "zoo_bert.safetensors"

#: The layout of GPT-2's `Conv1D` weights in a file: `(in, out)`.
CONV1D_LAYOUTS = {r"(c_attn|c_proj|c_fc)/weight$": "io"}

VOCAB, POSITIONS, D, HEADS, LAYERS = 64, 16, 32, 4, 2
GPT2_FF, BERT_FF, TYPES = 4 * D, 64, 2
GPT2_EPS, BERT_EPS = 1e-5, 1e-12
NEG = float(np.finfo(np.float32).min)


def io(name: str) -> dict[str, np.ndarray]:
    """The inputs and transformers' outputs stored for `name` (`"gpt2"`, `"bert"`)."""
    with np.load(FIXTURES / f"zoo_{name}_io.npz") as f:
        return {k: f[k] for k in f.files}


def attend(q: jax.Array, k: jax.Array, v: jax.Array, heads: int, allowed: jax.Array):
    """Multi-head attention on `(..., T, D)` arrays, as transformers' eager attention:
    softmax(q k^T / sqrt(head_dim) with the scores where `allowed` (broadcast to
    `(..., heads, T, T)`) is false set to float32's minimum) v."""
    *batch, t, d = q.shape
    q, k, v = (a.reshape(*batch, t, heads, d // heads) for a in (q, k, v))
    scores = jnp.einsum("...qhd,...khd->...hqk", q, k) / math.sqrt(d // heads)
    w = jax.nn.softmax(jnp.where(allowed, scores, NEG), axis=-1)
    return jnp.einsum("...hqk,...khd->...qhd", w, v).reshape(*batch, t, d)


def causal(t: int) -> jax.Array:
    return jnp.tril(jnp.ones((t, t), bool))


def keys_allowed(mask: jax.Array) -> jax.Array:
    """BERT's extended attention mask: `(..., T)` -> `(..., 1, 1, T)`, padded keys off."""
    return (mask != 0)[..., None, None, :]


def _lin(layer, x: jax.Array) -> jax.Array:
    """An Equinox layer (on one vector) over the rows of `x`."""
    return jax.vmap(layer)(x)


# ---------------------------------------------------------------------------------------
# GPT-2, Equinox: `__call__(input_ids (B, T)) -> logits (B, T, VOCAB)`.


class EqxGPT2Attention(eqx.Module):
    c_attn: eqx.nn.Linear
    c_proj: eqx.nn.Linear
    n_head: int = eqx.field(static=True)

    def __init__(self, key: jax.Array) -> None:
        k1, k2 = jax.random.split(key)
        self.c_attn = eqx.nn.Linear(D, 3 * D, key=k1)
        self.c_proj = eqx.nn.Linear(D, D, key=k2)
        self.n_head = HEADS

    def __call__(self, x: jax.Array) -> jax.Array:
        q, k, v = jnp.split(_lin(self.c_attn, x), 3, axis=-1)
        return _lin(self.c_proj, attend(q, k, v, self.n_head, causal(x.shape[0])))


class EqxGPT2MLP(eqx.Module):
    c_fc: eqx.nn.Linear
    c_proj: eqx.nn.Linear

    def __init__(self, key: jax.Array) -> None:
        k1, k2 = jax.random.split(key)
        self.c_fc = eqx.nn.Linear(D, GPT2_FF, key=k1)
        self.c_proj = eqx.nn.Linear(GPT2_FF, D, key=k2)

    def __call__(self, x: jax.Array) -> jax.Array:
        return _lin(self.c_proj, jax.nn.gelu(_lin(self.c_fc, x), approximate=True))


class EqxGPT2Block(eqx.Module):
    ln_1: eqx.nn.LayerNorm
    attn: EqxGPT2Attention
    ln_2: eqx.nn.LayerNorm
    mlp: EqxGPT2MLP

    def __init__(self, key: jax.Array) -> None:
        k1, k2 = jax.random.split(key)
        self.ln_1 = eqx.nn.LayerNorm(D, eps=GPT2_EPS)
        self.attn = EqxGPT2Attention(k1)
        self.ln_2 = eqx.nn.LayerNorm(D, eps=GPT2_EPS)
        self.mlp = EqxGPT2MLP(k2)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attn(_lin(self.ln_1, x))
        return x + self.mlp(_lin(self.ln_2, x))


class EqxGPT2Model(eqx.Module):
    wte: eqx.nn.Embedding
    wpe: eqx.nn.Embedding
    h: list[EqxGPT2Block]
    ln_f: eqx.nn.LayerNorm

    def __init__(self, key: jax.Array) -> None:
        k1, k2, *ks = jax.random.split(key, 2 + LAYERS)
        self.wte = eqx.nn.Embedding(VOCAB, D, key=k1)
        self.wpe = eqx.nn.Embedding(POSITIONS, D, key=k2)
        self.h = [EqxGPT2Block(k) for k in ks]
        self.ln_f = eqx.nn.LayerNorm(D, eps=GPT2_EPS)

    def __call__(self, ids: jax.Array) -> jax.Array:  # ids: (T,)
        x = _lin(self.wte, ids) + _lin(self.wpe, jnp.arange(ids.shape[0]))
        for block in self.h:
            x = block(x)
        return _lin(self.ln_f, x)


class EqxGPT2LMHeadModel(eqx.Module):
    """No `lm_head` parameter: the head is the tied embedding, `h @ wte.weight.T`."""

    transformer: EqxGPT2Model

    def __init__(self, key: jax.Array) -> None:
        self.transformer = EqxGPT2Model(key)

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        def one(ids: jax.Array) -> jax.Array:
            return self.transformer(ids) @ self.transformer.wte.weight.T

        return jax.vmap(one)(jnp.asarray(input_ids))


# ---------------------------------------------------------------------------------------
# GPT-2, NNX: `__call__(input_ids (B, T)) -> logits (B, T, VOCAB)`.


def _nnx_norm(eps: float, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(D, epsilon=eps, use_fast_variance=False, rngs=rngs)


class NnxGPT2Attention(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.c_attn = nnx.Linear(D, 3 * D, rngs=rngs)
        self.c_proj = nnx.Linear(D, D, rngs=rngs)
        self.n_head = HEADS

    def __call__(self, x: jax.Array) -> jax.Array:
        q, k, v = jnp.split(self.c_attn(x), 3, axis=-1)
        return self.c_proj(attend(q, k, v, self.n_head, causal(x.shape[-2])))


class NnxGPT2MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.c_fc = nnx.Linear(D, GPT2_FF, rngs=rngs)
        self.c_proj = nnx.Linear(GPT2_FF, D, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.c_proj(jax.nn.gelu(self.c_fc(x), approximate=True))


class NnxGPT2Block(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.ln_1 = _nnx_norm(GPT2_EPS, rngs)
        self.attn = NnxGPT2Attention(rngs)
        self.ln_2 = _nnx_norm(GPT2_EPS, rngs)
        self.mlp = NnxGPT2MLP(rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NnxGPT2Model(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.wte = nnx.Embed(VOCAB, D, rngs=rngs)
        self.wpe = nnx.Embed(POSITIONS, D, rngs=rngs)
        self.h = nnx.List([NnxGPT2Block(rngs) for _ in range(LAYERS)])
        self.ln_f = _nnx_norm(GPT2_EPS, rngs)

    def __call__(self, ids: jax.Array) -> jax.Array:  # ids: (B, T)
        x = self.wte(ids) + self.wpe(jnp.arange(ids.shape[-1]))
        for block in self.h:
            x = block(x)
        return self.ln_f(x)


class NnxGPT2LMHeadModel(nnx.Module):
    """The head is the embedding module itself: `lm_head` and `transformer.wte` are one
    `nnx.Embed` (one `Param`), so the tie survives `nnx.split`/`merge` and training.
    NNX lists a shared Variable at one path only, its first in sorted order:
    `lm_head/embedding`."""

    def __init__(self, rngs: nnx.Rngs) -> None:
        self.transformer = NnxGPT2Model(rngs)
        self.lm_head = self.transformer.wte

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        return self.lm_head.attend(self.transformer(jnp.asarray(input_ids)))


# ---------------------------------------------------------------------------------------
# BERT, Equinox: `__call__(input_ids, attention_mask, token_type_ids)` (each (B, T)) ->
# `(last_hidden_state (B, T, D), pooler_output (B, D))`.


class EqxBertEmbeddings(eqx.Module):
    word_embeddings: eqx.nn.Embedding
    position_embeddings: eqx.nn.Embedding
    token_type_embeddings: eqx.nn.Embedding
    LayerNorm: eqx.nn.LayerNorm

    def __init__(self, key: jax.Array) -> None:
        k1, k2, k3 = jax.random.split(key, 3)
        self.word_embeddings = eqx.nn.Embedding(VOCAB, D, key=k1)
        self.position_embeddings = eqx.nn.Embedding(POSITIONS, D, key=k2)
        self.token_type_embeddings = eqx.nn.Embedding(TYPES, D, key=k3)
        self.LayerNorm = eqx.nn.LayerNorm(D, eps=BERT_EPS)

    def __call__(self, ids: jax.Array, types: jax.Array) -> jax.Array:
        x = _lin(self.word_embeddings, ids) + _lin(self.token_type_embeddings, types)
        x = x + _lin(self.position_embeddings, jnp.arange(ids.shape[0]))
        return _lin(self.LayerNorm, x)


class EqxBertSelfAttention(eqx.Module):
    query: eqx.nn.Linear
    key: eqx.nn.Linear
    value: eqx.nn.Linear
    num_attention_heads: int = eqx.field(static=True)

    def __init__(self, key: jax.Array) -> None:
        k1, k2, k3 = jax.random.split(key, 3)
        self.query = eqx.nn.Linear(D, D, key=k1)
        self.key = eqx.nn.Linear(D, D, key=k2)
        self.value = eqx.nn.Linear(D, D, key=k3)
        self.num_attention_heads = HEADS

    def __call__(self, x: jax.Array, allowed: jax.Array) -> jax.Array:
        q, k, v = (_lin(f, x) for f in (self.query, self.key, self.value))
        return attend(q, k, v, self.num_attention_heads, allowed)


class EqxBertOutput(eqx.Module):
    """`attention.output` and `output`: dense, then LayerNorm of the residual sum."""

    dense: eqx.nn.Linear
    LayerNorm: eqx.nn.LayerNorm

    def __init__(self, d_in: int, key: jax.Array) -> None:
        self.dense = eqx.nn.Linear(d_in, D, key=key)
        self.LayerNorm = eqx.nn.LayerNorm(D, eps=BERT_EPS)

    def __call__(self, h: jax.Array, x: jax.Array) -> jax.Array:
        return _lin(self.LayerNorm, _lin(self.dense, h) + x)


class EqxBertAttention(eqx.Module):
    self: EqxBertSelfAttention
    output: EqxBertOutput

    def __init__(self, key: jax.Array) -> None:
        k1, k2 = jax.random.split(key)
        self.self = EqxBertSelfAttention(k1)
        self.output = EqxBertOutput(D, k2)

    def __call__(self, x: jax.Array, allowed: jax.Array) -> jax.Array:
        return self.output(self.self(x, allowed), x)


class EqxBertIntermediate(eqx.Module):
    dense: eqx.nn.Linear

    def __init__(self, key: jax.Array) -> None:
        self.dense = eqx.nn.Linear(D, BERT_FF, key=key)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.gelu(_lin(self.dense, x), approximate=False)


class EqxBertLayer(eqx.Module):
    attention: EqxBertAttention
    intermediate: EqxBertIntermediate
    output: EqxBertOutput

    def __init__(self, key: jax.Array) -> None:
        k1, k2, k3 = jax.random.split(key, 3)
        self.attention = EqxBertAttention(k1)
        self.intermediate = EqxBertIntermediate(k2)
        self.output = EqxBertOutput(BERT_FF, k3)

    def __call__(self, x: jax.Array, allowed: jax.Array) -> jax.Array:
        x = self.attention(x, allowed)
        return self.output(self.intermediate(x), x)


class EqxBertEncoder(eqx.Module):
    layer: list[EqxBertLayer]

    def __init__(self, key: jax.Array) -> None:
        self.layer = [EqxBertLayer(k) for k in jax.random.split(key, LAYERS)]

    def __call__(self, x: jax.Array, allowed: jax.Array) -> jax.Array:
        for layer in self.layer:
            x = layer(x, allowed)
        return x


class EqxBertPooler(eqx.Module):
    dense: eqx.nn.Linear

    def __init__(self, key: jax.Array) -> None:
        self.dense = eqx.nn.Linear(D, D, key=key)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.tanh(self.dense(x[0]))


class EqxBertModel(eqx.Module):
    embeddings: EqxBertEmbeddings
    encoder: EqxBertEncoder
    pooler: EqxBertPooler

    def __init__(self, key: jax.Array) -> None:
        k1, k2, k3 = jax.random.split(key, 3)
        self.embeddings = EqxBertEmbeddings(k1)
        self.encoder = EqxBertEncoder(k2)
        self.pooler = EqxBertPooler(k3)

    def __call__(
        self, input_ids: jax.Array, attention_mask: jax.Array, token_type_ids: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        def one(ids: jax.Array, mask: jax.Array, types: jax.Array):
            h = self.encoder(self.embeddings(ids, types), keys_allowed(mask))
            return h, self.pooler(h)

        args = (input_ids, attention_mask, token_type_ids)
        return jax.vmap(one)(*(jnp.asarray(a) for a in args))


# ---------------------------------------------------------------------------------------
# BERT, NNX: the same signature, on batches.


class NnxBertEmbeddings(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.word_embeddings = nnx.Embed(VOCAB, D, rngs=rngs)
        self.position_embeddings = nnx.Embed(POSITIONS, D, rngs=rngs)
        self.token_type_embeddings = nnx.Embed(TYPES, D, rngs=rngs)
        self.LayerNorm = _nnx_norm(BERT_EPS, rngs)

    def __call__(self, ids: jax.Array, types: jax.Array) -> jax.Array:
        x = self.word_embeddings(ids) + self.token_type_embeddings(types)
        return self.LayerNorm(x + self.position_embeddings(jnp.arange(ids.shape[-1])))


class NnxBertSelfAttention(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.query = nnx.Linear(D, D, rngs=rngs)
        self.key = nnx.Linear(D, D, rngs=rngs)
        self.value = nnx.Linear(D, D, rngs=rngs)
        self.num_attention_heads = HEADS

    def __call__(self, x: jax.Array, allowed: jax.Array) -> jax.Array:
        q, k, v = self.query(x), self.key(x), self.value(x)
        return attend(q, k, v, self.num_attention_heads, allowed)


class NnxBertOutput(nnx.Module):
    def __init__(self, d_in: int, rngs: nnx.Rngs) -> None:
        self.dense = nnx.Linear(d_in, D, rngs=rngs)
        self.LayerNorm = _nnx_norm(BERT_EPS, rngs)

    def __call__(self, h: jax.Array, x: jax.Array) -> jax.Array:
        return self.LayerNorm(self.dense(h) + x)


class NnxBertAttention(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.self = NnxBertSelfAttention(rngs)
        self.output = NnxBertOutput(D, rngs)

    def __call__(self, x: jax.Array, allowed: jax.Array) -> jax.Array:
        return self.output(self.self(x, allowed), x)


class NnxBertIntermediate(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.dense = nnx.Linear(D, BERT_FF, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.gelu(self.dense(x), approximate=False)


class NnxBertLayer(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.attention = NnxBertAttention(rngs)
        self.intermediate = NnxBertIntermediate(rngs)
        self.output = NnxBertOutput(BERT_FF, rngs)

    def __call__(self, x: jax.Array, allowed: jax.Array) -> jax.Array:
        x = self.attention(x, allowed)
        return self.output(self.intermediate(x), x)


class NnxBertEncoder(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.layer = nnx.List([NnxBertLayer(rngs) for _ in range(LAYERS)])

    def __call__(self, x: jax.Array, allowed: jax.Array) -> jax.Array:
        for layer in self.layer:
            x = layer(x, allowed)
        return x


class NnxBertPooler(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.dense = nnx.Linear(D, D, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.tanh(self.dense(x[..., 0, :]))


class NnxBertModel(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.embeddings = NnxBertEmbeddings(rngs)
        self.encoder = NnxBertEncoder(rngs)
        self.pooler = NnxBertPooler(rngs)

    def __call__(
        self, input_ids: jax.Array, attention_mask: jax.Array, token_type_ids: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        x = self.embeddings(jnp.asarray(input_ids), jnp.asarray(token_type_ids))
        h = self.encoder(x, keys_allowed(jnp.asarray(attention_mask)))
        return h, self.pooler(h)
