"""Across frameworks: one selector for every framework's models, and treewalk masks and
labels in real optax update steps on every framework's params.

The recipe under test: decay every dense weight, never a bias or a norm parameter. With
zero gradients Adam's own update is exactly zero, so what `adamw` returns is the weight
decay alone: `-lr * wd * p` where the mask is True and `0` where it is False.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from frameworks import TREES, eqx_block, haiku_params, linen_params, nnx_model, plain_dict

import treewalk as tw

LR, WD = 0.1, 0.5
DENSE = tw.name("weight", "kernel", "w") & ~tw.inside(eqx.nn.LayerNorm) & ~tw.glob("**/norm/*")
# DENSE is one selector for every framework's tree: on each tree some of its atoms (the
# Equinox LayerNorm, a `norm` key) match nothing, which strictness refuses (see
# tests/test_training_safety.py), so these calls pass strict=False on purpose.


def adamw_updates(params, mask):
    tx = optax.adamw(LR, weight_decay=WD, mask=mask)
    state = tx.init(params)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
    return updates


def decayed_paths(params, updates):
    """Paths (as strings) whose update is non-zero, checked to be exactly `-lr*wd*p`."""
    out = []
    for (path, u), (_, p) in zip(
        tw.select(updates, tw.arrays), tw.select(params, tw.arrays), strict=True
    ):
        if np.any(np.asarray(u) != 0):
            np.testing.assert_allclose(u, -LR * WD * np.asarray(p), rtol=1e-6)
            out.append(tw.path_str(path))
    return out


def eqx_params():
    return eqx.filter(eqx_block(), eqx.is_array)


def nnx_params():
    return nnx.state(nnx_model(), nnx.Param)


CASES = [
    (eqx_params, ["linear1/weight", "linear2/weight"]),
    (nnx_params, ["l1/kernel", "l2/kernel"]),
    (linen_params, ["params/dense_0/kernel", "params/dense_1/kernel"]),
    (haiku_params, ["mlp/~/linear_0/w", "mlp/~/linear_1/w"]),
    (plain_dict, ["decoder/0/weight", "encoder/weight"]),  # dicts flatten in key order
]


@pytest.mark.parametrize("build, expected", CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_adamw_mask_decays_dense_weights_only(build, expected):
    params = build()
    updates = adamw_updates(params, lambda p: tw.mask(p, DENSE, strict=False))  # works everywhere
    assert decayed_paths(params, updates) == expected
    mask = tw.mask(params, DENSE, strict=False)
    if not isinstance(mask, eqx.Module):  # a plain mask tree works too
        assert not callable(mask)
        assert decayed_paths(params, adamw_updates(params, mask)) == expected


def test_equinox_mask_is_a_callable_module():
    params = eqx_params()
    mask = tw.mask(params, DENSE, strict=False)
    assert isinstance(mask, eqx.Module) and callable(mask)  # the pitfall's root
    assert mask.linear1.weight is True and mask.linear1.bias is False
    assert mask.norm.weight is False


def test_optax_masked_looks_at_mask_leaves_not_the_module():
    # optax (0.2.8 here) calls a mask only when its *leaves* are callable, so an Equinox
    # mask tree given directly works for `masked`/`adamw`; `multi_transform` still calls
    # a Module label tree (next tests). The function form works with both.
    params = eqx_params()
    updates = adamw_updates(params, tw.mask(params, DENSE, strict=False))
    assert decayed_paths(params, updates) == ["linear1/weight", "linear2/weight"]


def test_masked_inner_transform_on_equinox():
    params = eqx_params()
    tx = optax.masked(optax.sgd(1.0), lambda p: tw.mask(p, tw.name("bias")))
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert (updates.linear1.bias == -1).all() and (updates.norm.bias == -1).all()
    assert (updates.linear1.weight == 1).all()  # masked out: passed through unchanged


def test_multi_transform_with_labels_on_linen():
    params = linen_params()
    labels = tw.labels(params, {"train": DENSE, "frozen": tw.name("bias", "scale")}, strict=False)
    assert labels["params"]["norm"] == {"bias": "frozen", "scale": "frozen"}
    tx = optax.multi_transform({"train": optax.sgd(LR), "frozen": optax.set_to_zero()}, labels)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    dense = new["params"]["dense_0"]
    np.testing.assert_allclose(dense["kernel"], params["params"]["dense_0"]["kernel"] - LR)
    np.testing.assert_array_equal(dense["bias"], params["params"]["dense_0"]["bias"])
    np.testing.assert_array_equal(new["params"]["norm"]["scale"], 1.0)


def test_multi_transform_on_equinox_needs_a_function():
    params = eqx_params()
    spec = {"train": DENSE}
    tx_fns = {"train": optax.sgd(LR), "frozen": optax.set_to_zero()}
    # The pitfall: the label tree is a Module, so optax calls it on the params.
    labels = tw.labels(params, spec, default="frozen", strict=False)
    with pytest.raises(TypeError):
        optax.multi_transform(tx_fns, labels).init(params)
    # The way that works: a function returning the labels.
    tx = optax.multi_transform(
        tx_fns, lambda p: tw.labels(p, spec, default="frozen", strict=False)
    )
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert (updates.linear2.weight == -LR).all()
    assert (updates.linear2.bias == 0).all() and (updates.norm.weight == 0).all()


def test_multi_transform_on_nnx_state_in_a_jitted_step():
    model = nnx_model()
    graphdef, params = nnx.split(model, nnx.Param)
    labels = tw.labels(params, {"train": DENSE}, default="frozen", strict=False)
    tx = optax.multi_transform({"train": optax.sgd(LR), "frozen": optax.set_to_zero()}, labels)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x):
        def loss(p):
            return jnp.sum(nnx.merge(graphdef, p)(x) ** 2)

        grads = jax.grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    new, _ = step(params, opt_state, jnp.ones((2, 3)))
    assert not np.allclose(new["l1"]["kernel"][...], params["l1"]["kernel"][...])
    np.testing.assert_array_equal(new["l1"]["bias"][...], params["l1"]["bias"][...])
    np.testing.assert_array_equal(new["norm"]["scale"][...], params["norm"]["scale"][...])


def test_label_claimed_twice_names_path_and_labels():
    params = haiku_params()
    with pytest.raises(tw.LabelError) as info:
        tw.labels(params, {"decay": "*/w", "all": tw.arrays})
    msg = str(info.value)
    assert "mlp/~/linear_0/w" in msg and "decay" in msg and "all" in msg


def test_label_missing_without_default():
    params = linen_params()
    with pytest.raises(tw.LabelError) as info:
        tw.labels(params, {"decay": "**/kernel"})
    assert "params/dense_0/bias" in str(info.value)


def test_partition_and_combine_for_training_only_biases():
    model = eqx_block()
    trainable, frozen = eqx.partition(model, tw.mask(model, "**/bias"))

    def loss(trainable):
        return jnp.sum(eqx.combine(trainable, frozen)(jnp.ones(3)))

    grads = eqx.filter_grad(loss)(trainable)
    assert grads.linear1.weight is None and grads.linear2.bias is not None
    assert (grads.linear2.bias != 0).any()


# ----------------------------------------------------------------- one selector, all


@pytest.mark.parametrize("spec", TREES, ids=str)
def test_one_selector_finds_every_dense_weight(spec):
    tree = spec.build()
    hits = tw.select(tree, tw.name("weight", "kernel", "w") & ~tw.inside(eqx.nn.LayerNorm))
    hits = [(p, x) for p, x in hits if x.ndim == 2]  # a norm's 1-D weight is no matrix
    assert len(hits) == spec.n_dense
    assert all(tw.path_segments(p)[-1] == spec.weight for p, _ in hits)


@pytest.mark.parametrize("spec", TREES, ids=str)
def test_zero_every_bias_everywhere(spec):
    tree = spec.build()
    out = tw.replace(tree, tw.name("bias", "b"), tw.zeros)
    biases = tw.select(out, tw.name("bias", "b"))
    assert len(biases) == spec.n_bias
    assert all((np.asarray(x) == 0).all() for _, x in biases)
    assert type(out) is type(tree)
    assert jax.tree.structure(out) == jax.tree.structure(tree)
    rest = tw.arrays & ~tw.name("bias", "b")
    for (_, new), (_, old) in zip(tw.select(out, rest), tw.select(tree, rest), strict=True):
        assert new is old
