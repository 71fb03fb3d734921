"""One rule for what a selector picks, strictness without false alarms, and the misleading
cases of issue 21: each test here failed on 353ef84."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import treewalk as tw

# ----------------------------------------------------------- strictness, at any depth


def _nested(name: str, depth: int):
    tree = jnp.ones(2)
    for _ in range(depth):
        tree = {name: tree}
    return tree


@pytest.mark.parametrize("depth", [1, 3, 5, 6, 7, 9])
def test_no_false_no_match_error_at_any_depth(depth):
    # The survey's skip memo answered the deep leaf from what it had learnt at the
    # internal nodes above it: `name('bias')` was blamed at 7 levels, not at 3.
    t = {"a": _nested("bias", depth), "foo": {"w": jnp.ones(2)}}
    m = tw.mask(t, tw.inside("foo") & tw.name("bias"))
    assert not any(jax.tree.leaves(m))
    assert tw.mask(t, tw.name("bias") | tw.inside("foo"))["foo"]["w"] is True
    out = tw.replace(t, tw.name("bias") & tw.arrays, tw.zeros)
    leaf = out["a"]
    for _ in range(depth):
        leaf = leaf["bias"]
    assert (leaf == 0).all()


def test_a_miss_on_a_deep_chain_of_one_name_is_still_an_error():
    # The survey skips entries it has seen enough of only once it saw a leaf: here the
    # only leaf comes after six nodes of the same entry.
    with pytest.raises(tw.NoMatchError, match=r"name\('biass'\).*\(7 paths\)"):
        tw.replace(_nested("bias", 7), tw.name("biass"), tw.zeros)


def test_a_typo_is_blamed_and_the_right_atom_named():
    t = {"a": _nested("bias", 7), "foo": {"w": jnp.ones(2)}}
    with pytest.raises(tw.NoMatchError, match=r"name\('biass'\)") as info:
        tw.mask(t, tw.inside("foo") | tw.name("biass"))
    assert "inside" not in str(info.value).split(" (in the selector")[0]


class Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.layers = nnx.List([nnx.Linear(3, 3, rngs=rngs), nnx.LayerNorm(3, rngs=rngs)])
        self.head = nnx.Linear(3, 2, rngs=rngs)


def test_nnx_hints_name_leaf_paths():
    # Every NNX value's last entry is BoxKey('value'): the hints were all one segment's.
    net = Net(nnx.Rngs(0))
    with pytest.raises(tw.NoMatchError, match=r"Closest paths: .*'layers/1/scale'"):
        tw.replace(net, "layers/1/scal", tw.zeros)
    with pytest.raises(tw.NoMatchError, match=r"Closest paths: .*'head/kernel'"):
        tw.mask(net, tw.name("kernal"))


@pytest.mark.parametrize("tree", [{}, [], (), None, {"a": None}, {"a": [], "b": {}}])
def test_strictness_is_vacuous_on_a_tree_without_leaves(tree):
    assert tw.mask(tree, tw.arrays) == tree
    assert tw.replace(tree, tw.arrays, tw.zeros) == tree
    assert tw.labels(tree, {"a": tw.arrays}) == tree
    assert tw.mask(tree, tw.name("bias")) == tree
    assert tw.replace(tree, "**/bias", tw.zeros) == tree


def test_masks_and_labels_of_static_nodes_keep_the_structure():
    class Static(eqx.Module):
        n: int = eqx.field(static=True)

    s = Static(3)
    assert tw.mask(s, tw.arrays) == s
    assert tw.labels(s, {"x": tw.arrays}) == s


def test_a_tree_with_leaves_is_still_strict():
    with pytest.raises(tw.NoMatchError, match="selects nothing"):
        tw.replace({"a": jnp.ones(2)}, tw.name("a") & tw.name("b") | tw.name("a") & "b", tw.zeros)
    with pytest.raises(tw.NoMatchError):
        tw.mask({"a": None, "b": 1.0}, "**/c")


# ------------------------------------------------------------ one rule for every call

TREE = {
    "blocks": [{"w": jnp.ones((2, 2)), "bias": jnp.ones(2)} for _ in range(2)],
    "norm": {"scale": jnp.ones(2), "bias": jnp.ones(2)},
    "head": {"w": jnp.ones((2, 2))},
}


def marked(table):
    return [tw.path_str(r.path) for r in table.rows if r.selected]


def true_leaves(mask):
    return [tw.path_str(p) for p, v in tw.select(mask, tw.predicate(_is_true))]


def _is_true(path, x):
    return x is True


@pytest.mark.parametrize(
    "sel",
    [
        ~tw.name("bias"),
        tw.name("bias"),
        "blocks/**",
        "blocks",
        tw.of_type(list),
        tw.inside("norm"),
        ~tw.inside("norm"),
        ~tw.glob("blocks"),
        tw.everything,
        ~tw.everything,
        tw.arrays & ~tw.name("w"),
    ],
)
def test_show_marks_what_mask_marks_and_replace_changes(sel):
    assert marked(tw.show(TREE, sel, max_rows=None)) == true_leaves(tw.mask(TREE, sel))
    seen = []

    def fn(path, x, key):
        seen.append(tw.path_str(path))
        return jax.tree.map(lambda a: a + 1, x)

    out = tw.replace(TREE, sel, fn, strict=False)
    changed = [
        tw.path_str(p)
        for (p, a), (_, b) in zip(
            tw.select(TREE, tw.arrays), tw.select(out, tw.arrays), strict=True
        )
        if a is not b
    ]
    assert changed == true_leaves(tw.mask(TREE, sel, strict=False))


def test_a_negation_picks_leaves_never_the_root():
    paths = [tw.path_str(p) for p in tw.paths(TREE, ~tw.name("bias"))]
    assert "" not in paths and "blocks" not in paths
    assert paths == ["blocks/0/w", "blocks/1/w", "head/w", "norm/scale"]
    table = tw.show(TREE, ~tw.name("bias"))
    assert table.summary().startswith("selector ~name('bias'): 4 of 7 leaves")
    calls = []
    tw.replace(TREE, ~tw.name("bias"), lambda p, x, k: calls.append(type(x)) or x)
    assert calls and all(t is not dict and t is not list for t in calls)


def test_a_trailing_double_star_is_what_lies_below():
    paths = [tw.path_str(p) for p in tw.paths(TREE, "blocks/**")]
    assert paths == ["blocks/0/bias", "blocks/0/w", "blocks/1/bias", "blocks/1/w"]
    out = tw.replace(TREE, "blocks/**", lambda p, x, k: 0.99 * x)
    assert jnp.allclose(out["blocks"][1]["w"], 0.99)
    assert out["head"]["w"] is TREE["head"]["w"]
    assert true_leaves(tw.mask(TREE, "blocks/**")) == true_leaves(tw.mask(TREE, "blocks"))


def test_a_container_selector_hands_the_container():
    got = []
    tw.replace(TREE, "norm", lambda p, x, k: got.append(x) or x)
    assert got == [TREE["norm"]]
    mlp = eqx.nn.MLP(2, 2, 4, 1, key=jax.random.key(0))
    layers = []
    tw.replace(mlp, eqx.nn.Linear, lambda p, x, k: layers.append(type(x)) or x)
    assert layers == [eqx.nn.Linear, eqx.nn.Linear]
    m = tw.mask(mlp, tw.of_type(eqx.nn.Linear))
    assert m.layers[0].weight is True and m.layers[1].bias is True


# -------------------------------------------------------------- the engine's objects


@dataclasses.dataclass(frozen=True, eq=False)
class Keeper(tw.Selector):
    """A selector that keeps every node it is shown (subclassed as the docs say)."""

    kept: list

    def match(self, n):
        self.kept.append((n, tw.path_str(n.path)))
        return False


def test_nodes_a_selector_keeps_never_change():
    kept = []
    tree = {"a": 1.0, "b": [2.0, 3.0], "c": {"d": 4.0}}
    tw.paths(tree, Keeper(kept))
    tw.mask(tree, Keeper(kept), strict=False)
    tw.replace(tree, Keeper(kept), tw.zeros, strict=False)
    assert kept and all(tw.path_str(n.path) == then for n, then in kept)
    leaves = [then for n, then in kept if n.leaf]
    assert {"a", "b/0", "b/1", "c/d"} <= set(leaves)


def test_postwalk_asks_exclude_once_per_node():
    asked = []

    def exclude(path, x):
        asked.append(tw.path_str(path))
        return tw.path_str(path) == "b"

    tree = {"a": [1, 2], "b": {"c": 3}}
    assert tw.postwalk(lambda p, x: x, tree, exclude=exclude) == tree
    assert sorted(asked) == sorted(set(asked)) == ["", "a", "a/0", "a/1", "b"]


# ------------------------------------------------------------------ misleading cases


@pytest.mark.parametrize("fn", [jnp.zeros_like, np.zeros_like, jnp.ones_like, np.full_like])
def test_array_functions_are_refused_with_the_fn_hint(fn):
    for check in (True, False):
        with pytest.raises(tw.ArgumentError, match=r"lambda path, x, key: j?np\.\w+_like\(x\)"):
            tw.replace(TREE, "**/bias", fn, check=check)


def test_where_built_on_a_state_says_why_it_misses_on_the_module():
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    state = nnx.state(model)
    where = tw.where(state, "**/kernel")
    assert where(state)[0] is state["kernel"][...] or where(state)
    with pytest.raises(tw.StructureError, match=r"under other key entries.*nnx\.State"):
        where(model)


def test_nnx_state_mask_has_the_states_structure_for_tree_map():
    net = Net(nnx.Rngs(0))
    state = nnx.state(net, nnx.Param)
    m = tw.mask(state, ~tw.name("bias"))
    out = jax.tree.map(lambda x, keep: x * 0.5 if keep else x, state, m)
    assert type(out["head"]["kernel"]) is nnx.Param and type(out["head"]["bias"]) is nnx.Param
    np.testing.assert_allclose(out["head"]["kernel"][...], 0.5 * state["head"]["kernel"][...])
    pure = tw.mask(nnx.as_pure(state), ~tw.name("bias"))
    assert pure["head"]["kernel"] is True


def test_nnx_mask_for_an_optimizer_of_a_subset_with_wrt():
    net = Net(nnx.Rngs(0))
    only_head = tw.nnx_filter("head/**", net)
    decay = tw.mask(net, ~tw.name("bias"), wrt=only_head)
    opt = nnx.Optimizer(net, optax.adamw(1e-2, mask=decay), wrt=only_head)

    def loss(m):
        return jnp.sum(m.head(m.layers[0](jnp.ones((1, 3)))) ** 2)

    before = np.asarray(net.layers[0].kernel[...])
    grads = nnx.grad(loss, argnums=nnx.DiffState(0, only_head))(net)
    opt.update(net, grads)
    np.testing.assert_array_equal(np.asarray(net.layers[0].kernel[...]), before)
    with pytest.raises(tw.ArgumentError, match="wrt= is for NNX"):
        tw.mask(TREE, "**/w", wrt=nnx.Param)


def test_show_warns_when_a_glob_reaches_the_optimizers_state():
    class Dense(nnx.Module):
        pass

    import flax.linen as nn

    params = nn.Dense(3).init(jax.random.key(0), jnp.ones((1, 2)))["params"]
    state = train_state.TrainState.create(apply_fn=None, params=params, tx=optax.adam(1e-3))
    table = tw.show(state, "**/kernel")
    assert any("optimiser's state" in note for note in table.notes), table.notes
    assert "note:" in str(table)
    assert not tw.show(state, "params/**/kernel").notes


def test_materialize_reads_init_and_plan_entries_as_masks_do():
    from jax.sharding import PartitionSpec as P

    abstract = jax.eval_shape(lambda: {"enc": {"w": jnp.ones((4, 4)), "b": jnp.ones(4)}})
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("x",))
    out = tw.materialize(abstract, {"enc": tw.ones}, plan={"enc": P("x")}, mesh=mesh)
    assert (out["enc"]["w"] == 1).all() and (out["enc"]["b"] == 1).all()
    assert out["enc"]["w"].sharding.spec == P("x")
    with pytest.raises(tw.NoMatchError, match=r"init entry glob\('dec'\) covers no"):
        tw.materialize(abstract, {"dec": tw.ones, "**": tw.zeros})
