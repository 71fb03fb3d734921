"""The engine builds key paths itself (`treewalk/_core/children.py`) instead of taking JAX's:
every node's path must be the one `jax.tree_util.tree_flatten_with_path` gives it, on
every kind of node JAX knows (builtin containers with any keys, namedtuples, registered
nodes with and without keys, dataclass and static nodes, Equinox modules, penzai
structs)."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import pytest
from hypothesis import given
from hypothesis import strategies as st

import treewalk as tw


def jax_paths(tree: Any) -> list[Any]:
    """Every node's key path (and its key entries' reprs), in pre-order, from JAX."""
    seen: list[Any] = []

    def record(path: Any, x: Any) -> bool:
        seen.append(path)
        return False

    jax.tree_util.tree_flatten_with_path(tree, is_leaf=record, is_leaf_takes_path=True)
    return seen


def tw_paths(tree: Any) -> list[Any]:
    seen: list[Any] = []
    tw.prewalk(lambda p, x: seen.append(p) or x, tree)
    return seen


def same_paths(tree: Any) -> None:
    ours, theirs = tw_paths(tree), jax_paths(tree)
    assert ours == theirs
    # Equal entries can still differ (`DictKey(1) == DictKey(True)`): compare reprs too.
    assert [repr(p) for p in ours] == [repr(p) for p in theirs]


class Pair(NamedTuple):
    left: Any
    right: Any


class Registered(NamedTuple):  # a namedtuple with its own registration
    a: Any
    b: Any


jax.tree_util.register_pytree_with_keys(
    Registered,
    lambda r: (
        ((jax.tree_util.DictKey("second"), r.b), (jax.tree_util.DictKey("first"), r.a)),
        None,
    ),
    lambda aux, kids: Registered(kids[1], kids[0]),
)


class WithKeys:
    def __init__(self, items: list[Any]) -> None:
        self.items = items


jax.tree_util.register_pytree_with_keys(
    WithKeys,
    lambda w: ([(jax.tree_util.GetAttrKey(f"item{i}"), x) for i, x in enumerate(w.items)], None),
    lambda aux, kids: WithKeys(list(kids)),
)


class NoKeys:
    def __init__(self, items: list[Any]) -> None:
        self.items = items


jax.tree_util.register_pytree_node(
    NoKeys, lambda n: (n.items, len(n.items)), lambda aux, kids: NoKeys(list(kids))
)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Data:
    x: Any
    y: Any
    tag: str = dataclasses.field(default="t", metadata={"static": True})


@jax.tree_util.register_static
class Static(int):
    pass


ZOO = {
    "str keys": {"b": jnp.ones(1), "a": {"z": 1.0, "y": None}},
    "int and tuple keys": {2: 1.0, 1: {(1, 0): 2.0, (0, 5): 3.0}},
    "bool, int and float keys": {True: 1.0, 2: 2.0, 1.5: 3.0},
    "1 then True": [{1: 1.0}, {True: 2.0}],
    "ordered dict": collections.OrderedDict(b=1.0, a=2.0),
    "ordered dict, then a dict of its keys": [
        collections.OrderedDict(b=1.0, a=2.0),
        {"b": 3.0, "a": 4.0},
        collections.OrderedDict(b=5.0, a=6.0),
    ],
    "default dict": collections.defaultdict(int, b=1.0, a=2.0),
    "sequences": [(1.0, [2.0, ()]), [], (None,)],
    "namedtuple": Pair(1.0, Pair({"x": 2.0}, None)),
    "registered namedtuple": Registered(1.0, 2.0),
    "registered with keys": WithKeys([1.0, {"k": 2.0}, WithKeys([])]),
    "registered without keys": NoKeys([1.0, NoKeys([2.0, 3.0])]),
    "dataclass node": Data(1.0, Data(2.0, None)),
    "static node": [Static(1), {"s": Static(2)}],
    "long list": list(range(300)),
}


@pytest.mark.parametrize("name", list(ZOO))
def test_paths_are_jaxs(name: str) -> None:
    same_paths(ZOO[name])


def test_paths_are_jaxs_on_framework_nodes() -> None:
    eqx = pytest.importorskip("equinox")
    pz = pytest.importorskip("penzai.pz")

    class Block(eqx.Module):
        lin: Any
        maybe: Any
        width: int = eqx.field(static=True)

    block = Block(eqx.nn.Linear(2, 3, key=jax.random.key(0)), None, 3)
    same_paths([block, Block(eqx.nn.Linear(3, 3, use_bias=False, key=jax.random.key(1)), 1.0, 2)])

    @pz.pytree_dataclass
    class Layer(pz.Struct):
        w: Any
        inner: Any
        name: str = dataclasses.field(default="l", metadata={"pytree_node": False})

    same_paths({"pz": Layer(jnp.ones(2), Layer(None, [1.0]))})


def test_unsortable_dict_keys_fail_as_in_jax() -> None:
    tree = {1: 1.0, "a": 2.0}
    with pytest.raises(ValueError) as jax_error:
        jax.tree_util.tree_flatten(tree)
    with pytest.raises(ValueError) as ours:
        tw.paths(tree, "**")
    assert str(ours.value) == str(jax_error.value)


keys = st.one_of(
    st.text("abc", min_size=1, max_size=2),
    st.integers(-2, 3),
)
leaves = st.one_of(st.none(), st.floats(0, 1), st.just(()), st.just({}))
trees = st.recursive(
    leaves,
    lambda kids: st.one_of(
        st.lists(kids, max_size=3),
        st.lists(kids, max_size=3).map(tuple),
        st.dictionaries(st.text("abc", min_size=1, max_size=2), kids, max_size=3),
        st.dictionaries(st.integers(-2, 3), kids, max_size=3),
        st.dictionaries(keys, kids, max_size=3).map(collections.OrderedDict),
        st.tuples(kids, kids).map(lambda t: Pair(*t)),
        st.lists(kids, max_size=3).map(NoKeys),
        st.lists(kids, max_size=3).map(WithKeys),
        st.tuples(kids, kids).map(lambda t: Data(*t)),
    ),
    max_leaves=12,
)


@given(trees)
def test_drawn_trees_have_jaxs_paths(tree: Any) -> None:
    same_paths(tree)
