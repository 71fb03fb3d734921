import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import treewalk as tw
from treewalk.testing import Keyed, pytrees, selectors, trees_equal


def layers(n, start=0):
    return {f"layer_{i}": {"w": jnp.ones((3, 3)), "bias": jnp.ones(3)} for i in range(start, n)}


def normal(path, x, key):
    return jax.random.normal(key, x.shape, x.dtype)


def test_zero_biases_and_leave_the_rest():
    tree = layers(3)
    out = tw.replace(tree, "**/bias", tw.zeros)
    for name in tree:
        assert (out[name]["bias"] == 0).all()
        assert out[name]["w"] is tree[name]["w"]
    assert (tree["layer_0"]["bias"] == 1).all()  # input untouched


def test_fn_gets_path_node_and_no_key_without_key():
    calls = []
    tw.replace({"a": {"b": 1}}, "a/b", lambda p, x, k: calls.append((tw.path_str(p), x, k)) or x)
    assert calls == [("a/b", 1, None)]


def test_helpers():
    tree = {"a": jnp.zeros((2,), jnp.int32), "f": 0.5, "c": jnp.ones(3)}
    assert tw.replace(tree, "a", tw.ones)["a"].dtype == jnp.int32
    assert tw.replace(tree, "f", tw.zeros)["f"] == 0.0
    assert (tw.replace(tree, "c", tw.constant(0.25))["c"] == 0.25).all()
    nan = {"x": jnp.array([jnp.nan, jnp.inf])}
    assert (tw.replace(nan, "x", tw.zeros)["x"] == 0).all()  # unlike x * 0
    with pytest.raises(tw.ArgumentError, match="needs a key"):
        tw.replace(tree, "c", tw.initializer(jax.nn.initializers.normal()))
    with pytest.raises(tw.ArgumentError, match="init\\(key, shape, dtype\\)"):
        tw.initializer(3)


def test_internal_nodes_and_outermost_wins():
    tree = {"enc": {"a": {"b": 1}}, "dec": {"a": {"b": 2}}}
    seen = []

    def fn(path, node, key):
        seen.append(tw.path_str(path))
        return {"replaced": True}

    out = tw.replace(tree, tw.glob("**/a") | tw.glob("**/b") | "enc", fn)
    assert seen == ["dec/a", "enc"]
    assert out == {"enc": {"replaced": True}, "dec": {"a": {"replaced": True}}}


def test_none_is_skipped_and_gets_no_key():
    tree = {"l": {"w": jnp.ones(2), "bias": None}, "m": {"bias": jnp.ones(2)}}
    seen = []

    def fn(path, node, key):
        seen.append(tw.path_str(path))
        return jnp.zeros(2)

    tw.replace(tree, "**/bias", fn, key=jax.random.key(0))
    assert seen == ["m/bias"]
    out = tw.replace(tree, "**/bias", fn, include_none=True)
    assert (out["l"]["bias"] == 0).all()


def test_check_shape_and_dtype():
    tree = {"enc": {"w": jnp.ones((2, 3))}}
    with pytest.raises(
        tw.ReplacementError,
        match=r"'enc/w' from shape \(2, 3\), dtype float32 "
        r"to shape \(3,\), dtype float32",
    ):
        tw.replace(tree, "**/w", lambda p, x, k: jnp.ones(3))
    with pytest.raises(tw.ReplacementError, match="dtype int32"):
        tw.replace(tree, "**/w", lambda p, x, k: x.astype(jnp.int32))
    with pytest.raises(tw.ReplacementError, match="with a NoneType"):
        tw.replace(tree, "**/w", lambda p, x, k: None)
    assert tw.replace(tree, "**/w", lambda p, x, k: None, check=False) == {"enc": {"w": None}}


def test_strict_names_the_selector_and_close_paths():
    tree = layers(2)
    with pytest.raises(
        tw.NoMatchError,
        match=r"glob\('\*\*/biass'\) matches no node of the tree.*"
        r"Closest paths: 'layer_[01]/bias'",
    ):
        tw.replace(tree, "**/biass", tw.zeros)
    out = tw.replace(tree, "**/biass", tw.zeros, strict=False)
    assert out is not tree and trees_equal(out, tree)  # containers are always new
    assert out["layer_0"]["bias"] is tree["layer_0"]["bias"]  # leaves are the input's


def test_ties_survive():
    shared = jnp.ones(3)
    tree = {"embed": shared, "unembed": shared, "other": jnp.ones(3)}
    calls = []

    def fn(path, x, key):
        calls.append(tw.path_str(path))
        return jax.random.normal(key, x.shape)

    out = tw.replace(tree, tw.arrays, fn, key=jax.random.key(0))
    assert calls == ["embed", "other"]
    assert out["embed"] is out["unembed"]
    assert not (out["other"] == out["embed"]).all()
    out = tw.replace(
        tree, tw.arrays, tw.initializer(jax.nn.initializers.normal()), key=jax.random.key(0)
    )
    assert out["embed"] is out["unembed"]
    out = tw.replace(tree, tw.arrays, lambda p, x, k: x + 1)  # the one-pass path
    assert out["embed"] is out["unembed"]


