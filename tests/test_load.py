"""`tw.load` against real PyTorch numbers: the state_dicts, inputs and outputs in
tests/fixtures were made by real PyTorch (tests/fixtures/make_torch_fixtures.py); the
nets are re-implemented in Equinox, Flax NNX, linen and Haiku in tests/load_models.py."""

import json
import mmap

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from load_models import (
    ENCODER_RENAME,
    FIXTURES,
    EqxConvNet,
    EqxEncoder,
    LinenConvNet,
    NnxConvNet,
    NnxEncoder,
    close,
    convnets,
    haiku_convnet,
    io,
    leaves_equal,
)
from safetensors.numpy import load_file, save_file

import treewalk as tw

CONVNET = FIXTURES / "torch_convnet.safetensors"
ENCODER = FIXTURES / "torch_encoder.safetensors"
MLP = FIXTURES / "torch_mlp.npz"
FRAMEWORKS = ["equinox", "nnx", "linen", "haiku"]


def copy(tree):
    return jax.tree_util.tree_map(lambda x: np.array(x), tree)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_torch_convnet_loads_with_no_rules_and_gives_pytorchs_outputs(framework):
    x, y = io("convnet")
    model, apply = convnets(x)[framework]
    before = copy(nnx.state(model) if framework == "nnx" else model)
    loaded = tw.load(model, CONVNET, convention="torch")
    close(apply(loaded, x), y)
    # The input is untouched.
    leaves_equal(nnx.state(model) if framework == "nnx" else model, before)


def test_a_flat_mapping_and_a_file_load_the_same():
    x, y = io("convnet")
    model = EqxConvNet(jax.random.key(0))
    from_dict = tw.load(model, load_file(CONVNET), convention="torch")
    from_file = tw.load(model, str(CONVNET), convention="torch")
    leaves_equal(from_dict, from_file)
    close(from_dict(x), y)


def test_sequential_mlp_into_eqx_mlp_with_a_rename_rule():
    x, y = io("mlp")
    mlp = eqx.nn.MLP(4, 3, 8, 2, key=jax.random.key(0))
    rules = [(r"^0/", "layers/0/"), (r"^2/", "layers/1/"), (r"^4/", "layers/2/")]
    loaded = tw.load(mlp, MLP, convention="torch", rename=rules)
    close(jax.vmap(loaded)(x), y)

    def rename(key):  # "2/weight" -> "layers/1/weight"
        index, name = key.split("/")
        return f"layers/{int(index) // 2}/{name}"

    leaves_equal(tw.load(mlp, MLP, convention="torch", rename=rename), loaded)


@pytest.mark.parametrize("make", [EqxEncoder, NnxEncoder], ids=["equinox", "nnx"])
def test_hub_named_transformer_into_a_reimplementation(make):
    x, y = io("encoder")
    model = make(nnx.Rngs(0) if make is NnxEncoder else jax.random.key(0))
    loaded = tw.load(model, ENCODER, convention="torch", rename=ENCODER_RENAME)
    close(loaded(jnp.asarray(x)), y)


def test_square_weights_load_the_right_way_round():
    w = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)  # PyTorch (out, in)
    sd = {"weight": w, "bias": np.zeros(2, np.float32)}
    eqx_lin = tw.load(eqx.nn.Linear(2, 2, key=jax.random.key(0)), sd, convention="torch")
    np.testing.assert_array_equal(eqx_lin.weight, w)
    nnx_lin = tw.load(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), sd, convention="torch")
    np.testing.assert_array_equal(nnx_lin.kernel[...], w.T)
    linen = {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros(2)}
    np.testing.assert_array_equal(tw.load(linen, sd, convention="torch")["kernel"], w.T)
    haiku = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
    np.testing.assert_array_equal(tw.load(haiku, sd, convention="torch")["w"], w.T)
    # And each gives PyTorch's `x @ w.T` on an input.
    xs = np.array([1.0, 10.0], np.float32)
    close(eqx_lin(xs), w @ xs)
    close(nnx_lin(xs), w @ xs)


def convnet_state_dict():
    return load_file(CONVNET)


