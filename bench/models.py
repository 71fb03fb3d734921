"""Realistic models for bench case 8, and the calls timed on them: treewalk's and the
code a user would write by hand (`eqx.tree_at`, `jax.tree_util.tree_map_with_path` with a
path test, NNX's `split`/`merge`).

Each call is `CALLS[model_kind][op][tool](model) -> result`; `bench/run.py` times them
warm (in one process, interleaved) and cold (the first call, in a fresh process).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

KEY = jax.random.key(1)


# ----------------------------------------------------------------------------- models


def eqx_gpt(blocks: int = 12, width: int = 64) -> Any:
    """A GPT-like Equinox model: per block two LayerNorms, q/k/v/o and two MLP Linears
    (16 leaves), an embedding and a final norm: 195 leaves at 12 blocks."""
    import equinox as eqx

    class Block(eqx.Module):
        ln1: eqx.nn.LayerNorm
        q: eqx.nn.Linear
        k: eqx.nn.Linear
        v: eqx.nn.Linear
        o: eqx.nn.Linear
        ln2: eqx.nn.LayerNorm
        up: eqx.nn.Linear
        down: eqx.nn.Linear

        def __init__(self, key: Any) -> None:
            ks = jax.random.split(key, 6)
            self.ln1, self.ln2 = eqx.nn.LayerNorm(width), eqx.nn.LayerNorm(width)
            self.q, self.k, self.v, self.o = (eqx.nn.Linear(width, width, key=k) for k in ks[:4])
            self.up = eqx.nn.Linear(width, 4 * width, key=ks[4])
            self.down = eqx.nn.Linear(4 * width, width, key=ks[5])

    class GPT(eqx.Module):
        embed: eqx.nn.Embedding
        blocks: list
        norm: eqx.nn.LayerNorm

        def __init__(self, key: Any) -> None:
            ks = jax.random.split(key, blocks + 1)
            self.embed = eqx.nn.Embedding(256, width, key=ks[0])
            self.blocks = [Block(k) for k in ks[1:]]
            self.norm = eqx.nn.LayerNorm(width)

    return GPT(jax.random.key(0))


def eqx_resnet(stages: int = 4, blocks: int = 2, width: int = 16) -> Any:
    """A ResNet-like Equinox model: a stem conv, `stages` x `blocks` residual blocks of
    two 3x3 convs with GroupNorms, a head: 74 leaves at the defaults."""
    import equinox as eqx

    class Block(eqx.Module):
        conv1: eqx.nn.Conv2d
        norm1: eqx.nn.GroupNorm
        conv2: eqx.nn.Conv2d
        norm2: eqx.nn.GroupNorm

        def __init__(self, c: int, key: Any) -> None:
            k1, k2 = jax.random.split(key)
            self.conv1 = eqx.nn.Conv2d(c, c, 3, padding=1, key=k1)
            self.conv2 = eqx.nn.Conv2d(c, c, 3, padding=1, key=k2)
            self.norm1, self.norm2 = eqx.nn.GroupNorm(4, c), eqx.nn.GroupNorm(4, c)

    class ResNet(eqx.Module):
        stem: eqx.nn.Conv2d
        blocks: list
        head: eqx.nn.Linear

        def __init__(self, key: Any) -> None:
            ks = jax.random.split(key, stages * blocks + 2)
            self.stem = eqx.nn.Conv2d(3, width, 3, padding=1, key=ks[0])
            self.blocks = [Block(width, k) for k in ks[1:-1]]
            self.head = eqx.nn.Linear(width, 10, key=ks[-1])

    return ResNet(jax.random.key(0))


def nnx_transformer(blocks: int = 9, width: int = 64) -> Any:
    """An NNX transformer: per block two LayerNorms, q/k/v/o and two MLP Linears (16
    variables), an embedding, a final norm and a head: 149 variables at 9 blocks."""
    from flax import nnx

    class Block(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.ln1 = nnx.LayerNorm(width, rngs=rngs)
            self.q = nnx.Linear(width, width, rngs=rngs)
            self.k = nnx.Linear(width, width, rngs=rngs)
            self.v = nnx.Linear(width, width, rngs=rngs)
            self.o = nnx.Linear(width, width, rngs=rngs)
            self.ln2 = nnx.LayerNorm(width, rngs=rngs)
            self.up = nnx.Linear(width, 4 * width, rngs=rngs)
            self.down = nnx.Linear(4 * width, width, rngs=rngs)

    class Transformer(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.embed = nnx.Embed(256, width, rngs=rngs)
            self.blocks = nnx.List([Block(rngs) for _ in range(blocks)])
            self.norm = nnx.LayerNorm(width, rngs=rngs)
            self.head = nnx.Linear(width, 256, rngs=rngs)

    return Transformer(nnx.Rngs(0))


MODELS: dict[str, Callable[[], Any]] = {
    "eqx GPT-like, 12 blocks": eqx_gpt,
    "eqx ResNet-like, 8 blocks": eqx_resnet,
    "nnx transformer, 9 blocks": nnx_transformer,
}


# ------------------------------------------------------------------------------ calls


def _last(path: Any) -> Any:
    e = path[-1] if path else None
    if type(e).__name__ == "GetAttrKey" and getattr(e, "name", None) == "value" and len(path) > 1:
        e = path[-2]  # an NNX variable's value
    return getattr(e, "name", getattr(e, "key", None))


def _is_bias(path: Any) -> bool:
    return _last(path) == "bias"


def _is_weight(path: Any) -> bool:
    return _last(path) in ("weight", "kernel")


def _eqx_calls() -> dict[str, dict[str, Callable[[Any], Any]]]:
    import equinox as eqx

    import treewalk as tw

    he = jax.nn.initializers.he_normal()
    init = tw.initializer(he)  # the same draws as the hand-written code

    def biases(m: Any) -> list[Any]:
        return [x for p, x in jax.tree_util.tree_leaves_with_path(m) if _is_bias(p)]

    def hand_keyed(m: Any) -> Any:
        found = [
            (p, x)
            for p, x in jax.tree_util.tree_leaves_with_path(m)
            if _is_weight(p) and x.ndim >= 2
        ]
        keys = iter(jax.random.split(KEY, len(found)))
        new = {p: he(next(keys), x.shape, x.dtype) for p, x in found}
        return jax.tree_util.tree_map_with_path(lambda p, x: new.get(p, x), m)

    return {
        "zero biases": {
            "treewalk replace('**/bias', tw.zeros)": lambda m: tw.replace(m, "**/bias", tw.zeros),
            "tree_map_with_path + zeros_like": lambda m: jax.tree_util.tree_map_with_path(
                lambda p, x: jnp.zeros_like(x) if _is_bias(p) else x, m
            ),
            "eqx.tree_at(replace_fn=zeros_like)": lambda m: eqx.tree_at(
                biases, m, replace_fn=jnp.zeros_like
            ),
        },
        "keyed re-init": {
            "treewalk replace(weights, he_normal, key)": lambda m: tw.replace(
                m, tw.name("weight") & tw.predicate(lambda p, x: x.ndim >= 2), init, key=KEY
            ),
            "split + he_normal + tree_map_with_path": hand_keyed,
        },
        "mask": {
            "treewalk mask(arrays & ~name('bias'))": lambda m: tw.mask(
                m, tw.arrays & ~tw.name("bias")
            ),
            "tree_map_with_path path test": lambda m: jax.tree_util.tree_map_with_path(
                lambda p, x: eqx.is_array(x) and not _is_bias(p), m
            ),
        },
        "paths": {
            "treewalk paths('**/bias')": lambda m: tw.paths(m, "**/bias"),
            "tree_flatten_with_path + path test": lambda m: [
                p for p, _ in jax.tree_util.tree_flatten_with_path(m)[0] if _is_bias(p)
            ],
        },
    }


def _nnx_calls() -> dict[str, dict[str, Callable[[Any], Any]]]:
    from flax import nnx

    import treewalk as tw

    he = jax.nn.initializers.he_normal()
    init = tw.initializer(he)  # the same draws as the hand-written code

    def hand_map(m: Any, f: Callable[[Any, Any], Any]) -> Any:
        graphdef, state = nnx.split(m)
        return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(f, state))

    def hand_keyed(m: Any) -> Any:
        graphdef, state = nnx.split(m)
        found = [
            p
            for p, x in jax.tree_util.tree_leaves_with_path(state)
            if _is_weight(p) and x.ndim >= 2
        ]
        keys = dict(zip(found, jax.random.split(KEY, len(found)), strict=True))

        def f(p: Any, x: Any) -> Any:
            k = keys.get(p)
            return x if k is None else he(k, x.shape, x.dtype)

        return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(f, state))

    return {
        "zero biases": {
            "treewalk replace('**/bias', tw.zeros)": lambda m: tw.replace(m, "**/bias", tw.zeros),
            "nnx.split + tree_map_with_path + merge": lambda m: hand_map(
                m, lambda p, x: jnp.zeros_like(x) if _is_bias(p) else x
            ),
        },
        "keyed re-init": {
            "treewalk replace(kernels, he_normal, key)": lambda m: tw.replace(
                m, tw.name("kernel"), init, key=KEY
            ),
            "nnx.split + split keys + merge": hand_keyed,
        },
        "mask": {
            "treewalk mask(arrays & ~name('bias'))": lambda m: tw.mask(
                m, tw.arrays & ~tw.name("bias")
            ),
            "nnx.state(Param) + tree_map_with_path": lambda m: jax.tree_util.tree_map_with_path(
                lambda p, x: not _is_bias(p), nnx.as_pure(nnx.state(m, nnx.Param))
            ),
        },
        "paths": {
            "treewalk paths('**/bias')": lambda m: tw.paths(m, "**/bias"),
            "nnx.state + flatten_with_path + path test": lambda m: [
                p for p, _ in jax.tree_util.tree_flatten_with_path(nnx.state(m))[0] if _is_bias(p)
            ],
        },
    }


def calls(model: str) -> dict[str, dict[str, Callable[[Any], Any]]]:
    """The ops timed on `model` (a key of `MODELS`): `{op: {tool: call}}`."""
    return _nnx_calls() if model.startswith("nnx") else _eqx_calls()
