"""Small real models of every framework treewalk supports, shared by the framework tests.

Every builder is cheap (a few small layers) and deterministic in its `seed`/`key`.
`TREES` lists one model per framework with the names its dense layers use, so a test can
run the same recipe everywhere: `@pytest.mark.parametrize("spec", TREES, ids=str)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import equinox as eqx
import flax.linen as nn
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# ---------------------------------------------------------------------------------------
# Equinox


class Block(eqx.Module):
    """Linear -> LayerNorm -> activation -> Linear, with a static and a function field."""

    linear1: eqx.nn.Linear
    norm: eqx.nn.LayerNorm
    linear2: eqx.nn.Linear
    act: Callable[[jax.Array], jax.Array]
    scale: float = eqx.field(static=True)

    def __init__(self, key: jax.Array, scale: float = 2.0):
        k1, k2 = jax.random.split(key)
        self.linear1 = eqx.nn.Linear(3, 4, key=k1)
        self.norm = eqx.nn.LayerNorm(4)
        self.linear2 = eqx.nn.Linear(4, 2, key=k2)
        self.act = jax.nn.relu
        self.scale = scale

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.scale * self.linear2(self.act(self.norm(self.linear1(x))))


class Wrapped(eqx.Module):
    """A wrapper module for model surgery: holds a Linear and a gain."""

    inner: eqx.nn.Linear
    gain: jax.Array

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.gain * self.inner(x)


def eqx_mlp(seed: int = 0) -> eqx.nn.MLP:
    """`eqx.nn.MLP(3 -> 4 -> 2)`: two Linear layers, function-valued activations."""
    return eqx.nn.MLP(3, 2, 4, 1, key=jax.random.key(seed))


def eqx_block(seed: int = 0) -> Block:
    return Block(jax.random.key(seed))


def eqx_layers(seed: int = 0, extra: bool = False) -> dict[str, eqx.nn.Linear]:
    """A dict of Linear layers; `extra=True` inserts an unrelated layer in the middle."""
    keys = jax.random.split(jax.random.key(seed), 3)
    out = {"first": eqx.nn.Linear(3, 4, key=keys[0])}
    if extra:
        out["middle"] = eqx.nn.Linear(4, 4, key=keys[1])
    out["last"] = eqx.nn.Linear(4, 2, key=keys[2])
    return out


# ---------------------------------------------------------------------------------------
# Flax NNX


class NNXModel(nnx.Module):
    """`l1: Linear(3, 4)`, `norm: LayerNorm(4)`, `l2: Linear(4, 2)` (+ `extra` in between)."""

    def __init__(self, rngs: nnx.Rngs, extra: bool = False):
        self.l1 = nnx.Linear(3, 4, rngs=rngs)
        if extra:
            self.extra = nnx.Linear(4, 4, rngs=rngs)
        self.norm = nnx.LayerNorm(4, rngs=rngs)
        self.l2 = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.l1(x)
        if hasattr(self, "extra"):
            h = self.extra(h)
        return self.l2(jax.nn.relu(self.norm(h)))


def nnx_model(seed: int = 0, extra: bool = False) -> NNXModel:
    return NNXModel(nnx.Rngs(seed), extra=extra)


# ---------------------------------------------------------------------------------------
# Flax linen


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Dense(4, name="dense_0")(x)
        x = nn.LayerNorm(name="norm")(x)
        return nn.Dense(2, name="dense_1")(jax.nn.relu(x))


def linen_params(seed: int = 0) -> dict[str, Any]:
    """`{"params": {"dense_0": {kernel, bias}, "norm": {scale, bias}, "dense_1": ...}}`."""
    return LinenMLP().init(jax.random.key(seed), jnp.ones((1, 3)))


def linen_partitioned_params(seed: int = 0) -> dict[str, Any]:
    """A `Dense` whose kernel is an `nn.Partitioned` box with names `(None, "model")`."""
    init = nn.with_partitioning(nn.initializers.lecun_normal(), (None, "model"))
    return nn.Dense(4, kernel_init=init).init(jax.random.key(seed), jnp.ones((1, 3)))


# ---------------------------------------------------------------------------------------
# Haiku


def _hk_forward(x: jax.Array) -> jax.Array:
    return hk.nets.MLP([4, 2], name="mlp")(x)


hk_mlp = hk.without_apply_rng(hk.transform(_hk_forward))


def haiku_params(seed: int = 0) -> dict[str, dict[str, jax.Array]]:
    """`hk.nets.MLP([4, 2])` params: `{"mlp/~/linear_0": {"w", "b"}, "mlp/~/linear_1": ...}`."""
    return hk_mlp.init(jax.random.key(seed), jnp.ones((1, 3)))


# ---------------------------------------------------------------------------------------
# penzai


def penzai_transformer(seed: int = 0) -> Any:
    """A one-block GPT-NeoX-style `TransformerLM` from `penzai.models.transformer` (has biases).

    Building it takes a few seconds: share one per test module.
    """
    from penzai.models.transformer.variants import gpt_neox

    config = gpt_neox.GPTNeoXTransformerConfig(
        num_attention_heads=1,
        embedding_dim=8,
        projection_dim=4,
        mlp_hidden_dim=8,
        num_decoder_blocks=1,
        vocab_size=11,
        activation_fn="relu",
        rope_subset_size=2,
        rope_wavelength=10_000.0,
        layernorm_epsilon=1e-5,
        parameter_dtype=jnp.float32,
        activation_dtype=jnp.float32,
    )
    return gpt_neox.build_gpt_neox_transformer(config, init_base_rng=jax.random.key(seed))


# ---------------------------------------------------------------------------------------
# Plain containers


def plain_dict(seed: int = 0) -> dict[str, Any]:
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {
        "encoder": {"weight": jax.random.normal(k1, (4, 3)), "bias": jnp.ones(4)},
        "decoder": [{"weight": jax.random.normal(k2, (2, 4)), "bias": jnp.ones(2)}],
    }


# ---------------------------------------------------------------------------------------
# One model per framework, with the names its dense layers use.


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    build: Callable[[], Any]
    #: What the weight matrix of a dense layer is called there.
    weight: str
    #: What a bias is called there.
    bias: str
    #: How many dense-layer weight matrices the model has.
    n_dense: int
    #: How many bias leaves (dense and norm biases alike).
    n_bias: int

    def __str__(self) -> str:
        return self.name


TREES: list[Spec] = [
    Spec("equinox", eqx_block, "weight", "bias", 2, 3),
    Spec("nnx", nnx_model, "kernel", "bias", 2, 3),
    Spec("linen", linen_params, "kernel", "bias", 2, 3),
    Spec("haiku", haiku_params, "w", "b", 2, 2),
    Spec("dict", plain_dict, "weight", "bias", 2, 2),
]


def arrays_of(tree: Any) -> list[np.ndarray]:
    """Every array leaf of `tree` (NNX and linen boxes opened), as NumPy, in order."""
    import treewalk as tw

    return [np.asarray(x) for _, x in tw.select(tree, tw.arrays)]


def walk_log(walk: Callable[..., Any], tree: Any) -> tuple[Any, list[str]]:
    """Run `walk` (`tw.prewalk`/`tw.postwalk`) with an identity `fn`; return the result and
    the `path_str` of every visited node, in visit order."""
    import treewalk as tw

    log: list[str] = []

    def fn(path: Any, node: Any) -> Any:
        log.append(tw.path_str(path))
        return node

    return walk(fn, tree), log
