"""Layers whose arrays a checkpoint names its own way, not one to one with the model's:
attention layers (PyTorch packs the query, key and value projections into one
`in_proj_weight`), recurrent cells (PyTorch keeps two biases where Equinox sums them),
and the `eqx.nn.State` that holds Equinox BatchNorm statistics.

What a destination array is made of is a `Recipe`: source arrays (`Term`s), each
optionally a band of rows of its axis 0, put at a band of rows of the destination's
axis 0, summed. A plain array is one `Term` with its name. `tw.load` reads a recipe
forwards; `tw.export` backwards (the first term gets the array, the others zeros: a sum
of biases is written as the bias and a zero).

- `eqx.nn.MultiheadAttention` (`query_proj`, `key_proj`, `value_proj`, `output_proj`)
  and `nnx.MultiHeadAttention` (`query`, `key`, `value`, `out`): PyTorch's
  `in_proj_weight` and `in_proj_bias` (their rows: query, key, value), or
  `q_proj_weight`, `k_proj_weight`, `v_proj_weight` (PyTorch's form when the key or
  value size differs), and `out_proj.weight`, `out_proj.bias`.
- `eqx.nn.LSTMCell` (`weight_ih`, `weight_hh`, `bias`): `weight_ih_l0`,
  `weight_hh_l0`, and `bias` = `bias_ih_l0 + bias_hh_l0`.
- `eqx.nn.GRUCell` (`weight_ih`, `weight_hh`, `bias`, `bias_n`): `weight_ih_l0`,
  `weight_hh_l0`, `bias` = `bias_ih_l0` plus the reset and update rows of
  `bias_hh_l0`, and `bias_n` = its new-gate rows.
- `eqx.nn.BatchNorm` statistics in `eqx.nn.State`: `running_mean`, `running_var`.
- Haiku `BatchNorm` statistics in the state of `(params, state)`: the `average` of
  `X/~/mean_ema` and `X/~/var_ema` (and its `hidden`, the same; its `counter` warmed up).
- `eqx.nn.WeightNorm` (of `weight`, axis 0): `g` and the wrapped layer's `weight` are
  `parametrizations.weight.original0` and `original1` (or the old `weight_g`,
  `weight_v`), its `bias` the module's own.

A cell in a list (`rnn/1`) is layer `k` of one multi-layer PyTorch RNN first
(`rnn.weight_ih_l1`; `tw.export` writes that), else a list of one-layer RNNs
(`rnn.1.weight_ih_l0`). The gate order is PyTorch's in both Equinox cells (LSTM
`i, f, g, o`; GRU `r, z, n`), so rows are never reordered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, TypeAlias

import jax

from . import _attr
from .checkpoint import NAMES

#: Rows `(a, b, n)` of an axis: from `a/n` to `b/n` of its length.
Rows: TypeAlias = tuple[int, int, int]


class Term(NamedTuple):
    """One source array of a `Recipe`: the key `name` (segments joined with `/`), its
    rows `take` (all when `None`), added into the rows `put` of the destination."""

    name: str
    take: Rows | None = None
    put: Rows | None = None


#: A destination array as a sum of source arrays.
Recipe: TypeAlias = tuple[Term, ...]


class Group(NamedTuple):
    """An array inside a layer a checkpoint names as a whole: which `kind` of layer
    (`"attention"`, `"rnn"`), which projection of it (`part`: `q`, `k`, `v`, `o`), how many
    path segments below the layer the array is (`depth`), the cell type (`"LSTM"`,
    `"GRU"`), and whether PyTorch would pack the projections (equal input sizes)."""

    kind: str
    part: str = ""
    depth: int = 1
    cell: str = ""
    packed: bool = True


_PROJECTIONS = {
    "equinox": {"query_proj": "q", "key_proj": "k", "value_proj": "v", "output_proj": "o"},
    "flax": {"query": "q", "key": "k", "value": "v", "out": "o"},
}
#: Attention projections by convention: Haiku's `MultiHeadAttention` calls the output `linear`.
_PROJECTION_NAMES = {
    "equinox": {"q": "query_proj", "k": "key_proj", "v": "value_proj", "o": "output_proj"},
    "flax": {"q": "query", "k": "key", "v": "value", "o": "out"},
    "haiku": {"q": "query", "k": "key", "v": "value", "o": "linear"},
}


def group_of(layer: Any, outer: Any, attr: Any) -> Group | None:
    """The `Group` of an array of `layer`, itself the child `attr` of `outer`."""
    norm = _attr("equinox.nn", "WeightNorm")
    if isinstance(layer, norm):
        return Group("weightnorm", "g") if _torch_like(layer) else None
    if isinstance(outer, norm) and attr == "layer":
        return Group("weightnorm", "layer", 2) if _torch_like(outer) else None
    if isinstance(layer, _attr("equinox.nn", "LSTMCell")):
        return Group("rnn", cell="LSTM")
    if isinstance(layer, _attr("equinox.nn", "GRUCell")):
        return Group("rnn", cell="GRU")
    if isinstance(outer, _attr("equinox.nn", "MultiheadAttention")):
        part = _PROJECTIONS["equinox"].get(attr)
        packed = outer.query_size == outer.key_size == outer.value_size
    elif isinstance(outer, _attr("flax.nnx", "MultiHeadAttention")):
        part = _PROJECTIONS["flax"].get(attr)
        packed = outer.in_kv_features == outer.in_features
    else:
        return None
    return None if part is None else Group("attention", part, 2, packed=packed)


def recipes(
    convention: str | None, segments: tuple[Any, ...], kind: str, role: str, group: Group | None
) -> list[Recipe]:
    """The ways `convention`'s checkpoints hold the array at `segments` (the array's own
    name aside), most likely first; `tw.export` writes the first."""
    if convention not in NAMES:
        return []
    if group is None:
        name = NAMES[convention].get(kind, {}).get(role)
        return [] if name is None else [(Term(_join(segments[:-1], name)),)]
    base = segments[: -group.depth]
    if group.kind == "attention":
        return [_at(base, r) for r in _attention(convention, group, role)]
    if convention != "torch":
        return []
    if group.kind == "weightnorm":
        return [_at(base, r) for r in _weight_norm(role)]
    out = [_at(base, r) for r in _rnn(group.cell, role, 0)]
    if base and isinstance(base[-1], int):  # a cell in a list: layer k of one RNN, first
        out = [_at(base[:-1], r) for r in _rnn(group.cell, role, base[-1])] + out
    return out


def _attention(convention: str, group: Group, role: str) -> list[Recipe]:
    if role not in ("weight", "bias"):
        return []
    if convention != "torch":
        names = _PROJECTION_NAMES.get(convention)
        name = NAMES[convention]["dense"][role]
        return [] if names is None else [(Term(f"{names[group.part]}/{name}"),)]
    if group.part == "o":
        return [(Term(f"out_proj/{role}"),)]
    j = "qkv".index(group.part)
    packed: Recipe = (Term(f"in_proj_{role}", (j, j + 1, 3)),)
    if role == "bias":
        return [packed]
    own: Recipe = (Term(f"{group.part}_proj_weight"),)
    return [packed, own] if group.packed else [own, packed]


def _rnn(cell: str, role: str, layer: int) -> list[Recipe]:
    ih, hh = Term(f"bias_ih_l{layer}"), f"bias_hh_l{layer}"
    if role in ("weight_ih", "weight_hh"):
        return [(Term(f"{role}_l{layer}"),)]
    if cell == "LSTM":
        return [(ih, Term(hh))] if role == "bias" else []
    if role == "bias":  # GRU: the new gate's hidden bias stays apart, as `bias_n`
        return [(ih, Term(hh, (0, 2, 3), (0, 2, 3)))]
    return [(Term(hh, (2, 3, 3)),)] if role == "bias_n" else []


def _torch_like(norm: Any) -> bool:
    """Is an `eqx.nn.WeightNorm` the one PyTorch's `weight_norm` makes (of `weight`,
    along axis 0)?"""
    return norm.weight_name == "weight" and norm.axis == 0


def _weight_norm(role: str) -> list[Recipe]:
    # `torch.nn.utils.parametrizations.weight_norm`'s keys first, then the old function's.
    if role == "g":
        return [(Term("parametrizations/weight/original0"),), (Term("weight_g"),)]
    if role == "weight":
        return [(Term("parametrizations/weight/original1"),), (Term("weight_v"),)]
    return [(Term(role),)] if role == "bias" else []


def _at(base: tuple[Any, ...], recipe: Recipe) -> Recipe:
    return tuple(Term(_join(base, t.name), t.take, t.put) for t in recipe)


def _join(base: tuple[Any, ...], name: str) -> str:
    return "/".join([*map(str, base), name])


# --- eqx.nn.State -------------------------------------------------------------------


class Slot(NamedTuple):
    """One entry of an `eqx.nn.State`: the key path in the model of its `BatchNorm` (and
    the `BatchNorm`, and the field of its index there), or of its `StateIndex` (`layer`
    `None`, `field` `""`)."""

    path: tuple[Any, ...]
    layer: Any
    field: str


#: The `BatchNorm` fields whose state entry is its `(mean, var)`; and those that are a
#: flag or counter, set when statistics are loaded so that inference uses them as they
#: are (`mode="ema"`: not the first step any more; `mode="batch"`: no debiasing).
BATCHNORM_STATS = ("ema_state_index", "batch_state_index")
BATCHNORM_AFTER_LOAD = {"ema_first_time_index": False, "batch_counter": 0}


def model_and_state(tree: Any) -> bool:
    """Is `tree` an Equinox model and its `eqx.nn.State`, as a pair?"""
    return (
        isinstance(tree, tuple)
        and len(tree) == 2
        and isinstance(tree[0], _attr("equinox", "Module"))
        and isinstance(tree[1], _attr("equinox.nn", "State"))
    )


def state_slots(model: Any, state: Any) -> list[Slot | None]:
    """The `Slot` of each entry of `state`, in its flatten order (`None`: no index of
    `model` refers to it)."""
    index_type = _attr("equinox.nn", "StateIndex")
    norm = _attr("equinox.nn", "BatchNorm")
    found: dict[Any, Slot] = {}

    def is_leaf(x: Any) -> bool:
        return isinstance(x, index_type + norm)

    for path, node in jax.tree_util.tree_flatten_with_path(model, is_leaf=is_leaf)[0]:
        if isinstance(node, norm):
            for field in (*BATCHNORM_STATS, *BATCHNORM_AFTER_LOAD):
                index = getattr(node, field, None)
                if index is not None:
                    found[index.marker] = Slot(path, node, field)
        elif isinstance(node, index_type):
            found[node.marker] = Slot(path, None, "")
    _, markers = state.tree_flatten()
    return [found.get(m) for m in markers]


# --- Haiku's BatchNorm state ----------------------------------------------------------

#: The state modules of a Haiku `BatchNorm` named `X`: `X/~/mean_ema` and `X/~/var_ema`,
#: each an `ExponentialMovingAverage` (`average`, `hidden`, `counter`).
HAIKU_EMAS = {"/~/mean_ema": "mean", "/~/var_ema": "var"}
#: The counter a loaded average gets: the EMA is warmed up (its zero-debiasing divides by
#: `1 - decay ** counter`, 1 for any decay below one), so inference uses the average as
#: it is and a training step goes on from it as PyTorch's running statistics do.
HAIKU_WARM = 1 << 30


def params_and_state(tree: Any) -> bool:
    """Is `tree` a Haiku `(params, state)` pair whose state holds BatchNorm averages?"""
    return (
        isinstance(tree, tuple)
        and len(tree) == 2
        and all(isinstance(t, Mapping) for t in tree)
        and any(isinstance(k, str) and k.endswith(tuple(HAIKU_EMAS)) for k in tree[1])
    )


def batch_scale(layer: Any, counter: Any) -> float:
    """What `BatchNorm(mode="batch")` divides its hidden statistics by at inference."""
    n = int(counter)
    return 1.0 if n == 0 else 1.0 - float(layer.momentum) ** n