def test_every_problem_is_reported_at_once_and_nothing_changes():
    model = EqxConvNet(jax.random.key(0))
    before = copy(model)
    sd = convnet_state_dict()
    del sd["fc2.bias"]  # missing
    sd["head.weight"] = np.zeros((3, 16), np.float32)  # unexpected
    sd["fc1.weight"] = np.zeros((16, 65), np.float32)  # wrong shape
    with pytest.raises(tw.LoadError) as info:
        tw.load(model, sd, convention="torch")
    err = info.value
    assert isinstance(err, tw.TreewalkError) and isinstance(err, ValueError)
    msg = str(err)
    assert "'fc2/bias'" in msg and "'head.weight'" in msg
    assert "'fc1/weight' <- 'fc1.weight'" in msg and "(16, 65)" in msg and "(16, 64)" in msg
    assert "rename=" in msg and "strict=False" in msg
    assert len(msg) < 2000
    assert sorted(s.status for s in err.plan.problems()) == ["mismatch", "missing", "unused"]
    leaves_equal(model, before)


def test_strict_false_loads_what_matches_and_keeps_the_rest():
    x, y = io("convnet")
    model = NnxConvNet(nnx.Rngs(0))
    sd = convnet_state_dict()
    del sd["fc2.bias"], sd["fc2.weight"]
    sd["extra.weight"] = np.zeros(3, np.float32)
    with pytest.warns(
        tw.LoadWarning, match=r"2 destination array\(s\) kept .*'fc2/bias'.* 1 source"
    ):
        loaded = tw.load(model, sd, convention="torch", strict=False)
    np.testing.assert_array_equal(loaded.fc2.kernel[...], model.fc2.kernel[...])
    np.testing.assert_array_equal(loaded.fc1.kernel[...], sd["fc1.weight"].T)
    # With fc2 taken from the fixture too, the outputs are PyTorch's.
    full = convnet_state_dict()
    rest = {"fc2.weight": full["fc2.weight"], "fc2.bias": full["fc2.bias"]}
    with pytest.warns(tw.LoadWarning, match="kept their values"):
        close(tw.load(loaded, rest, convention="torch", strict=False)(x), y)


def test_strict_false_still_refuses_shape_mismatches():
    sd = {"weight": np.zeros((3, 3), np.float32)}
    with pytest.raises(tw.LoadError, match=r"'weight' <- 'weight'.*\(3, 3\)"):
        tw.load(eqx.nn.Linear(3, 2, key=jax.random.key(0)), sd, strict=False)


def test_dtypes_cast_to_the_destination_and_float_to_int_is_refused():
    tree = {"w": jnp.zeros(3, jnp.bfloat16), "step": jnp.zeros((), jnp.int32)}
    out = tw.load(tree, {"w": np.arange(3.0), "step": np.array(7, np.int64)})
    assert out["w"].dtype == jnp.bfloat16 and out["step"].dtype == jnp.int32
    np.testing.assert_array_equal(out["w"], [0, 1, 2])
    assert int(out["step"]) == 7
    with pytest.raises(tw.LoadError, match="'step' <- 'step': source dtype float32"):
        tw.load(tree, {"w": np.arange(3.0), "step": np.array(7.0, np.float32)})


def test_rename_none_skips_and_torch_counters_are_skipped():
    sd = {"weight": np.ones((2, 3)), "bias": np.ones(2), "junk": np.ones(4)}
    sd["bn.num_batches_tracked"] = np.array(3)
    lin = eqx.nn.Linear(3, 2, key=jax.random.key(0))
    plan = tw.load_plan(lin, sd, convention="torch", rename=lambda k: None if k == "junk" else k)
    assert [(s.key, s.status) for s in plan.steps] == [
        ("weight", "load"),
        ("bias", "load"),
        ("junk", "skip"),
        ("bn.num_batches_tracked", "skip"),
    ]
    assert plan.problems() == []


