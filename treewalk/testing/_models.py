"""Models the way each framework holds its parameters, for `params_trees()`: a `Spec`
(width, blocks, biases, norms, ...) built as an Equinox module or a Flax NNX module of
the frameworks' own layers, or as the dicts of Flax linen and Haiku, with values from a
seed.

The Equinox and NNX models are built abstractly (`eqx.filter_eval_shape`,
`nnx.eval_shape`: no compilation, whatever the shapes), once per spec, and filled with
values drawn from the seed; each framework is imported on first use only."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._kinds import installed, linen_partitioned

#: The frameworks `params_trees()` builds models of, and what each needs installed.
FRAMEWORKS = {"equinox": "equinox", "nnx": "flax", "linen": None, "haiku": None}


@dataclasses.dataclass(frozen=True)
class Spec:
    """One model: a transformer-like stack (`blocks/k/...`), with what is optional."""

    framework: str
    width: int  # the model's width (attention heads divide it)
    hidden: int  # the MLP's hidden width
    heads: int
    blocks: int
    vocab: int | None  # an embedding (`embed`) of this many rows, or none
    head: bool  # an output projection (`head`)
    bias: bool  # biases in the linear layers (absent, or `None`, without)
    norm: str  # "layer" or "rms"
    attention: bool  # an attention layer in each block
    stem: bool  # a convolution with batch norm before the blocks
    dropout: bool  # NNX: a `Dropout` (with its RNG state) in each block
    dtype: str  # the parameters' dtype
    shared: bool  # Equinox/NNX: every block is the first one (one module, tied)
    partitioned: bool  # linen: kernels in `nn.Partitioned` boxes


def build(spec: Spec, seed: int) -> Any:
    """The model `spec` describes, its arrays drawn from `seed`."""
    return _BUILDERS[spec.framework](spec, _Fill(spec, seed))


class _Fill:
    """Values for abstract arrays, in order: normal ones (positive for variances) of
    the spec's dtype for parameters, a key for a PRNG key, zeros for counters."""

    def __init__(self, spec: Spec, seed: int) -> None:
        self.dtype = jnp.dtype(spec.dtype)
        self.rng = np.random.default_rng(seed)
        self.seed = seed

    def __call__(self, x: Any, positive: bool = False) -> Any:
        shape, dtype = tuple(x.shape), x.dtype
        if jnp.issubdtype(dtype, jax.dtypes.prng_key):
            return jax.random.key(self.seed)
        if not jnp.issubdtype(dtype, jnp.inexact):
            return jnp.zeros(shape, dtype)
        values = self.rng.normal(size=shape)
        values = np.abs(values) + 0.5 if positive else values
        return jnp.asarray(values.astype(self.dtype))

    def array(self, *shape: int, positive: bool = False) -> Any:
        return self(jax.ShapeDtypeStruct(shape, self.dtype), positive)


# ------------------------------------------------------------------------ Equinox


@functools.cache
def _eqx_classes() -> tuple[type, type]:
    import equinox as eqx

    class EqxBlock(eqx.Module):
        """A transformer block of Equinox layers."""

        norm1: Any
        attn: Any
        norm2: Any
        mlp: eqx.nn.MLP

    class EqxModel(eqx.Module):
        """A model of Equinox layers: `embed`, `stem`, `blocks`, `norm`, `head`."""

        embed: eqx.nn.Embedding | None
        stem: eqx.nn.Conv2d | None
        blocks: list[Any]
        norm: Any
        head: eqx.nn.Linear | None

    for cls in (EqxBlock, EqxModel):  # picklable, for another process
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
    return EqxBlock, EqxModel


