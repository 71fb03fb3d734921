import jax
import jax.numpy as jnp
import optax
import pytest

import treewalk as tw
from treewalk.testing import Pair

PARAMS = {
    "dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)},
    "norm": {"scale": jnp.ones(3), "bias": jnp.ones(3)},
    "step": 3,
}


def test_select_returns_nodes_in_traversal_order_including_nested():
    got = [(tw.path_str(p), type(x).__name__) for p, x in tw.select(PARAMS, "**")]
    assert got[:3] == [("", "dict"), ("dense", "dict"), ("dense/bias", "ArrayImpl")]
    assert len(got) == 8


def test_where_picks_what_replace_acts_on():
    where = tw.where(PARAMS, tw.glob("norm") | "**/bias")
    assert where(PARAMS) == [PARAMS["dense"]["bias"], PARAMS["norm"]]
    other = jax.tree_util.tree_map(lambda x: x * 2, PARAMS)
    assert where(other)[1] is other["norm"]  # looked up by path in the tree it is given


@pytest.mark.parametrize("sel", ["**", "**/bias", tw.arrays, tw.glob("*") | "norm/*"])
def test_where_finds_every_node_select_does_in_one_descent(sel):
    tree = {"layers": [dict(PARAMS, i=i) for i in range(30)], "head": PARAMS}
    found = [x for _, x in tw.select(tree, sel, outermost=True)]
    got = tw.where(tree, sel)(tree)
    assert len(got) == len(found) and all(a is b for a, b in zip(got, found, strict=True))


def test_where_on_a_tree_of_another_structure_names_a_missing_path():
    where = tw.where(PARAMS, "**/bias")
    with pytest.raises(tw.StructureError, match=r"'norm/bias'.*same structure"):
        where({"dense": PARAMS["dense"]})


def test_mask_marks_the_leaves_replace_would_change():
    # "norm" picks a layer: replace hands it over whole, so mask marks every leaf in it,
    # as inside("norm") does; "norm/**" is what lies below it, the same leaves.
    in_norm = {
        "dense": {"kernel": False, "bias": False},
        "norm": {"scale": True, "bias": True},
        "step": False,
    }
    assert tw.mask(PARAMS, "norm") == tw.mask(PARAMS, tw.inside("norm")) == in_norm
    assert tw.mask(PARAMS, "norm/**") == in_norm
    changed = tw.replace(PARAMS, "norm", lambda p, x, k: jax.tree.map(jnp.zeros_like, x))
    for path, marked in tw.select(tw.mask(PARAMS, "norm"), tw.arrays | tw.predicate(_bool)):
        was, now = _at(PARAMS, path), _at(changed, path)
        assert marked == (was is not now), tw.path_str(path)
    # `~name("bias")` picks leaves only (a negation picks leaves): never the root dict.
    assert tw.mask(PARAMS, ~tw.name("bias")) == {
        "dense": {"kernel": True, "bias": False},
        "norm": {"scale": True, "bias": False},
        "step": True,
    }
    assert [tw.path_str(p) for p in tw.paths(PARAMS, ~tw.name("bias"))] == [
        "dense/kernel",
        "norm/scale",
        "step",
    ]


def _bool(path, x):
    return isinstance(x, bool)


def _at(tree, path):
    for entry in path:
        tree = tree[entry.key]
    return tree


def test_mask_with_optax_masked_on_a_dict():
    decay = tw.mask(PARAMS, tw.arrays & ~tw.name("bias") & ~tw.inside("norm"))
    params = {k: v for k, v in PARAMS.items() if k != "step"}
    opt = optax.adamw(0.1, weight_decay=1.0, mask=lambda p: tw.mask(p, tw.name("kernel")))
    state = opt.init(params)
    zero = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates, _ = opt.update(zero, state, params)
    assert (updates["dense"]["kernel"] != 0).all()  # decayed
    assert (updates["dense"]["bias"] == 0).all() and (updates["norm"]["scale"] == 0).all()
    assert decay["dense"]["kernel"] and not decay["norm"]["scale"]


def test_labels_and_multi_transform():
    params = {k: v for k, v in PARAMS.items() if k != "step"}
    lab = tw.labels(params, {"decay": "**/kernel", "no_decay": ~tw.name("kernel")})
    assert lab == {
        "dense": {"kernel": "decay", "bias": "no_decay"},
        "norm": {"scale": "no_decay", "bias": "no_decay"},
    }
    tx = optax.multi_transform({"decay": optax.sgd(1.0), "no_decay": optax.set_to_zero()}, lab)
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert (updates["dense"]["kernel"] == -1).all() and (updates["norm"]["scale"] == 0).all()


def test_labels_errors_name_paths_and_labels():
    with pytest.raises(
        tw.LabelError,
        match=r"claimed by more than one label: 'dense/bias' "
        r"\(labels 'a', 'b'\)",
    ):
        tw.labels(PARAMS, {"a": "**/bias", "b": tw.inside("dense")}, default="rest")
    with pytest.raises(
        tw.LabelError,
        match=r"3 leaves have no label: 'dense/kernel', "
        r"'norm/scale', 'step'.*pass default=",
    ):
        tw.labels(PARAMS, {"a": "**/bias"})
    assert tw.labels(PARAMS, {"a": "**/bias"}, default="rest")["step"] == "rest"
    with pytest.raises(tw.LabelError, match="non-empty mapping"):
        tw.labels(PARAMS, [])
    with pytest.raises(tw.SelectorError, match="selector of label 'a'"):
        tw.labels(PARAMS, {"a": 3})


def test_queries_on_namedtuple_and_none():
    tree = Pair(None, {"bias": jnp.ones(2)})
    assert tw.mask(tree, "**/bias") == Pair(None, {"bias": True})
    assert tw.paths(tree, "first") == []
    assert tw.paths(tree, "first", include_none=True) == [(jax.tree_util.GetAttrKey("first"),)]