def test_load_plan_is_a_table_of_what_would_happen():
    model = NnxConvNet(nnx.Rngs(0))
    sd = convnet_state_dict()
    del sd["norm.bias"]
    plan = tw.load_plan(model, sd, convention="torch")
    text = str(plan)
    assert text.splitlines()[0].split() == ["destination", "source", "key", "conversion", "status"]
    row = next(line for line in text.splitlines() if line.startswith("fc2/kernel"))
    assert row.split()[1:] == [
        "fc2.weight",
        "rename",
        "weight->kernel,",
        "transpose(1,",
        "0)",
        "load",
    ]
    assert "conv.weight" in text and "transpose(2, 3, 1, 0)" in text
    assert next(s for s in plan.steps if s.destination == "norm/bias").status == "missing"
    assert text.splitlines()[-1] == "torch -> flax: 7 load, 1 missing"
    assert "<table>" in plan._repr_html_()


def test_boxes_and_their_metadata_survive():
    sd = {"fc.weight": np.ones((3, 4), np.float32), "fc.bias": np.zeros(3, np.float32)}
    dense = nn.Dense(
        3,
        kernel_init=nn.with_partitioning(nn.initializers.lecun_normal(), (None, "x")),
        name="fc",
    )
    params = {"fc": dense.init(jax.random.key(0), jnp.zeros((1, 4)))["params"]}
    out = tw.load(params, sd, convention="torch")
    assert isinstance(out["fc"]["kernel"], nn.Partitioned)
    assert out["fc"]["kernel"].names == (None, "x")
    np.testing.assert_array_equal(out["fc"]["kernel"].value, np.ones((4, 3)))
    model = tw.load(
        nnx.Linear(4, 3, rngs=nnx.Rngs(0)), {k[3:]: v for k, v in sd.items()}, convention="torch"
    )
    assert type(model.kernel) is nnx.Param


def test_abstract_destinations_are_materialised_from_a_file():
    x, y = io("convnet")
    abstract = eqx.filter_eval_shape(EqxConvNet, jax.random.key(0))
    assert isinstance(abstract.fc1.weight, jax.ShapeDtypeStruct)
    close(tw.load(abstract, CONVNET, convention="torch")(x), y)
    abstract = nnx.eval_shape(lambda: NnxConvNet(nnx.Rngs(0)))
    close(tw.load(abstract, CONVNET, convention="torch")(x), y)
    linen = LinenConvNet()
    params = jax.eval_shape(linen.init, jax.random.key(0), x)["params"]
    close(linen.apply({"params": tw.load(params, CONVNET, convention="torch")}, x), y)
    hk_params = jax.eval_shape(haiku_convnet.init, jax.random.key(0), x)
    close(haiku_convnet.apply(tw.load(hk_params, CONVNET, convention="torch"), x), y)


def test_a_pytree_source_of_another_framework():
    x, y = io("convnet")
    nnx_model = tw.load(NnxConvNet(nnx.Rngs(0)), CONVNET, convention="torch")
    # The source's convention is told by its types: NNX -> Equinox, no convention needed.
    eqx_model = tw.load(EqxConvNet(jax.random.key(0)), nnx_model)
    close(eqx_model(x), y)
    linen_params = tw.load(convnets(x)["linen"][0], eqx_model)
    hk_params = tw.load(convnets(x)["haiku"][0], linen_params, convention="flax")
    close(haiku_convnet.apply(hk_params, x), y)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_export_to_torch_gives_the_pytorch_state_dict_back(framework):
    x, _ = io("convnet")
    model, _ = convnets(x)[framework]
    sd = tw.export(tw.load(model, CONVNET, convention="torch"), convention="torch")
    want = load_file(CONVNET)
    assert sorted(sd) == sorted(want)
    for k, v in want.items():
        assert sd[k].flags.c_contiguous
        np.testing.assert_array_equal(sd[k], v, err_msg=k)


@pytest.mark.parametrize("convention", ["torch", "equinox", "flax", "haiku"])
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_export_then_load_is_the_identity(framework, convention, tmp_path):
    x, _ = io("convnet")
    model, _ = convnets(x)[framework]
    out = tw.export(model, convention=convention)
    leaves_equal(tw.load(model, out, convention=convention), model)
    save_file(out, str(tmp_path / "m.safetensors"))
    leaves_equal(tw.load(model, tmp_path / "m.safetensors", convention=convention), model)
    assert tw.export(model, tmp_path / "w.safetensors", convention=convention) is None
    _same_dict(load_file(tmp_path / "w.safetensors"), out)
    leaves_equal(tw.load(model, tmp_path / "w.safetensors", convention=convention), model)


