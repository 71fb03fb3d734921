"""treewalk next to the libraries people use: eqx.tree_at/partition, optax masks and labels,
NNX filters, Haiku params, penzai models."""

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

import treewalk as tw


class _Net(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(2, 4, rngs=rngs)
        self.l10 = nnx.Linear(4, 4, rngs=rngs)
        self.norm = nnx.LayerNorm(4, rngs=rngs)
        self.count = nnx.BatchStat(jnp.zeros(()))


def _names(state):
    return [tw.path_str(p) for p in tw.paths(state, tw.arrays)]


def test_nnx_filter_by_path_glob_and_box_type():
    net = _Net(nnx.Rngs(0))
    assert _names(nnx.state(net, tw.nnx_filter("**/kernel"))) == ["l1/kernel", "l10/kernel"]
    assert _names(nnx.state(net, tw.nnx_filter("l1/*"))) == ["l1/bias", "l1/kernel"]
    assert _names(nnx.state(net, tw.nnx_filter(tw.of_type(nnx.BatchStat)))) == ["count"]
    params = nnx.state(net, tw.nnx_filter(tw.of_type(nnx.Param)))
    assert "count" not in _names(params) and len(_names(params)) == 6
    # PathContains("l1") tests whole elements: never l10. A glob says what is meant.
    assert _names(nnx.state(net, nnx.PathContains("l1"))) == ["l1/bias", "l1/kernel"]
    assert _names(nnx.state(net, tw.nnx_filter("l1*/**"))) == [
        "l1/bias",
        "l1/kernel",
        "l10/bias",
        "l10/kernel",
    ]


def test_nnx_filter_with_model_sees_layers():
    net = _Net(nnx.Rngs(0))
    f = tw.nnx_filter(tw.inside(nnx.LayerNorm), net)
    assert _names(nnx.state(net, f)) == ["norm/bias", "norm/scale"]
    # Without the model the filter sees only variables: no enclosing layer.
    assert _names(nnx.state(net, tw.nnx_filter(tw.inside(nnx.LayerNorm)))) == []
    # Like tw.mask, a selector that picks a layer picks every variable in it.
    f2 = tw.nnx_filter(tw.of_type(nnx.LayerNorm), net)
    assert _names(nnx.state(net, f2)) == ["norm/bias", "norm/scale"]
    decay = tw.nnx_filter(~tw.inside(nnx.LayerNorm) & ~tw.name("bias"), net)
    assert _names(nnx.state(net, decay)) == ["count", "l1/kernel", "l10/kernel"]
    assert "nnx_filter" in repr(f)


def test_nnx_filter_agrees_with_paths_and_drives_split_and_optimizer():
    net = _Net(nnx.Rngs(0))
    sel = "**/kernel"
    _, picked, rest = nnx.split(net, tw.nnx_filter(sel), ...)
    assert _names(picked) == [tw.path_str(p) for p in tw.paths(net, sel)]
    assert "l1/kernel" not in _names(rest)
    opt = nnx.Optimizer(net, optax.sgd(0.1), wrt=tw.nnx_filter(sel))
    grads = nnx.state(net, tw.nnx_filter(sel))
    grads = jax.tree.map(jnp.ones_like, grads)
    before = net.l1.bias[...]
    opt.update(net, grads)
    assert (net.l1.bias[...] == before).all()


def test_tree_at_with_where_and_partition_with_mask():
    mlp = eqx.nn.MLP(2, 2, 4, 1, key=jax.random.key(0))
    zeroed = eqx.tree_at(tw.where(mlp, "**/bias"), mlp, replace_fn=jnp.zeros_like)
    assert all((layer.bias == 0).all() for layer in zeroed.layers)
    assert tw.where(mlp, tw.of_type(eqx.nn.Linear))(mlp) == list(mlp.layers)
    train, frozen = eqx.partition(mlp, tw.mask(mlp, "**/bias"))
    assert train.layers[0].weight is None and train.layers[0].bias is mlp.layers[0].bias
    assert frozen.layers[0].bias is None and eqx.combine(train, frozen) == mlp


def test_optax_masked_on_equinox_needs_a_function():
    mlp = eqx.nn.MLP(2, 2, 4, 1, key=jax.random.key(0))
    params = eqx.filter(mlp, eqx.is_array)
    sel = ~tw.name("bias")
    mask = tw.mask(params, sel)
    assert callable(mask)  # an Equinox Module: optax would call it (equinox#193)
    tx = optax.masked(optax.set_to_zero(), lambda p: tw.mask(p, sel))
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, state, params)
    assert (updates.layers[0].weight == 0).all() and (updates.layers[0].bias == 1).all()


def test_multi_transform_with_labels_freezes():
    params = {"enc": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}, "head": {"w": jnp.ones(2)}}
    labels = tw.labels(params, {"frozen": "enc/**", "train": "head/**"})
    tx = optax.multi_transform({"frozen": optax.set_to_zero(), "train": optax.sgd(1.0)}, labels)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert (updates["enc"]["kernel"] == 0).all() and (updates["head"]["w"] == -1).all()
    with pytest.raises(tw.LabelError, match="head/w"):
        tw.labels(params, {"frozen": "enc/**"})


def test_haiku_params():
    import haiku as hk

    f = hk.transform(lambda x: hk.nets.MLP([4, 2])(x))
    params = f.init(jax.random.key(0), jnp.ones(2))
    params = tw.replace(params, "*/b", tw.ones)
    assert all((v["b"] == 1).all() for v in params.values())
    assert f.apply(params, None, jnp.ones(2)).shape == (2,)


def test_penzai_model():
    from penzai import pz

    lin = pz.nn.Linear.from_config(
        name="lin", init_base_rng=jax.random.key(0), input_axes={"i": 2}, output_axes={"o": 3}
    )
    out = tw.replace(lin, tw.arrays, tw.zeros)
    assert isinstance(out.weights, pz.Parameter)
    assert (out.weights.value.unwrap("i", "o") == 0).all()
    assert (lin.weights.value.unwrap("i", "o") != 0).any()  # the input is untouched