def test_keys_are_per_node_and_path_derived():
    tree = layers(4)
    key = jax.random.key(0)
    a = tw.replace(tree, tw.arrays, normal, key=key)
    leaves = jax.tree_util.tree_leaves(a)
    assert len({np.asarray(x).tobytes() for x in leaves}) == len(leaves)
    # Each node's value is a function of its path only.
    k = tw.key_for_path(key, ("layer_2", "w"))
    assert (a["layer_2"]["w"] == jax.random.normal(k, (3, 3))).all()
    # Adding layers or changing the selector changes no other node's value.
    b = tw.replace(layers(6), tw.arrays, normal, key=key)
    c = tw.replace(tree, "**/w", normal, key=key)
    for name in tree:
        assert (a[name]["w"] == b[name]["w"]).all() and (a[name]["w"] == c[name]["w"]).all()
        assert (a[name]["bias"] == b[name]["bias"]).all()


def test_split_policy_is_split_in_traversal_order():
    tree = layers(2)
    out = tw.replace(tree, tw.arrays, normal, key=jax.random.key(0), key_policy="split")
    keys = list(jax.random.split(jax.random.key(0), 4))
    expected = [
        jax.random.normal(k, x.shape)
        for k, x in zip(keys, jax.tree_util.tree_leaves(tree), strict=True)
    ]
    for got, want in zip(jax.tree_util.tree_leaves(out), expected, strict=True):
        assert (got == want).all()


def test_legacy_and_typed_keys():
    tree = layers(2)
    kinds = []

    def fn(path, x, key):
        kinds.append(jnp.issubdtype(key.dtype, jax.dtypes.prng_key))
        return normal(path, x, key if kinds[-1] else jax.random.wrap_key_data(key))

    a = tw.replace(tree, tw.arrays, fn, key=jax.random.key(7))
    b = tw.replace(tree, tw.arrays, fn, key=jax.random.PRNGKey(7))
    assert kinds == [True] * 4 + [False] * 4  # fn gets the kind of key it was given
    assert trees_equal(a, b)
    with pytest.raises(tw.PRNGKeyError, match="must be a JAX PRNG key"):
        tw.replace(tree, tw.arrays, fn, key=3)
    with pytest.raises(tw.PRNGKeyError, match="single PRNG key"):
        tw.replace(tree, tw.arrays, fn, key=jax.random.split(jax.random.key(0), 2))
    with pytest.raises(tw.ArgumentError, match="key_policy= must be"):
        tw.replace(tree, tw.arrays, fn, key=jax.random.key(0), key_policy="fold")
    with pytest.raises(tw.ArgumentError, match="`fn` must be callable"):
        tw.replace(tree, tw.arrays, "zeros")


def test_batched_draws_equal_leaf_by_leaf_draws():
    tree = {**layers(5), "odd": {"w": jnp.ones((2, 7)), "bias": jnp.ones(7, jnp.float16)}}
    init = jax.nn.initializers.truncated_normal(0.5)
    key = jax.random.key(3)
    for policy in ("path", "split"):
        batched = tw.replace(tree, tw.arrays, tw.initializer(init), key=key, key_policy=policy)
        single = tw.replace(
            tree, tw.arrays, lambda p, x, k: init(k, x.shape, x.dtype), key=key, key_policy=policy
        )
        assert trees_equal(batched, single)


def test_fn_that_raises_leaves_input_untouched_and_names_the_path():
    tree = {"a": np.ones(2), "b": {"c": np.ones(2)}}
    before = copy.deepcopy(tree)

    def fn(path, x, key):
        if tw.path_str(path) == "b/c":
            raise RuntimeError("no")
        x[...] = 5  # even an fn that mutates what it is given sees... the input array: don't.
        return x

    with pytest.raises(
        tw.CallbackError,
        match=r"fn \(selector arrays\) raised RuntimeError at path"
        r" 'b/c': no",
    ):
        tw.replace(tree, tw.arrays, lambda p, x, k: fn(p, x.copy(), k), key=jax.random.key(0))
    assert trees_equal(tree, before)