def _same_dict(got, want):
    assert list(got) == list(want) or sorted(got) == sorted(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v, err_msg=k)


class Mixed(eqx.Module):
    attn: eqx.nn.MultiheadAttention
    cell: eqx.nn.LSTMCell
    half: jax.Array
    steps: jax.Array
    table: np.ndarray

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.attn = eqx.nn.MultiheadAttention(
            2, 8, use_query_bias=True, use_key_bias=True, use_value_bias=True, key=k1
        )
        self.cell = eqx.nn.LSTMCell(4, 8, key=k2)
        self.half = jax.random.normal(k3, (3, 5), jnp.bfloat16)
        self.steps = jnp.arange(3, dtype=jnp.int32)
        self.table = np.linspace(0, 1, 7)  # float64, numpy


def test_export_to_a_file_writes_what_the_dict_holds_aligned(tmp_path):
    # Rows packed into one key (in_proj_weight), a sum written as its first term and
    # zeros (the LSTM's two biases), bfloat16, int32, float64: each tensor written as it
    # is converted, in item-size order, so each one's data is aligned to its item size.
    model = Mixed(jax.random.key(0))
    want = tw.export(model, convention="torch")
    assert want["attn.in_proj_weight"].shape == (24, 8)
    path = tmp_path / "mixed.safetensors"
    tw.export(model, path, convention="torch")
    got = load_file(path)
    _same_dict(got, want)
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    assert n % 8 == 0
    items = sorted(header.values(), key=lambda v: v["data_offsets"][0])
    sizes = [
        want[k].dtype.itemsize for k in sorted(header, key=lambda k: header[k]["data_offsets"][0])
    ]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 8
    assert all(v["data_offsets"][0] % s == 0 for v, s in zip(items, sizes, strict=True))
    back = tw.load(model, path, convention="torch")
    leaves_equal(back, model)
    with pytest.raises(tw.ArgumentError, match="'x' has dtype complex64"):
        tw.export({"x": jnp.ones(2, jnp.complex64)}, tmp_path / "c.safetensors")
    assert not (tmp_path / "c.safetensors").exists()


def test_export_keys_per_convention():
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    assert sorted(tw.export(model, convention="haiku")) == ["b", "w"]
    enc = EqxEncoder(jax.random.key(0))
    keys = tw.export(enc, convention="flax")
    assert "layers/1/ln2/scale" in keys and keys["layers/1/q/kernel"].shape == (8, 8)
    np.testing.assert_array_equal(
        keys["layers/1/up/kernel"], np.asarray(enc.layers[1].up.weight).T
    )
    assert "embed/embedding" in keys
    renamed = tw.export(enc, rename=[(r"^layers/", "blocks/")])
    assert "blocks.0.q.weight" in renamed and "embed.weight" in renamed


def test_npz_source(tmp_path):
    sd = convnet_state_dict()
    np.savez(tmp_path / "sd.npz", **sd)
    x, y = io("convnet")
    close(tw.load(NnxConvNet(nnx.Rngs(0)), tmp_path / "sd.npz", convention="torch")(x), y)


def test_bad_arguments_are_reported():
    lin = eqx.nn.Linear(3, 2, key=jax.random.key(0))
    with pytest.raises(tw.ArgumentError, match="convention='pytorch' is not a known"):
        tw.load(lin, {}, convention="pytorch")
    with pytest.raises(tw.ArgumentError, match="no file"):
        tw.load(lin, "/nonexistent/model.safetensors")
    with pytest.raises(tw.ArgumentError, match=".safetensors and .npz"):
        tw.load(lin, __file__)
    with pytest.raises(tw.PatternError, match="not a valid regex"):
        tw.load(lin, {"weight": np.ones((2, 3))}, rename=[("(", "")])
    with pytest.raises(tw.ArgumentError, match="abstract"):
        tw.export(eqx.filter_eval_shape(eqx.nn.Linear, 3, 2, key=jax.random.key(0)))


