"""treewalk on real Equinox models: paths, walks, selectors, queries and replace recipes."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from frameworks import Block, Wrapped, eqx_block, eqx_layers, eqx_mlp, walk_log

import treewalk as tw

lecun = tw.initializer(jax.nn.initializers.lecun_normal())


def strs(tree, sel):
    return [tw.path_str(p) for p in tw.paths(tree, sel)]


# ------------------------------------------------------------------------------ paths


def test_mlp_paths_and_segments():
    m = eqx_mlp()
    assert strs(m, tw.arrays) == [
        "layers/0/weight",
        "layers/0/bias",
        "layers/1/weight",
        "layers/1/bias",
    ]
    [(path, node)] = tw.select(m, "layers/1/bias")
    assert tw.path_segments(path) == ("layers", 1, "bias")
    assert node is m.layers[1].bias
    assert tw.select(m, "activation")[0][1] is m.activation  # function-valued leaf


def test_static_field_is_not_a_node():
    m = eqx_block()
    assert "scale" not in strs(m, tw.everything)
    assert strs(m, "act") == ["act"]


def test_linear_without_bias_none_is_not_selected():
    lin = eqx.nn.Linear(3, 2, use_bias=False, key=jax.random.key(0))
    assert lin.bias is None
    assert strs(lin, tw.arrays) == ["weight"]
    assert strs(lin, "**/bias") == []


# ------------------------------------------------------------------------------ walks


def test_prewalk_postwalk_identity_and_order():
    m = eqx_block()
    out_pre, pre = walk_log(tw.prewalk, m)
    out_post, post = walk_log(tw.postwalk, m)
    for out in (out_pre, out_post):
        assert jax.tree.structure(out) == jax.tree.structure(m)
        assert all(a is b for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(m), strict=True))
    assert pre[0] == "" and post[-1] == ""
    assert pre.index("linear1") < pre.index("linear1/weight")
    assert post.index("linear1/weight") < post.index("linear1")
    assert sorted(pre) == sorted(post)
    assert "scale" not in pre


def test_prewalk_exclude_prunes_layernorm():
    m = eqx_block()
    seen = []

    def fn(path, node):
        seen.append(tw.path_str(path))
        return node

    out = tw.prewalk(fn, m, exclude=lambda p, n: isinstance(n, eqx.nn.LayerNorm))
    assert out.norm is m.norm
    assert not any(s.startswith("norm") for s in seen)


def test_postwalk_rebuilds_modules():
    m = eqx_block()
    out = tw.postwalk(lambda p, n: n * 2 if isinstance(n, jax.Array) else n, m)
    x = jnp.ones(3)
    assert isinstance(out, Block)
    np.testing.assert_allclose(out.linear1.weight, 2 * m.linear1.weight)
    assert out(x).shape == (2,)


# -------------------------------------------------------------------------- selectors


def test_of_type_selects_every_linear():
    m = eqx_block()
    hits = tw.select(m, tw.of_type(eqx.nn.Linear))
    assert [tw.path_str(p) for p, _ in hits] == ["linear1", "linear2"]
    assert hits[0][1] is m.linear1
    assert strs(eqx_mlp(), eqx.nn.Linear) == ["layers/0", "layers/1"]  # class coerced


def test_not_inside_layernorm():
    m = eqx_block()
    sel = tw.name("weight", "bias") & ~tw.inside(eqx.nn.LayerNorm)
    assert strs(m, sel) == ["linear1/weight", "linear1/bias", "linear2/weight", "linear2/bias"]
    assert strs(m, tw.arrays & tw.inside(eqx.nn.LayerNorm)) == ["norm/weight", "norm/bias"]


def test_glob_regex_name():
    m = eqx_mlp()
    assert strs(m, "layers/*/weight") == ["layers/0/weight", "layers/1/weight"]
    assert strs(m, tw.regex(r"layers/1/.*")) == ["layers/1/weight", "layers/1/bias"]
    assert strs(m, tw.name("weight", "kernel", "w")) == ["layers/0/weight", "layers/1/weight"]


# ---------------------------------------------------------------------------- queries


def test_tree_at_with_where():
    m = eqx_mlp()
    out = eqx.tree_at(tw.where(m, "**/bias"), m, replace_fn=jnp.zeros_like)
    assert all((layer.bias == 0).all() for layer in out.layers)
    assert all((layer.bias != 0).any() for layer in m.layers)
    assert out.layers[0].weight is m.layers[0].weight


def test_partition_with_mask():
    m = eqx_block()
    mask = tw.mask(m, "**/bias")
    assert jax.tree.structure(mask) == jax.tree.structure(m)
    biases, rest = eqx.partition(m, mask)
    assert biases.linear1.bias is m.linear1.bias and biases.linear1.weight is None
    assert rest.linear1.bias is None and rest.linear1.weight is m.linear1.weight
    assert biases.norm.bias is m.norm.bias
    recombined = eqx.combine(biases, rest)
    assert jax.tree.structure(recombined) == jax.tree.structure(m)


# --------------------------------------------------------------------------- replace


def test_zero_every_bias_of_an_mlp():
    m = eqx_mlp()
    out = tw.replace(m, "**/bias", tw.zeros)
    assert isinstance(out, eqx.nn.MLP)
    for old, new in zip(m.layers, out.layers, strict=True):
        assert (new.bias == 0).all() and (old.bias != 0).any()
        assert new.weight is old.weight
    assert out.activation is m.activation
    assert out(jnp.ones(3)).shape == (2,)


def test_reinit_linear_weights_deterministic():
    m = eqx_block()
    sel = tw.name("weight") & tw.inside(eqx.nn.Linear)
    a = tw.replace(m, sel, lecun, key=jax.random.key(1))
    b = tw.replace(m, sel, lecun, key=jax.random.key(1))
    c = tw.replace(m, sel, lecun, key=jax.random.key(2))
    for lin in ("linear1", "linear2"):
        wa, wb, wc = (getattr(t, lin).weight for t in (a, b, c))
        np.testing.assert_array_equal(wa, wb)
        assert not np.allclose(wa, wc)
        assert not np.allclose(wa, getattr(m, lin).weight)
        assert getattr(a, lin).bias is getattr(m, lin).bias
    assert a.norm.weight is m.norm.weight  # LayerNorm weight untouched
    assert not np.allclose(a.linear1.weight[0], a.linear2.weight[0, :3])
    assert a.scale == m.scale and a.act is m.act


def test_pruning_mask():
    m = eqx_mlp()
    masks = {p: (jnp.arange(x.size).reshape(x.shape) % 2) for p, x in tw.select(m, "**/weight")}
    out = tw.replace(m, "**/weight", lambda p, x, k: x * masks[p])
    for old, new in zip(m.layers, out.layers, strict=True):
        np.testing.assert_array_equal(new.weight.ravel()[::2], 0)
        np.testing.assert_array_equal(new.weight.ravel()[1::2], old.weight.ravel()[1::2])


def test_freeze_with_stop_gradient():
    m = eqx_mlp()

    def loss(model):
        frozen = tw.replace(model, "layers/0/*", lambda p, x, k: jax.lax.stop_gradient(x))
        return jnp.sum(frozen(jnp.ones(3)) ** 2)

    grads = eqx.filter_grad(loss)(m)
    assert (grads.layers[0].weight == 0).all() and (grads.layers[0].bias == 0).all()
    assert (grads.layers[1].weight != 0).any()


def test_model_surgery_wrap_and_unwrap():
    m = eqx_block()
    wrapped = tw.replace(m, eqx.nn.Linear, lambda p, lin, k: Wrapped(lin, jnp.array(3.0)))
    assert isinstance(wrapped.linear1, Wrapped) and isinstance(wrapped.linear2, Wrapped)
    assert wrapped.linear1.inner is m.linear1
    x = jnp.ones(3)
    assert wrapped(x).shape == (2,)
    # Outermost wins: the Linear inside each Wrapped is not wrapped again.
    assert strs(wrapped, eqx.nn.Linear) == ["linear1/inner", "linear2/inner"]
    back = tw.replace(wrapped, Wrapped, lambda p, w, k: w.inner)
    assert jax.tree.structure(back) == jax.tree.structure(m)
    np.testing.assert_allclose(back(x), m(x))


def test_use_bias_false_include_none_adds_a_bias():
    lin = eqx.nn.Linear(3, 2, use_bias=False, key=jax.random.key(0))
    seen = []

    def fn(path, node, key):
        seen.append((tw.path_str(path), node))
        return node

    tw.replace(lin, tw.inside(eqx.nn.Linear), fn, key=jax.random.key(0))
    assert [s for s, _ in seen] == ["weight"]  # None: not selected, no key
    with pytest.raises(tw.NoMatchError):
        tw.replace(lin, "bias", fn)
    out = tw.replace(lin, "bias", lambda p, n, k: jnp.ones(2), include_none=True)
    assert (out.bias == 1).all() and lin.bias is None


def test_replace_keeps_static_and_function_fields():
    m = eqx_block()
    out = tw.replace(m, tw.arrays, tw.ones)
    assert out.scale == 2.0 and out.act is jax.nn.relu
    assert all((x == 1).all() for x in jax.tree.leaves(eqx.filter(out, eqx.is_array)))
    with pytest.raises(tw.ReplacementError):
        tw.replace(m, "linear1/weight", lambda p, x, k: x[0])  # shape check


def test_path_keys_unchanged_by_an_unrelated_layer():
    sel = "*/weight"
    a = tw.replace(eqx_layers(0), sel, lecun, key=jax.random.key(5))
    b = tw.replace(eqx_layers(0, extra=True), sel, lecun, key=jax.random.key(5))
    c = tw.replace(eqx_layers(0), "first/weight", lecun, key=jax.random.key(5))
    for name in ("first", "last"):
        np.testing.assert_array_equal(a[name].weight, b[name].weight)
    np.testing.assert_array_equal(a["first"].weight, c["first"].weight)  # selector changed


def test_split_policy_is_traversal_ordered():
    m = eqx_layers(0)
    a = tw.replace(m, "*/weight", lecun, key=jax.random.key(5), key_policy="split")
    b = tw.replace(m, "*/weight", lecun, key=jax.random.key(5), key_policy="split")
    np.testing.assert_array_equal(a["last"].weight, b["last"].weight)
    assert not np.allclose(a["first"].weight[:2, :3], a["last"].weight[:2, :3])


def test_legacy_uint32_key():
    m = eqx_mlp()
    out = tw.replace(m, "**/weight", lecun, key=jax.random.PRNGKey(0))
    assert not np.allclose(out.layers[0].weight, m.layers[0].weight)


# ------------------------------------------------------------------------- transforms


def test_replace_under_jit():
    m = eqx_mlp()

    @eqx.filter_jit
    def reinit(model, key):
        return tw.replace(model, "**/weight", lecun, key=key)

    out = reinit(m, jax.random.key(3))
    eager = tw.replace(m, "**/weight", lecun, key=jax.random.key(3))
    np.testing.assert_allclose(out.layers[0].weight, eager.layers[0].weight, rtol=1e-6)
    assert out.layers[0].bias is not None and (out.layers[0].bias == m.layers[0].bias).all()


def test_ensemble_by_vmap_over_the_key():
    m = eqx_mlp()
    keys = jax.random.split(jax.random.key(0), 3)
    ens = eqx.filter_vmap(lambda k: tw.replace(m, "**/weight", lecun, key=k))(keys)
    assert ens.layers[0].weight.shape == (3, 4, 3)
    np.testing.assert_array_equal(ens.layers[0].bias[2], m.layers[0].bias)  # untouched
    w = np.asarray(ens.layers[0].weight)
    assert not np.allclose(w[0], w[1]) and not np.allclose(w[1], w[2])
    one = tw.replace(m, "**/weight", lecun, key=keys[1])
    np.testing.assert_allclose(w[1], one.layers[0].weight, rtol=1e-6)


def test_grad_flows_through_fn():
    m = eqx_mlp()

    def loss(scale):
        out = tw.replace(m, "**/weight", lambda p, x, k: scale * x)
        return jnp.sum(out(jnp.ones(3)))

    g = jax.grad(loss)(1.0)
    eps = 1e-3
    fd = (loss(1.0 + eps) - loss(1.0 - eps)) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-2)
    assert g != 0


def test_abstract_model_materialised():
    abstract = eqx.filter_eval_shape(eqx_block, 0)
    assert isinstance(abstract.linear1.weight, jax.ShapeDtypeStruct)
    weights = tw.name("weight") & tw.inside(eqx.nn.Linear)
    out = tw.replace(abstract, weights, lecun, key=jax.random.key(0))
    still_abstract = tw.predicate(lambda p, n: isinstance(n, jax.ShapeDtypeStruct))
    rest = ["linear1/bias", "norm/weight", "norm/bias", "linear2/bias"]
    assert strs(out, still_abstract) == rest
    out = tw.replace(out, still_abstract, tw.zeros)
    leaves = jax.tree.leaves(eqx.filter(out, eqx.is_array))
    assert leaves and all(isinstance(x, jax.Array) for x in leaves)
    assert out.linear1.weight.shape == (4, 3) and out.scale == 2.0
    assert out(jnp.ones(3)).shape == (2,)
    again = tw.replace(abstract, weights, lecun, key=jax.random.key(0))
    np.testing.assert_array_equal(out.linear2.weight, again.linear2.weight)


# ----------------------------------------------------------------------------- errors


def test_no_match_names_selector_and_close_paths():
    m = eqx_mlp()
    with pytest.raises(tw.NoMatchError) as info:
        tw.replace(m, "**/kernel", tw.zeros)  # Equinox calls it `weight`
    msg = str(info.value)
    assert "**/kernel" in msg and "layers/0/weight" in msg and "strict=False" in msg
    assert tw.replace(m, "**/kernel", tw.zeros, strict=False) is m or jax.tree.all(
        jax.tree.map(lambda a, b: a is b, tw.replace(m, "**/kernel", tw.zeros, strict=False), m)
    )


def test_fn_raising_names_path_and_leaves_model_alone():
    m = eqx_mlp()
    w = np.array(m.layers[1].weight)

    def fn(path, x, key):
        if tw.path_str(path) == "layers/1/weight":
            raise ValueError("bad layer")
        return x * 0

    with pytest.raises(tw.CallbackError) as info:
        tw.replace(m, "**/weight", fn)
    assert "layers/1/weight" in str(info.value) and "bad layer" in str(info.value)
    np.testing.assert_array_equal(m.layers[1].weight, w)
    assert (m.layers[0].weight != 0).any()


def test_shared_linear_fn_called_once_tie_kept():
    lin = eqx.nn.Linear(3, 3, key=jax.random.key(0))
    tied = {"encoder": lin, "decoder": lin}
    calls = []

    def fn(path, x, key):
        calls.append(tw.path_str(path))
        return jax.random.normal(key, x.shape, x.dtype)

    out = tw.replace(tied, "*/weight", fn, key=jax.random.key(1))
    assert calls == ["decoder/weight"]  # dicts flatten in key order
    assert out["encoder"].weight is out["decoder"].weight
    assert out["encoder"].bias is lin.bias