@functools.lru_cache(maxsize=1024)
def _eqx_layer(kind: str, *args: Any) -> Any:
    """An abstract Equinox layer (its arrays `ShapeDtypeStruct`s), made once per kind
    and arguments: layers are immutable, so models share them."""
    import equinox as eqx

    def make(key: Any) -> Any:
        if kind == "attn":
            heads, width, bias = args
            b = {f"use_{n}_bias": bias for n in ("query", "key", "value", "output")}
            return eqx.nn.MultiheadAttention(heads, width, **b, key=key)
        if kind == "mlp":
            width, hidden, bias = args
            return eqx.nn.MLP(
                width, width, hidden, 1, jax.nn.gelu, use_bias=bias, use_final_bias=bias, key=key
            )
        if kind == "rms":
            return eqx.nn.RMSNorm(args[0], use_bias=False)
        if kind == "layer":
            return eqx.nn.LayerNorm(args[0], use_bias=args[1])
        if kind == "embed":
            return eqx.nn.Embedding(*args, key=key)
        if kind == "conv":
            return eqx.nn.Conv2d(3, args[0], 3, key=key)
        n_in, n_out, bias = args
        return eqx.nn.Linear(n_in, n_out, use_bias=bias, key=key)

    return eqx.filter_eval_shape(make, jax.random.key(0))


def _equinox(spec: Spec, fill: _Fill) -> Any:
    import equinox as eqx

    block_cls, model_cls = _eqx_classes()
    w, b = spec.width, spec.bias

    def norm() -> Any:
        return _eqx_layer("rms", w) if spec.norm == "rms" else _eqx_layer("layer", w, b)

    def block() -> Any:
        attn = _eqx_layer("attn", spec.heads, w, b) if spec.attention else None
        return block_cls(norm(), attn, norm(), _eqx_layer("mlp", w, spec.hidden, b))

    abstract = model_cls(
        embed=None if spec.vocab is None else _eqx_layer("embed", spec.vocab, w),
        stem=_eqx_layer("conv", w) if spec.stem else None,
        blocks=[block() for _ in range(spec.blocks)],
        norm=norm(),
        head=_eqx_layer("linear", w, spec.vocab or 3, b) if spec.head else None,
    )

    def leaf(x: Any) -> Any:
        return fill(x) if isinstance(x, jax.ShapeDtypeStruct) else x

    model = jax.tree.map(leaf, abstract)
    if spec.shared and spec.blocks > 1:  # one block, at every index: its arrays tied
        model = eqx.tree_at(lambda m: m.blocks, model, [model.blocks[0]] * spec.blocks)
    return model


# ---------------------------------------------------------------------------- NNX


@functools.cache
def _nnx_classes() -> tuple[type, type, type]:
    from flax import nnx

    class NnxMlp(nnx.Module):
        """Two NNX `Linear`s, `fc1` and `fc2`."""

        def __init__(self, fc1: nnx.Linear, fc2: nnx.Linear) -> None:
            self.fc1, self.fc2 = fc1, fc2

    class NnxBlock(nnx.Module):
        """A transformer block of NNX layers: `norm1`, `attn`, `norm2`, `mlp`, `drop`."""

        def __init__(self, norm1: Any, attn: Any, norm2: Any, mlp: Any, drop: Any) -> None:
            self.norm1, self.attn, self.norm2, self.mlp = norm1, attn, norm2, mlp
            self.drop = drop

    class NnxModel(nnx.Module):
        """A model of NNX layers: `embed`, `stem` and `bn`, `blocks`, `norm`, `head`."""

        def __init__(
            self, embed: Any, stem: Any, bn: Any, blocks: list[Any], norm: Any, head: Any
        ) -> None:
            self.embed, self.stem, self.bn = embed, stem, bn
            self.blocks = nnx.List(blocks)
            self.norm, self.head = norm, head

    for cls in (NnxMlp, NnxBlock, NnxModel):  # picklable, for another process
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
    return NnxMlp, NnxBlock, NnxModel