def test_batchnorm_statistics_and_rng_state():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.bn = nnx.BatchNorm(4, rngs=rngs)
            self.drop = nnx.Dropout(0.5, rngs=rngs)
            self.emb = nnx.Embed(5, 4, rngs=rngs)

    rng = np.random.default_rng(0)
    sd = {  # torch.nn.BatchNorm1d(4) and nn.Embedding(5, 4) state_dict names
        "bn.weight": rng.normal(size=4), "bn.bias": rng.normal(size=4),
        "bn.running_mean": rng.normal(size=4), "bn.running_var": rng.uniform(size=4),
        "bn.num_batches_tracked": np.array(10), "emb.weight": rng.normal(size=(5, 4)),
    }  # fmt: skip
    net = tw.load(Net(nnx.Rngs(0)), sd, convention="torch")
    for name, value in (("scale", "weight"), ("mean", "running_mean"), ("var", "running_var")):
        np.testing.assert_allclose(getattr(net.bn, name)[...], sd[f"bn.{value}"], rtol=1e-6)
    assert type(net.bn.mean) is nnx.BatchStat
    np.testing.assert_allclose(net.emb.embedding[...], sd["emb.weight"], rtol=1e-6)
    out = tw.export(net)
    assert sorted(out) == sorted(k for k in sd if "num_batches" not in k)


def test_a_tied_weight_stored_once_loads_into_both_places():
    shared = jnp.zeros((3, 2))
    tree = {"embed": {"weight": shared}, "head": {"weight": shared}}
    value = np.arange(6.0, dtype=np.float32).reshape(3, 2)
    plan = tw.load_plan(tree, {"embed.weight": value})
    assert [s.status for s in plan.steps] == ["load", "tied"]
    assert "tied to 'embed/weight'" in str(plan)
    out = tw.load(tree, {"embed.weight": value})
    assert out["head"]["weight"] is out["embed"]["weight"]
    np.testing.assert_array_equal(out["head"]["weight"], value)


def test_the_loaded_model_never_shares_memory_with_the_source():
    # A page-aligned array, which JAX's CPU client would alias rather than copy.
    weight = np.frombuffer(mmap.mmap(-1, 2 * 3 * 4), np.float32).reshape(2, 3)
    weight[...] = 1.0
    sd = {"weight": weight, "bias": np.zeros(2, np.float32)}
    lin = tw.load(eqx.nn.Linear(3, 2, key=jax.random.key(0)), sd, convention="torch")
    numpy_tree = tw.load({"weight": np.zeros((2, 3), np.float32)}, {"weight": weight})
    weight[...] = 7.0  # the caller keeps using its arrays
    np.testing.assert_array_equal(lin.weight, np.ones((2, 3)))
    np.testing.assert_array_equal(numpy_tree["weight"], np.ones((2, 3)))


def test_into_names_the_convention_of_a_plain_dict():
    norm = {"norm": {"scale": jnp.zeros(4), "bias": jnp.zeros(4)}}  # no kernel: not told
    sd = {"norm.weight": np.full(4, 2.0, np.float32), "norm.bias": np.ones(4, np.float32)}
    with pytest.raises(tw.LoadError, match="'norm/scale'"):
        tw.load(norm, sd, convention="torch")
    out = tw.load(norm, sd, convention="torch", into="flax")
    np.testing.assert_array_equal(out["norm"]["scale"], sd["norm.weight"])


def test_haiku_module_names_are_reached_with_a_prefix_rule():
    x, y = io("convnet")
    params = {f"net/~/{k}": v for k, v in haiku_convnet.init(jax.random.key(0), x).items()}
    loaded = tw.load(params, CONVNET, convention="torch", rename=[(r"^", "net/~/")])
    unprefixed = {k.removeprefix("net/~/"): v for k, v in loaded.items()}
    close(haiku_convnet.apply(unprefixed, x), y)


