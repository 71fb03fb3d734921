"""The key entries of a node's children, as `jax.tree_util.tree_flatten_with_path` gives
them, computed by the engine itself.

The engine flattens with the plain `tree_flatten(tree, is_leaf=...)` and builds each
node's path from its parent's path and these entries. JAX's own path flatten makes a new
tuple and key entry per node, and a tuple per leaf again for its result: on 100,000
leaves those objects, alive until the flatten returns, cost the cyclic GC more than the
whole pass (measured: a flatten with paths and a callback took 1.6x a flatten with
paths alone; without JAX's paths the pass took 0.4x). Here a dict's entries are one
`DictKey` per distinct string key in a pass, a sequence's are shared `SequenceKey`s, and
a class whose children are fixed (namedtuples, Equinox modules, penzai structs) has its
entries learnt once.

Only builtin containers are read here; any other registered node is asked through JAX's
registry (`flatten_one_level_with_keys`), so the entries are JAX's by construction.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from typing import Any

import jax
from jax.tree_util import DictKey, GetAttrKey, SequenceKey

from .._frameworks import registry

_registry = jax.tree_util.default_registry

#: How the entries of a type's children are found: one of these codes, or the entries
#: themselves (a tuple) for a type whose children are fixed.
_DICT, _ORDERED, _SEQ, _ANY = 0, 1, 2, 3

_SEQ_KEYS: list[Any] = []


def seq_keys(n: int) -> list[Any]:
    """`[SequenceKey(0), ..., SequenceKey(n - 1)]`, the objects shared between calls."""
    keys = _SEQ_KEYS
    while len(keys) < n:
        keys.append(SequenceKey(len(keys)))
    return keys[:n]


def _registry_keys(x: Any) -> tuple[Any, ...]:
    one = _registry.flatten_one_level_with_keys(x)
    return () if one is None else tuple(k for k, _ in one[0])


def _learn(x: Any, kinds: dict[type, Any]) -> Any:
    t = type(x)
    if t is dict or t is defaultdict:
        kind: Any = _DICT
    elif t is OrderedDict:
        kind = _ORDERED
    elif t is list or t is tuple:
        kind = _SEQ
    elif x is None:
        kind = ()
    elif issubclass(t, tuple) and hasattr(t, "_fields"):
        one = _registry.flatten_one_level_with_keys(x)
        # A namedtuple JAX flattens as one (not a registered subclass): its fields.
        # (`flatten_one_level_with_keys` names every namedtuple field after the first.)
        fields: tuple[str, ...] = getattr(t, "_fields")  # noqa: B009
        kind = tuple(map(GetAttrKey, fields)) if one is not None and one[1] is t else _ANY
    elif registry.fixed_children and issubclass(t, registry.fixed_children):
        kind = _registry_keys(x)
    else:
        kind = _ANY
    kinds[t] = kind
    return kind


class ChildKeys:
    """`keys(x)`: the key entries of `x`'s children, in JAX's flatten order. One per pass
    (the `DictKey`s it makes are shared within the pass only)."""

    __slots__ = ("kinds", "dict_keys", "by_names", "by_order")

    def __init__(self, kinds: dict[type, Any]) -> None:
        self.kinds = kinds
        self.dict_keys: dict[str, Any] = {}
        # The entries of a dict (sorted), by its keys in insertion order: a model's dicts
        # share a few key sets ({"kernel", "bias"}), so most dicts cost one lookup. An
        # OrderedDict's entries keep their order: remembered apart.
        self.by_names: dict[tuple[Any, ...], list[Any]] = {}
        self.by_order: dict[tuple[Any, ...], list[Any]] = {}

    def __call__(self, x: Any) -> Sequence[Any]:
        kind = self.kinds.get(type(x))
        if kind is None:
            kind = _learn(x, self.kinds)
        if type(kind) is tuple:
            return kind
        if kind == _SEQ:
            return seq_keys(len(x))
        if kind == _ANY:
            return _registry_keys(x)
        given = tuple(x)
        memo_of = self.by_names if kind == _DICT else self.by_order
        try:
            known = memo_of.get(given)
        except TypeError:  # an unhashable key: JAX's own error
            return _registry_keys(x)
        if known is not None:
            return known
        try:
            names = sorted(given) if kind == _DICT else given
        except TypeError:  # keys JAX cannot sort either: its own error
            return _registry_keys(x)
        memo = self.dict_keys
        out = []
        strs = True
        for k in names:
            if type(k) is str:
                e = memo.get(k)
                if e is None:
                    e = memo[k] = DictKey(k)
            else:  # not remembered: `1` and `True` are equal keys, but other entries
                e = DictKey(k)
                strs = False
            out.append(e)
        if strs and len(memo_of) < 4096:
            memo_of[given] = out
        return out