@functools.lru_cache(maxsize=1024)
def _nnx_layer(kind: str, *args: Any) -> tuple[Any, Any]:
    """An abstract NNX layer as `(graphdef, state)`, made once per kind and arguments;
    each model gets layers of its own (`nnx.merge`), NNX modules being mutable."""
    from flax import nnx

    def make() -> Any:
        rngs = nnx.Rngs(0)
        if kind == "attn":
            heads, width, bias = args
            return nnx.MultiHeadAttention(heads, width, use_bias=bias, decode=False, rngs=rngs)
        if kind == "rms":
            return nnx.RMSNorm(args[0], rngs=rngs)
        if kind == "layer":
            return nnx.LayerNorm(args[0], use_bias=args[1], rngs=rngs)
        if kind == "embed":
            return nnx.Embed(*args, rngs=rngs)
        if kind == "conv":
            return nnx.Conv(3, args[0], (3, 3), rngs=rngs)
        if kind == "bn":
            return nnx.BatchNorm(args[0], rngs=rngs)
        if kind == "drop":
            return nnx.Dropout(0.1, rngs=rngs)
        n_in, n_out, bias = args
        return nnx.Linear(n_in, n_out, use_bias=bias, rngs=rngs)

    return nnx.split(nnx.eval_shape(make))


def _nnx(spec: Spec, fill: _Fill) -> Any:
    from flax import nnx

    mlp_cls, block_cls, model_cls = _nnx_classes()
    w, b = spec.width, spec.bias

    def layer(kind: str, *args: Any) -> Any:
        graphdef, abstract = _nnx_layer(kind, *args)
        paths, treedef = jax.tree_util.tree_flatten_with_path(abstract)
        values = [fill(x, positive=_is_var(p)) for p, x in paths]
        return nnx.merge(graphdef, treedef.unflatten(values))

    def norm() -> Any:
        return layer("rms", w) if spec.norm == "rms" else layer("layer", w, b)

    def block() -> Any:
        attn = layer("attn", spec.heads, w, b) if spec.attention else None
        mlp = mlp_cls(layer("linear", w, spec.hidden, b), layer("linear", spec.hidden, w, b))
        return block_cls(norm(), attn, norm(), mlp, layer("drop") if spec.dropout else None)

    first = block()
    blocks = [first, *[first if spec.shared else block() for _ in range(spec.blocks - 1)]]
    return model_cls(
        embed=None if spec.vocab is None else layer("embed", spec.vocab, w),
        stem=layer("conv", w) if spec.stem else None,
        bn=layer("bn", w) if spec.stem else None,
        blocks=blocks,
        norm=norm(),
        head=layer("linear", w, spec.vocab or 3, b) if spec.head else None,
    )


def _is_var(path: Any) -> bool:
    return any(getattr(e, "key", getattr(e, "name", None)) == "var" for e in path)


# ---------------------------------------------------------------------------- linen