@pytest.mark.parametrize("ndim", [1, 3])
def test_conv_1d_and_3d_layouts(ndim):
    # PyTorch ConvNd weight (out, in, *k); Flax/Haiku kernel (*k, in, out).
    k = (2,) * ndim
    weight = np.arange(3 * 2 * 2**ndim, dtype=np.float32).reshape(3, 2, *k)
    sd = {"weight": weight, "bias": np.arange(3, dtype=np.float32)}
    conv = nnx.Conv(2, 3, k, padding="VALID", rngs=nnx.Rngs(0))
    loaded = tw.load(conv, sd, convention="torch")
    np.testing.assert_array_equal(loaded.kernel[...], np.moveaxis(weight, (0, 1), (-1, -2)))
    make = eqx.nn.Conv1d if ndim == 1 else eqx.nn.Conv3d
    eqx_conv = tw.load(make(2, 3, 2, key=jax.random.key(0)), sd, convention="torch")
    np.testing.assert_array_equal(eqx_conv.weight, weight)
    assert eqx_conv.bias.shape == (3,) + (1,) * ndim
    if ndim == 1:  # the two compute the same convolution (NCW vs NWC)
        x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
        close(np.moveaxis(loaded(x.T[None])[0], -1, 0), eqx_conv(x))


def test_long_problem_lists_are_cut_short():
    sd = {f"junk.{i}": np.zeros(1) for i in range(30)}
    with pytest.raises(tw.LoadError) as info:
        tw.load({"w": jnp.zeros(1)}, sd)
    msg = str(info.value)
    assert "'junk.9'" in msg and "'junk.10'" not in msg and "... and 20 more" in msg
    assert len(info.value.plan.problems()) == 31


def test_a_forgotten_convention_is_pointed_out():
    sd = {"weight": np.ones((2, 3), np.float32), "bias": np.ones(2, np.float32)}
    with pytest.raises(tw.LoadError, match="needs convention='torch'"):
        tw.load(nnx.Linear(3, 2, rngs=nnx.Rngs(0)), sd)
    with pytest.raises(tw.LoadError, match="strict=False does not skip"):
        tw.load(nnx.Linear(3, 3, rngs=nnx.Rngs(0)), sd, convention="torch", strict=False)


def test_penzai_parameters_load_by_name_and_stay_parameters():
    from penzai import pz

    layer = pz.nn.Linear.from_config(
        name="fc", init_base_rng=jax.random.key(0), input_axes={"i": 4}, output_axes={"o": 3}
    )
    before = np.array(layer.weights.value.data_array)
    out = tw.export(layer)
    assert list(out) == ["weights"] and out["weights"].shape == (4, 3)
    loaded = tw.load(layer, {"weights": out["weights"] + 1})
    assert isinstance(loaded.weights, pz.Parameter) and loaded.weights is not layer.weights
    np.testing.assert_allclose(loaded.weights.value.data_array, before + 1)
    np.testing.assert_array_equal(layer.weights.value.data_array, before)  # input untouched


def test_a_file_that_is_not_safetensors(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\xff" * 64)
    with pytest.raises(tw.ArgumentError, match="is not a safetensors file"):
        tw.load({"w": jnp.zeros(1)}, bad)


def test_bfloat16_safetensors(tmp_path):
    from safetensors.numpy import save_file

    value = np.arange(4, dtype=jnp.bfloat16)
    save_file({"w": value}, str(tmp_path / "b.safetensors"))
    out = tw.load({"w": jnp.zeros(4, jnp.float32)}, tmp_path / "b.safetensors")
    np.testing.assert_array_equal(out["w"], [0, 1, 2, 3])


@settings(max_examples=30)
@given(
    ndim=st.integers(3, 5),
    family=st.sampled_from(["dense", "transposed"]),
    src=st.sampled_from(["torch", "equinox", "flax", "haiku"]),
    dst=st.sampled_from(["torch", "equinox", "flax", "haiku"]),
)
def test_weight_layouts_convert_both_ways(ndim, family, src, dst):
    from treewalk._frameworks.checkpoint import LAYOUTS, conversion

    def apply(x, decided):
        perm, flip = decided
        x = x if perm is None else x.transpose(perm)
        return np.flip(x, flip) if flip else x

    shape = tuple(range(2, 2 + ndim))
    x = np.arange(np.prod(shape)).reshape(shape)
    a, b = LAYOUTS[src][family], LAYOUTS[dst][family]
    y = apply(x, conversion(a, b, ndim))
    np.testing.assert_array_equal(apply(y, conversion(b, a, ndim)), x)
    if (a.axes, b.axes) == ("oik", "kio") and a.flipped == b.flipped:  # (o, i, *k) -> (*k, i, o)
        np.testing.assert_array_equal(y, np.moveaxis(x, (0, 1), (-1, -2)))
