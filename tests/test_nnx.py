"""treewalk on real Flax NNX modules and `nnx.State`: boxes hidden, metadata kept, purity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from frameworks import NNXModel, nnx_model, walk_log

import treewalk as tw

lecun = tw.initializer(jax.nn.initializers.lecun_normal())


def strs(tree, sel):
    return [tw.path_str(p) for p in tw.paths(tree, sel)]


def values(module):
    """Every array of `module`, copied to NumPy, by path."""
    return {tw.path_str(p): np.array(x) for p, x in tw.select(module, tw.arrays)}


# ------------------------------------------------------------------------------ paths


def test_value_box_is_hidden():
    m = nnx_model()
    # NNX orders a module's attributes by name.
    assert strs(m, tw.arrays) == [
        "l1/bias",
        "l1/kernel",
        "l2/bias",
        "l2/kernel",
        "norm/bias",
        "norm/scale",
    ]
    [(path, node)] = tw.select(m, "l1/bias")
    assert tw.path_segments(path) == ("l1", "bias")
    assert node is m.l1.bias.get_value()  # the bare array, not the Param
    # JAX itself sees the `.value` entry; treewalk's path still resolves through it.
    jax_paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(m)]
    assert all(p.endswith(".value") for p in jax_paths)


def test_state_has_the_same_paths():
    m = nnx_model()
    state = nnx.state(m)
    assert sorted(strs(state, tw.arrays)) == sorted(strs(m, tw.arrays))


# ------------------------------------------------------------------------------ walks


def test_walks_identity_and_order():
    m = nnx_model()
    logs = {}
    for walk in (tw.prewalk, tw.postwalk):
        out, logs[walk] = walk_log(walk, m)
        assert isinstance(out, NNXModel)
        assert jax.tree.structure(out) == jax.tree.structure(m)
        for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(m), strict=True):
            np.testing.assert_array_equal(a, b)
    pre, post = logs[tw.prewalk], logs[tw.postwalk]
    assert pre[0] == "" and post[-1] == ""
    assert pre.index("l1") < pre.index("l1/kernel")
    assert post.index("l1/kernel") < post.index("l1")
    assert sorted(pre) == sorted(post)


# -------------------------------------------------------------------------- selectors


def test_of_type_linear_and_param():
    m = nnx_model()
    assert strs(m, nnx.Linear) == ["l1", "l2"]
    assert sorted(strs(m, tw.of_type(nnx.Param))) == sorted(strs(m, tw.arrays))
    sel = tw.arrays & ~tw.inside(nnx.LayerNorm)
    assert sorted(strs(m, sel)) == ["l1/bias", "l1/kernel", "l2/bias", "l2/kernel"]
    assert sorted(strs(m, tw.name("weight", "kernel", "w"))) == ["l1/kernel", "l2/kernel"]


@pytest.mark.parametrize("sel", ["**/bias", nnx.Linear])
def test_where_finds_what_select_does_through_variables(sel):
    m = nnx_model()
    found = [x for _, x in tw.select(m, sel, outermost=True)]
    got = tw.where(m, sel)(m)
    assert found and len(got) == len(found)
    assert all(a is b for a, b in zip(got, found, strict=True))


class WithState(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.l = nnx.Linear(3, 4, rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)


def test_variable_kinds_by_type():
    m = WithState(nnx.Rngs(0, dropout=1))
    # `tw.arrays` also sees batch statistics and the dropout RNG counter, never the
    # typed PRNG key; `tw.params` only the parameters ...
    arrays = set(strs(m, tw.arrays))
    assert {"bn/mean", "drop/rngs/count"} <= arrays and "drop/rngs/key" not in arrays
    assert sorted(strs(m, tw.params)) == ["bn/bias", "bn/scale", "l/bias", "l/kernel"]
    # ... the Variable type tells parameters from the rest.
    assert strs(m, tw.of_type(nnx.Param)) == ["bn/bias", "bn/scale", "l/bias", "l/kernel"]
    assert strs(m, nnx.BatchStat) == ["bn/mean", "bn/var"]
    out = tw.replace(m, tw.of_type(nnx.Param), tw.zeros)
    assert type(out.bn.mean) is nnx.BatchStat and (out.bn.scale[...] == 0).all()
    np.testing.assert_array_equal(
        jax.random.key_data(out.drop.rngs.key[...]), jax.random.key_data(m.drop.rngs.key[...])
    )
    out.train()
    assert out.drop(jnp.ones((2, 4))).shape == (2, 4)  # the RNG stream still works


def test_mask_of_state():
    state = nnx.state(nnx_model())
    mask = tw.mask(state, "**/bias")
    # The State's structure (its Variables hold bools), for jax.tree.map over the State;
    # wrt= gives the pure form nnx.Optimizer hands optax.
    assert jax.tree.structure(mask) == jax.tree.structure(state)
    assert isinstance(mask, nnx.State) and isinstance(mask["l1"]["bias"], nnx.Param)
    pure = tw.mask(state, "**/bias", wrt=nnx.Param)
    assert jax.tree.structure(pure) == jax.tree.structure(nnx.as_pure(state))
    flags = {tw.path_str(p): v for p, v in jax.tree_util.tree_leaves_with_path(pure)}
    assert flags == {
        "l1/bias": True,
        "l1/kernel": False,
        "l2/bias": True,
        "l2/kernel": False,
        "norm/bias": True,
        "norm/scale": False,
    }


# --------------------------------------------------------------------------- replace


def test_zero_biases_pure():
    m = nnx_model()
    before = values(m)
    out = tw.replace(m, "**/bias", tw.zeros)
    assert isinstance(out, NNXModel) and out is not m
    for name in ("l1", "l2", "norm"):
        assert (getattr(out, name).bias[...] == 0).all()
    np.testing.assert_array_equal(out.l1.kernel[...], before["l1/kernel"])
    # The input is unchanged and shares no Variable with the output.
    assert {k: v.tolist() for k, v in values(m).items()} == {
        k: v.tolist() for k, v in before.items()
    }
    ins = {id(v) for _, v in nnx.iter_graph(m) if isinstance(v, nnx.Variable)}
    outs = {id(v) for _, v in nnx.iter_graph(out) if isinstance(v, nnx.Variable)}
    assert ins and outs and not ins & outs
    out.l1.kernel[...] = jnp.zeros((3, 4))  # mutating the output leaves the input alone
    assert (m.l1.kernel[...] == before["l1/kernel"]).all()
    assert out(jnp.ones((1, 3))).shape == (1, 2)


def test_fn_raising_leaves_module_untouched():
    m = nnx_model()
    before = values(m)
    calls = []

    def fn(path, x, key):
        calls.append(tw.path_str(path))
        if len(calls) == 2:
            raise RuntimeError("boom")
        return jnp.zeros_like(x)

    with pytest.raises(tw.CallbackError) as info:
        tw.replace(m, "**/bias", fn)
    assert calls[1] in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)
    for k, v in values(m).items():
        np.testing.assert_array_equal(v, before[k])


def test_param_type_and_metadata_survive():
    m = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    m.kernel.set_metadata("tag", "dense")
    out = tw.replace(m, tw.of_type(nnx.Param), tw.zeros)
    assert type(out.kernel) is nnx.Param and type(out.bias) is nnx.Param
    assert out.kernel.get_metadata()["tag"] == "dense"
    assert (out.kernel[...] == 0).all()


@pytest.mark.parametrize("how", ["with_partitioning", "kernel_metadata"])
def test_sharding_names_survive(how):
    # flax 0.12 shards eagerly: both ways need a mesh context (`jax.set_mesh`).
    mesh = jax.make_mesh((1, 8), ("data", "model"))
    init = nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, "model"))
    with jax.set_mesh(mesh):
        if how == "with_partitioning":
            m = nnx.Linear(4, 8, kernel_init=init, rngs=nnx.Rngs(0))
        else:
            meta = {"out_sharding": (None, "model")}
            m = nnx.Linear(4, 8, kernel_metadata=meta, rngs=nnx.Rngs(0))
    assert m.kernel.get_metadata()["out_sharding"] == (None, "model")
    out = tw.replace(m, "kernel", lecun, key=jax.random.key(1))
    assert type(out.kernel) is nnx.Param
    assert out.kernel.get_metadata()["out_sharding"] == (None, "model")
    assert out.kernel[...].sharding.spec == m.kernel[...].sharding.spec
    assert not np.allclose(out.kernel[...], m.kernel[...])


def test_state_as_input():
    m = nnx_model()
    state = nnx.state(m)
    out = tw.replace(state, "**/bias", tw.ones)
    assert isinstance(out, nnx.State)
    assert isinstance(out["l1"]["bias"], nnx.Param)
    assert (out["l1"]["bias"][...] == 1).all() and (state["l1"]["bias"][...] == 0).all()
    nnx.update(m, out)
    assert (m.l2.bias[...] == 1).all()


def test_reinit_kernels_deterministic():
    m = nnx_model()
    a = tw.replace(m, "*/kernel", lecun, key=jax.random.key(1))
    b = tw.replace(m, "*/kernel", lecun, key=jax.random.key(1))
    np.testing.assert_array_equal(a.l2.kernel[...], b.l2.kernel[...])
    assert not np.allclose(a.l1.kernel[...], m.l1.kernel[...])
    np.testing.assert_array_equal(a.l1.bias[...], m.l1.bias[...])


def test_path_keys_unchanged_by_an_unrelated_layer():
    sel = tw.name("kernel") & tw.inside(nnx.Linear)
    a = tw.replace(nnx_model(0), sel, lecun, key=jax.random.key(7))
    b = tw.replace(nnx_model(0, extra=True), sel, lecun, key=jax.random.key(7))
    for name in ("l1", "l2"):
        np.testing.assert_array_equal(getattr(a, name).kernel[...], getattr(b, name).kernel[...])


# ------------------------------------------------------------------------- transforms


def test_replace_state_under_jit():
    graphdef, state = nnx.split(nnx_model())

    @jax.jit
    def reinit(state, key):
        return tw.replace(state, "*/kernel", lecun, key=key)

    out = reinit(state, jax.random.key(3))
    eager = tw.replace(state, "*/kernel", lecun, key=jax.random.key(3))
    np.testing.assert_allclose(out["l1"]["kernel"][...], eager["l1"]["kernel"][...], rtol=1e-6)
    model = nnx.merge(graphdef, out)
    assert model(jnp.ones((1, 3))).shape == (1, 2)


def test_ensemble_by_vmap_over_the_key():
    state = nnx.state(nnx_model())
    keys = jax.random.split(jax.random.key(0), 3)
    ens = jax.vmap(lambda k: tw.replace(state, "*/kernel", lecun, key=k))(keys)
    w = np.asarray(ens["l1"]["kernel"][...])
    assert w.shape == (3, 3, 4)
    assert not np.allclose(w[0], w[1])
    one = tw.replace(state, "*/kernel", lecun, key=keys[2])
    np.testing.assert_allclose(w[2], one["l1"]["kernel"][...], rtol=1e-6)


def test_grad_through_fn():
    state = nnx.state(nnx_model())

    def loss(scale):
        out = tw.replace(state, "*/kernel", lambda p, x, k: scale * x)
        return sum(jnp.sum(x) for _, x in tw.select(out, "*/kernel"))

    g = jax.grad(loss)(1.0)
    expected = sum(float(jnp.sum(x)) for _, x in tw.select(state, "*/kernel"))
    np.testing.assert_allclose(g, expected, rtol=1e-5)


def test_eval_shape_model_materialised():
    abstract = nnx.eval_shape(lambda: nnx_model())
    kernel = abstract.l1.kernel.get_value()
    assert isinstance(kernel, jax.ShapeDtypeStruct)
    out = tw.replace(abstract, "*/kernel", lecun, key=jax.random.key(0))
    out = tw.replace(out, tw.arrays & ~tw.name("kernel", "scale"), tw.zeros)
    out = tw.replace(out, "norm/scale", tw.ones)
    assert all(isinstance(x, jax.Array) for _, x in tw.select(out, tw.arrays))
    assert type(out.l1.kernel) is nnx.Param
    assert out(jnp.ones((1, 3))).shape == (1, 2)


# ------------------------------------------------------------------------------ ties


class Tied(nnx.Module):
    """The same `Linear` reached by two attributes (a tied layer)."""

    def __init__(self, rngs: nnx.Rngs):
        self.a = nnx.Linear(2, 2, rngs=rngs)
        self.b = self.a


def test_tied_layer_fn_called_once_same_array():
    m = Tied(nnx.Rngs(0))
    calls = []

    def fn(path, x, key):
        calls.append(tw.path_str(path))
        return jax.random.normal(key, x.shape, x.dtype)

    out = tw.replace(m, "**/kernel", fn, key=jax.random.key(0))
    assert calls == ["a/kernel"]
    assert out.a.kernel.get_value() is out.b.kernel.get_value()


def test_tied_layer_stays_one_variable():
    m = Tied(nnx.Rngs(0))
    out = tw.replace(m, "**/kernel", tw.zeros)
    assert out.a.kernel is out.b.kernel


def test_dtype_change_is_refused_and_names_the_path():
    m = nnx_model()
    with pytest.raises(tw.ReplacementError) as info:
        tw.replace(m, "l1/kernel", lambda p, x, k: x.astype(jnp.float16))
    msg = str(info.value)
    assert "l1/kernel" in msg and "float16" in msg and "float32" in msg
    assert m.l1.kernel[...].dtype == jnp.float32
    out = tw.replace(m, "l1/kernel", lambda p, x, k: x.astype(jnp.float16), check=False)
    assert out.l1.kernel[...].dtype == jnp.float16 and type(out.l1.kernel) is nnx.Param


# ---------------------------------------------------------------------- layer surgery


def test_surgery_wraps_every_linear_in_lora():
    m = nnx_model()

    def lora(path, lin, key):
        return nnx.LoRA(lin.in_features, 2, lin.out_features, base_module=lin, rngs=nnx.Rngs(key))

    out = tw.replace(m, nnx.Linear, lora, key=jax.random.key(0))
    assert isinstance(out.l1, nnx.LoRA) and isinstance(m.l1, nnx.Linear)
    assert strs(out, nnx.LoRAParam) == ["l1/lora_a", "l1/lora_b", "l2/lora_a", "l2/lora_b"]
    x = jnp.ones((1, 3))
    np.testing.assert_allclose(out(x), m(x), rtol=1e-6)  # lora_b starts at zero


def test_layer_fn_cannot_touch_the_input():
    m = nnx_model()
    before = values(m)

    def zero_in_place(path, lin, key):
        lin.kernel[...] = jnp.zeros_like(lin.kernel[...])
        return lin

    out = tw.replace(m, nnx.Linear, zero_in_place)
    assert (out.l1.kernel[...] == 0).all()
    np.testing.assert_array_equal(m.l1.kernel[...], before["l1/kernel"])
    assert out.l1 is not m.l1 and out.l1.kernel is not m.l1.kernel