def _linen(spec: Spec, fill: _Fill) -> dict[str, Any]:
    """`{"params": ..., "batch_stats": ...}` as `Module.init` returns them, names as
    linen gives them (`blocks_0`, `Dense_0`), kernels `(in, out)` (attention's
    `(in, heads, head_dim)` and `(heads, head_dim, out)`), in `nn.Partitioned` boxes
    where the spec says so."""
    w, h = spec.width, spec.heads

    def dense(n_in: int, n_out: int, shape: tuple[int, ...] | None = None) -> dict[str, Any]:
        kernel = fill.array(*(shape or (n_in, n_out)))
        return {"kernel": kernel, **({"bias": fill.array(n_out)} if spec.bias else {})}

    def norm() -> dict[str, Any]:
        bias = spec.norm == "layer" and spec.bias
        return {"scale": fill.array(w), **({"bias": fill.array(w)} if bias else {})}

    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    if spec.vocab is not None:
        params["embed"] = {"embedding": fill.array(spec.vocab, w)}
    if spec.stem:
        params["stem"] = dense(3, w, (3, 3, 3, w))
        params["BatchNorm_0"] = {"scale": fill.array(w), "bias": fill.array(w)}
        stats["BatchNorm_0"] = {"mean": fill.array(w), "var": fill.array(w, positive=True)}
    for k in range(spec.blocks):
        block: dict[str, Any] = {"norm1": norm()}
        if spec.attention:
            attn = {n: dense(w, w, (w, h, w // h)) for n in ("query", "key", "value")}
            for p in attn.values():
                if "bias" in p:
                    p["bias"] = p["bias"].reshape(h, w // h)
            block["attn"] = {**attn, "out": dense(w, w, (h, w // h, w))}
        block["norm2"] = norm()
        block["mlp"] = {"Dense_0": dense(w, spec.hidden), "Dense_1": dense(spec.hidden, w)}
        params[f"blocks_{k}"] = block
    params["norm"] = norm()
    if spec.head:
        params["head"] = dense(w, spec.vocab or 3)
    if spec.partitioned:
        params = _partitioned(params)
    return {"params": params, **({"batch_stats": stats} if stats else {})}


def _partitioned(tree: dict[str, Any]) -> dict[str, Any]:
    """Every `kernel` in an `nn.Partitioned` box, its last axis named `"model"` (as
    `nn.with_partitioning(init, (None, "model"))` leaves it)."""
    box = linen_partitioned()
    assert box is not None
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out[k] = _partitioned(v)
        elif k == "kernel":
            out[k] = box(v, names=(None,) * (v.ndim - 1) + ("model",))
        else:
            out[k] = v
    return out


# ---------------------------------------------------------------------------- Haiku


def _haiku(spec: Spec, fill: _Fill) -> dict[str, Any]:
    """`{module name: {param: array}}` as `hk.transform(...).init` returns it: module
    names hold `/~/` (one segment each), weights `w` `(in, out)`, biases `b`, layer
    norms `scale` and `offset`."""
    w = spec.width

    def linear(n_in: int, n_out: int) -> dict[str, Any]:
        return {"w": fill.array(n_in, n_out), **({"b": fill.array(n_out)} if spec.bias else {})}

    def norm() -> dict[str, Any]:
        offset = spec.norm == "layer" and spec.bias
        return {"scale": fill.array(w), **({"offset": fill.array(w)} if offset else {})}

    out: dict[str, Any] = {}
    if spec.vocab is not None:
        out["model/~/embed"] = {"embeddings": fill.array(spec.vocab, w)}
    for k in range(spec.blocks):
        name = f"model/~/block_{k}"
        out[f"{name}/~/norm1"] = norm()
        if spec.attention:
            for n in ("query", "key", "value", "linear"):
                out[f"{name}/~/attn/{n}"] = linear(w, w)
        out[f"{name}/~/norm2"] = norm()
        out[f"{name}/~/mlp/~/linear_0"] = linear(w, spec.hidden)
        out[f"{name}/~/mlp/~/linear_1"] = linear(spec.hidden, w)
    out["model/~/norm"] = norm()
    if spec.head:
        out["model/~/head"] = linear(w, spec.vocab or 3)
    return out


_BUILDERS: dict[str, Callable[[Spec, _Fill], Any]] = {
    "equinox": _equinox,
    "nnx": _nnx,
    "linen": _linen,
    "haiku": _haiku,
}


def available(framework: str) -> bool:
    needs = FRAMEWORKS[framework]
    return needs is None or installed(needs)


def prepare(frameworks: tuple[str, ...]) -> None:
    """Import what the frameworks' models need now, not during a draw (a first import
    of Flax seeds Python's `random`, which hypothesis warns of inside a strategy)."""
    if "equinox" in frameworks:
        _eqx_classes()
    if "nnx" in frameworks:
        _nnx_classes()
    if "linen" in frameworks:
        linen_partitioned()


def __getattr__(name: str) -> Any:
    # The model classes, made on first use: found here by pickle (another process).
    if name in ("EqxBlock", "EqxModel"):
        return dict(zip(("EqxBlock", "EqxModel"), _eqx_classes(), strict=True))[name]
    if name in ("NnxMlp", "NnxBlock", "NnxModel"):
        return dict(zip(("NnxMlp", "NnxBlock", "NnxModel"), _nnx_classes(), strict=True))[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
