"""treewalk on real Haiku params: module names holding `/` stay one segment."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from frameworks import haiku_params, hk_mlp

import treewalk as tw

lecun = tw.initializer(jax.nn.initializers.lecun_normal())
X = jnp.ones((1, 3))


def strs(tree, sel):
    return [tw.path_str(p) for p in tw.paths(tree, sel)]


def test_module_name_is_one_segment():
    params = haiku_params()
    assert list(params) == ["mlp/~/linear_0", "mlp/~/linear_1"]
    [(path, node)] = tw.select(params, ("mlp/~/linear_0", "w"))
    assert tw.path_segments(path) == ("mlp/~/linear_0", "w")
    assert tw.path_str(path) == "mlp/~/linear_0/w"
    assert node is params["mlp/~/linear_0"]["w"]
    # A glob works on segments: `*` is one whole module name, never part of one.
    assert strs(params, "*/w") == ["mlp/~/linear_0/w", "mlp/~/linear_1/w"]
    assert strs(params, "mlp/*/linear_0/w") == []
    assert strs(params, "mlp*/b") == ["mlp/~/linear_0/b", "mlp/~/linear_1/b"]
    # regex sees the joined string.
    assert strs(params, tw.regex(r"mlp/~/linear_1/.")) == ["mlp/~/linear_1/b", "mlp/~/linear_1/w"]


def test_walks_identity_and_order():
    params = haiku_params()
    pre, post = [], []
    for walk, log in ((tw.prewalk, pre), (tw.postwalk, post)):
        out = walk(lambda p, n, log=log: log.append(tw.path_segments(p)) or n, params)
        assert jax.tree.structure(out) == jax.tree.structure(params)
        pairs = zip(jax.tree.leaves(out), jax.tree.leaves(params), strict=True)
        assert all(a is b for a, b in pairs)
    assert pre[:2] == [(), ("mlp/~/linear_0",)]
    assert post[-1] == () and post.index(("mlp/~/linear_0", "w")) < post.index(("mlp/~/linear_0",))
    assert sorted(pre) == sorted(post)


def test_dense_weight_by_one_name_selector():
    params = haiku_params()
    assert strs(params, tw.name("weight", "kernel", "w")) == [
        "mlp/~/linear_0/w",
        "mlp/~/linear_1/w",
    ]


def test_zero_biases_and_apply():
    params = haiku_params()
    out = tw.replace(params, "*/b", tw.zeros)
    out = tw.replace(out, "*/w", tw.ones)
    assert all((v["b"] == 0).all() and (v["w"] == 1).all() for v in out.values())
    np.testing.assert_allclose(hk_mlp.apply(out, X), jnp.full((1, 2), 12.0))
    assert (params["mlp/~/linear_0"]["w"] != 1).any()  # input untouched


def test_reinit_w_deterministic_and_path_keyed():
    params = haiku_params()
    a = tw.replace(params, "*/w", lecun, key=jax.random.key(1))
    b = tw.replace(params, "*/w", lecun, key=jax.random.key(1))
    only_first = tw.replace(params, ("mlp/~/linear_0", "w"), lecun, key=jax.random.key(1))
    w0 = a["mlp/~/linear_0"]["w"]
    np.testing.assert_array_equal(w0, b["mlp/~/linear_0"]["w"])
    np.testing.assert_array_equal(w0, only_first["mlp/~/linear_0"]["w"])
    assert not np.allclose(w0, params["mlp/~/linear_0"]["w"])
    assert a["mlp/~/linear_0"]["b"] is params["mlp/~/linear_0"]["b"]


def test_replace_under_jit_and_vmap():
    params = haiku_params()
    reinit = jax.jit(lambda k: tw.replace(params, "*/w", lecun, key=k))
    keys = jax.random.split(jax.random.key(0), 2)
    ens = jax.vmap(reinit)(keys)
    w = ens["mlp/~/linear_1"]["w"]
    assert w.shape == (2, 4, 2) and not np.allclose(w[0], w[1])
    one = tw.replace(params, "*/w", lecun, key=keys[0])
    np.testing.assert_allclose(w[0], one["mlp/~/linear_1"]["w"], rtol=1e-6)


def test_mask_and_labels():
    params = haiku_params()
    mask = tw.mask(params, "*/b")
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    assert mask["mlp/~/linear_1"] == {"b": True, "w": False}
    labels = tw.labels(params, {"decay": "*/w", "no_decay": "*/b"})
    assert labels["mlp/~/linear_0"] == {"b": "no_decay", "w": "decay"}


def test_joined_string_pattern_is_no_match():
    params = haiku_params()
    with pytest.raises(tw.NoMatchError) as info:
        tw.replace(params, "mlp/~/linear_0/w", tw.zeros)  # four segments, not two
    assert "mlp/~/linear_0/w" in str(info.value)


def test_no_match_hints_at_a_tuple_pattern():
    params = haiku_params()
    with pytest.raises(tw.NoMatchError) as info:
        tw.replace(params, "mlp/~/linear_0/w", tw.zeros)
    assert "tuple" in str(info.value)


def test_abstract_params_materialised():
    abstract = jax.eval_shape(hk_mlp.init, jax.random.key(0), X)
    assert isinstance(abstract["mlp/~/linear_0"]["w"], jax.ShapeDtypeStruct)
    out = tw.replace(abstract, "*/w", lecun, key=jax.random.key(0))
    out = tw.replace(out, "*/b", tw.zeros)
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(out))
    assert hk_mlp.apply(out, X).shape == (1, 2)
