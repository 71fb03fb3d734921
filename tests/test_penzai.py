"""treewalk on a real penzai transformer: `Parameter`/`NamedArray` boxes, layers by type."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from frameworks import penzai_transformer
from penzai import pz

import treewalk as tw

normal = tw.initializer(jax.nn.initializers.normal(0.02))


def strs(tree, sel):
    return [tw.path_str(p) for p in tw.paths(tree, sel)]


def parameters(model):
    """`{label: Parameter}` of a penzai model."""
    leaves = jax.tree.leaves(model, is_leaf=lambda x: isinstance(x, pz.Parameter))
    return {p.label: p for p in leaves if isinstance(p, pz.Parameter)}


@pytest.fixture(scope="module")
def model():
    return penzai_transformer()


@pytest.fixture(scope="module")
def tokens():
    return pz.nx.wrap(jnp.array([1, 2, 3])).tag("seq")


def test_parameter_boxes_are_hidden(model):
    biases = strs(model, "**/bias")
    assert len(biases) == 9
    assert all(not p.endswith("/value") for p in strs(model, tw.arrays))
    [(path, node)] = tw.select(model, biases[0])
    assert isinstance(node, jax.Array)  # the array inside Parameter -> NamedArray
    assert tw.path_segments(path)[-1] == "bias"


def test_where_looks_through_parameter_boxes(model):
    found = [x for _, x in tw.select(model, "**/bias", outermost=True)]
    got = tw.where(model, "**/bias")(model)
    assert len(got) == 9 and all(a is b for a, b in zip(got, found, strict=True))


def test_layers_by_type(model):
    add_bias = tw.select(model, pz.nn.AddBias)
    assert len(add_bias) == 9 and all(isinstance(n, pz.nn.AddBias) for _, n in add_bias)
    assert strs(model, tw.arrays & tw.inside(pz.nn.AddBias)) == strs(model, "**/bias")
    linear_weights = strs(model, tw.name("weights") & tw.inside(pz.nn.Linear))
    assert len(linear_weights) == 10


def test_zero_every_bias(model, tokens):
    old = parameters(model)
    before = {k: np.array(p.value.unwrap(*p.value.named_shape)) for k, p in old.items()}
    out = tw.replace(model, "**/bias", tw.zeros)
    assert type(out) is type(model)
    new = parameters(out)
    assert new.keys() == old.keys()
    for label, p in new.items():
        assert p is not old[label]  # mutable variables are never shared with the input
        assert isinstance(p.value, pz.nx.NamedArray)
        assert p.value.named_shape == old[label].value.named_shape
        value = np.asarray(p.value.unwrap(*p.value.named_shape))
        if label.endswith(".bias"):
            assert (value == 0).all()
        else:
            np.testing.assert_array_equal(value, before[label])
    for label, p in old.items():  # the input is unchanged
        np.testing.assert_array_equal(p.value.unwrap(*p.value.named_shape), before[label])
    assert out(tokens).named_shape == {"seq": 3, "vocabulary": 11}


def test_reinit_linear_weights(model):
    # Norm scales are 1-D `Linear` weights in penzai: re-initialise matrices only.
    sel = tw.name("weights") & tw.inside(pz.nn.Linear) & tw.predicate(lambda p, x: x.ndim >= 2)
    a = tw.replace(model, sel, normal, key=jax.random.key(0))
    b = tw.replace(model, sel, normal, key=jax.random.key(0))
    pa, pb, p0 = parameters(a), parameters(b), parameters(model)
    changed = [k for k in p0 if not np.allclose(pa[k].value.data_array, p0[k].value.data_array)]
    assert len(changed) == 7 and all(k.endswith("weights") for k in changed)
    for k in changed:
        np.testing.assert_array_equal(pa[k].value.data_array, pb[k].value.data_array)
        assert pa[k].value.named_shape == p0[k].value.named_shape


def tied_embeddings():
    table = pz.nn.EmbeddingTable.from_config(
        name="emb",
        init_base_rng=jax.random.key(0),
        vocab_size=5,
        embedding_axes={"embedding": 4},
    )
    return pz.nn.Sequential([pz.nn.EmbeddingLookup(table), pz.nn.EmbeddingDecode(table)])


def test_tied_parameter_fn_called_once():
    seq = tied_embeddings()
    calls = []

    def fn(path, x, key):
        calls.append(tw.path_str(path))
        return jax.random.normal(key, x.shape, x.dtype)

    out = tw.replace(seq, tw.arrays, fn, key=jax.random.key(1))
    assert calls == ["sublayers/0/table/embeddings"]
    first, second = (layer.table.embeddings for layer in out.sublayers)
    np.testing.assert_array_equal(first.value.data_array, second.value.data_array)


def test_tied_parameter_stays_one_variable():
    seq = tied_embeddings()
    out = tw.replace(seq, tw.arrays, tw.zeros)
    assert out.sublayers[0].table.embeddings is out.sublayers[1].table.embeddings
    _, variables = pz.unbind_variables(out)
    assert len(variables) == 1


def test_layer_fn_cannot_touch_the_input():
    layer = pz.nn.AddBias.from_config(
        name="b", init_base_rng=jax.random.key(0), biased_axes={"x": 3}
    )
    seq = pz.nn.Sequential([layer])
    before = np.array(layer.bias.value.data_array)

    def set_ones(path, add_bias, key):
        add_bias.bias.value = pz.nx.wrap(jnp.ones(3)).tag("x")
        return add_bias

    out = tw.replace(seq, pz.nn.AddBias, set_ones)
    assert (out.sublayers[0].bias.value.data_array == 1).all()
    np.testing.assert_array_equal(seq.sublayers[0].bias.value.data_array, before)