def test_under_jit_vmap_and_grad():
    tree = layers(3)
    init = tw.initializer(jax.nn.initializers.lecun_normal())
    eager = tw.replace(tree, "**/w", init, key=jax.random.key(0))
    jitted = jax.jit(lambda k: tw.replace(tree, "**/w", init, key=k))(jax.random.key(0))
    assert trees_equal(eager, jitted)
    keys = jax.random.split(jax.random.key(1), 4)
    ensemble = jax.vmap(lambda k: tw.replace(tree, "**/w", init, key=k))(keys)
    assert ensemble["layer_0"]["w"].shape == (4, 3, 3)
    assert not (ensemble["layer_0"]["w"][0] == ensemble["layer_0"]["w"][1]).all()
    one = tw.replace(tree, "**/w", init, key=keys[2])
    assert jnp.allclose(ensemble["layer_1"]["w"][2], one["layer_1"]["w"])

    def loss(scale):
        t = tw.replace(tree, "**/bias", lambda p, x, k: x * scale)
        return sum(jnp.sum(v) for v in jax.tree_util.tree_leaves(t))

    assert jax.grad(loss)(2.0) == 9.0  # three biases of three ones


def test_abstract_leaves_are_materialised():
    abstract = jax.eval_shape(lambda: layers(3))
    assert isinstance(abstract["layer_0"]["w"], jax.ShapeDtypeStruct)
    out = tw.replace(
        abstract, tw.arrays, tw.initializer(jax.nn.initializers.normal()), key=jax.random.key(0)
    )
    out = tw.replace(out, "**/bias", tw.zeros)
    assert isinstance(out["layer_1"]["w"], jax.Array) and out["layer_1"]["w"].shape == (3, 3)
    assert (out["layer_1"]["bias"] == 0).all()


# --- properties ------------------------------------------------------------------------


@st.composite
def tree_and_selector(draw):
    tree = draw(pytrees())
    return tree, draw(selectors(tree))


def bump(path, x, key):
    if isinstance(x, jax.Array):
        return x + jnp.ones((), x.dtype) if x.dtype != jnp.bool_ else ~x
    return x


@given(tree_and_selector())
def test_identity_fn_gives_equal_tree(args):
    tree, sel = args
    out = tw.replace(tree, sel, lambda p, x, k: x, strict=False)
    assert trees_equal(out, tree)


@given(tree_and_selector())
def test_replace_then_select_returns_fn_outputs(args):
    tree, sel = args
    sel = sel & tw.arrays
    outputs = []

    def fn(path, x, key):
        outputs.append(bump(path, x, key))
        return outputs[-1]

    out = tw.replace(tree, sel, fn, strict=False)
    picked = tw.select(out, tw.predicate(lambda p, x: any(x is o for o in outputs)))
    # one fn call per distinct array: a tie (one array at several paths) is one output
    assert len({id(x) for _, x in picked}) == len(outputs)
    assert [tw.path_str(p) for p, _ in picked] == [tw.path_str(p) for p in tw.paths(tree, sel)]


@given(tree_and_selector())
def test_selector_and_complement_commute(args):
    tree, sel = args
    a, b = sel & tw.arrays, ~sel & tw.arrays
    one = tw.replace(tw.replace(tree, a, bump, strict=False), b, bump, strict=False)
    two = tw.replace(tw.replace(tree, b, bump, strict=False), a, bump, strict=False)
    assert trees_equal(one, two)


@given(pytrees(non_arrays=False), st.integers(0, 2**31 - 1))
def test_same_key_same_result_different_key_different(tree, seed):
    fl = tw.arrays & tw.predicate(lambda p, x: x.dtype == jnp.float32 and x.size > 1)

    def draw(path, x, key):
        return jax.random.normal(key, x.shape, x.dtype)

    a = tw.replace(tree, fl, draw, key=jax.random.key(seed), strict=False)
    b = tw.replace(tree, fl, draw, key=jax.random.key(seed), strict=False)
    c = tw.replace(tree, fl, draw, key=jax.random.key(seed + 1), strict=False)
    assert trees_equal(a, b)
    for (_, x), (_, y) in zip(tw.select(a, fl), tw.select(c, fl), strict=True):
        assert not np.array_equal(x, y)


@given(pytrees(non_arrays=False), pytrees(non_arrays=False))
def test_path_keys_unchanged_by_inserting_an_unrelated_subtree(tree, other):
    def draw(path, x, key):
        return jax.random.uniform(key, x.shape).astype(x.dtype) if x.size else x

    key = jax.random.key(1)
    a = tw.replace({"model": tree}, tw.arrays, draw, key=key, strict=False)
    b = tw.replace(
        {"model": tree, "zz_extra": Keyed(other, 1)}, tw.arrays, draw, key=key, strict=False
    )
    assert trees_equal(a["model"], b["model"])


def test_one_shape_dtype_struct_at_many_paths_is_not_a_tie():
    sds = jax.ShapeDtypeStruct((3,), jnp.float32)
    out = tw.replace(
        {"a": sds, "b": sds},
        tw.arrays,
        tw.initializer(jax.nn.initializers.normal()),
        key=jax.random.key(0),
    )
    assert not (out["a"] == out["b"]).all()
