"""Checkpoints converted by the destination layer's declared type, never silently wrong:
transposed convolutions (Equinox, both NNX `transpose_kernel` settings), square weights,
layers whose convention is not known (NNX `Einsum`), NNX `LinearGeneral`'s matrix,
weight norm, Equinox BatchNorm statistics in `eqx.nn.State`, packed attention on export,
ties given by two keys, `rename` rules and the fixes errors suggest. The decoder's
numbers come from real PyTorch (tests/fixtures/make_torch_fixtures.py);
tests/test_load_torch.py runs the same live."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from load_models import FIXTURES, close, io

import treewalk as tw

DECODER = FIXTURES / "torch_decoder.safetensors"


class EqxDecoder(eqx.Module):
    up1: eqx.nn.ConvTranspose2d
    up2: eqx.nn.ConvTranspose2d

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.up1 = eqx.nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1, key=k1)
        self.up2 = eqx.nn.ConvTranspose2d(4, 2, 2, stride=2, key=k2)

    def __call__(self, x):  # x: (4, H, W)
        return self.up2(jax.nn.relu(self.up1(x)))


class NnxDecoder(nnx.Module):
    def __init__(self, transpose_kernel, rngs):
        def up(c_in, c_out, k, pad):
            return nnx.ConvTranspose(
                c_in,
                c_out,
                (k, k),
                strides=(2, 2),
                padding=(pad, pad),
                transpose_kernel=transpose_kernel,
                rngs=rngs,
            )

        # PyTorch's padding p with output_padding q is lax's (k - 1 - p, k - 1 - p + q).
        self.up1, self.up2 = up(4, 4, 3, (1, 2)), up(4, 2, 2, (1, 1))

    def __call__(self, x):  # x: (N, 4, H, W) as PyTorch's, computed NHWC
        h = self.up2(jax.nn.relu(self.up1(jnp.transpose(x, (0, 2, 3, 1)))))
        return jnp.transpose(h, (0, 3, 1, 2))


def decoders():
    return {
        "equinox": (EqxDecoder(jax.random.key(0)), lambda m, x: jax.vmap(m)(x)),
        "nnx": (NnxDecoder(False, nnx.Rngs(0)), lambda m, x: m(x)),
        "nnx, transpose_kernel": (NnxDecoder(True, nnx.Rngs(0)), lambda m, x: m(x)),
    }


@pytest.mark.parametrize("name", list(decoders()))
def test_transposed_convolutions_load_from_pytorch_and_export_back(name):
    x, y = io("decoder")
    model, apply = decoders()[name]
    loaded = tw.load(model, DECODER, convention="torch")
    close(apply(loaded, x), y)
    # Exported, it is PyTorch's state_dict again; loaded back, the same model.
    from safetensors.numpy import load_file

    exported = tw.export(loaded, convention="torch")
    for key, array in load_file(str(DECODER)).items():
        np.testing.assert_allclose(exported[key], array, rtol=0, atol=0)
    close(apply(tw.load(model, exported, convention="torch"), x), y)


def test_a_pytree_source_converts_between_transposed_layouts():
    x, y = io("decoder")
    eqx_model = tw.load(EqxDecoder(jax.random.key(0)), DECODER, convention="torch")
    for tk in (False, True):
        nnx_model = tw.load(NnxDecoder(tk, nnx.Rngs(1)), eqx_model)  # declared by its types
        close(nnx_model(x), y)


def test_a_file_in_flax_convention_holds_nnxs_default_transposed_layout():
    x, y = io("decoder")
    for source_tk in (False, True):
        model = tw.load(NnxDecoder(source_tk, nnx.Rngs(0)), DECODER, convention="torch")
        flax_file = tw.export(model, convention="flax")
        for tk in (False, True):
            close(tw.load(NnxDecoder(tk, nnx.Rngs(3)), flax_file, convention="flax")(x), y)


def test_square_weights_need_the_sources_convention():
    w = np.arange(9.0, dtype=np.float32).reshape(3, 3)
    sd = {"kernel": w, "bias": np.zeros(3, np.float32)}
    with pytest.raises(tw.LoadError, match=r"(?s)undecided.*'kernel'.*convention="):
        tw.load(nnx.Linear(3, 3, rngs=nnx.Rngs(0)), sd)
    loaded = tw.load(nnx.Linear(3, 3, rngs=nnx.Rngs(0)), sd, convention="torch")
    np.testing.assert_array_equal(loaded.kernel[...], w.T)
    loaded = tw.load(nnx.Linear(3, 3, rngs=nnx.Rngs(0)), sd, convention="flax")
    np.testing.assert_array_equal(loaded.kernel[...], w)
    # Non-square: the shape alone fits one way only, and loads with no convention given.
    sd = {"kernel": np.ones((3, 2), np.float32), "bias": np.zeros(2, np.float32)}
    assert tw.load(nnx.Linear(3, 2, rngs=nnx.Rngs(0)), sd).kernel.shape == (3, 2)


class WithEinsum(nnx.Module):
    def __init__(self, rngs):
        self.proj = nnx.Einsum("ab,bc->ac", (4, 4), (4,), rngs=rngs)


def test_an_nnx_layer_of_unknown_convention_is_refused_not_converted_by_its_name():
    sd = {"proj.kernel": np.eye(4, dtype=np.float32)[::-1].copy(), "proj.bias": np.zeros(4)}
    with pytest.raises(tw.LoadError, match=r"(?s)Einsum.*layouts=\{'\^proj/kernel\$': 'as-is'\}"):
        tw.load(WithEinsum(nnx.Rngs(0)), sd, convention="torch")
    loaded = tw.load(
        WithEinsum(nnx.Rngs(0)), sd, convention="torch", layouts={"^proj/kernel$": "as-is"}
    )
    np.testing.assert_array_equal(loaded.proj.kernel[...], sd["proj.kernel"])
    # The PyTorch name of its weight is not guessed either.
    with pytest.raises(tw.LoadError, match="Einsum is not one whose convention is known"):
        tw.load(WithEinsum(nnx.Rngs(0)), {"proj.weight": sd["proj.kernel"]}, convention="torch")


class WithGeneral(nnx.Module):
    def __init__(self, rngs):
        self.proj = nnx.LinearGeneral(4, (2, 2), rngs=rngs)


def test_an_nnx_linear_general_is_the_matrix_its_features_declare():
    # Square: torch (out=4, in=4) -> (in, out) -> (in, 2, 2), C order; never as it is.
    w = np.arange(16.0, dtype=np.float32).reshape(4, 4)
    sd = {"proj.weight": w, "proj.bias": np.arange(4.0, dtype=np.float32)}
    loaded = tw.load(WithGeneral(nnx.Rngs(0)), sd, convention="torch")
    np.testing.assert_array_equal(loaded.proj.kernel[...], w.T.reshape(4, 2, 2))
    np.testing.assert_array_equal(loaded.proj.bias[...], sd["proj.bias"].reshape(2, 2))
    x = np.arange(8.0, dtype=np.float32).reshape(2, 4)
    out = np.asarray(loaded.proj(x)).reshape(2, 4)
    np.testing.assert_allclose(out, x @ w.T + sd["proj.bias"], rtol=1e-6)
    back = tw.export(loaded, convention="torch")
    np.testing.assert_array_equal(back["proj.weight"], w)
    np.testing.assert_array_equal(back["proj.bias"], sd["proj.bias"])
    # From the pytree itself, NNX to NNX and NNX to Equinox (a plain matrix).
    again = tw.load(WithGeneral(nnx.Rngs(1)), loaded)
    np.testing.assert_array_equal(again.proj.kernel[...], loaded.proj.kernel[...])


def test_layouts_say_how_a_file_lays_out_its_weights():
    # A transformers Conv1D stores (in, out): a Linear's weight the other way round.
    w = np.arange(6.0, dtype=np.float32).reshape(3, 2)  # (in, out)
    sd = {"fc.weight": w, "fc.bias": np.zeros(2, np.float32)}
    model = {"fc": eqx.nn.Linear(3, 2, key=jax.random.key(0))}
    with pytest.raises(tw.LoadError, match=r"looks laid out the other way round.*layouts="):
        tw.load(model, sd, convention="torch")
    loaded = tw.load(model, sd, convention="torch", layouts={r"fc/weight$": "io"})
    np.testing.assert_array_equal(loaded["fc"].weight, w.T)
    with pytest.raises(tw.ArgumentError, match="names each axis"):
        tw.load(model, sd, convention="torch", layouts={"fc": "xy"})


def test_a_tie_given_two_different_tensors_is_refused_and_equal_ones_load_once():
    w = jnp.zeros((2, 2))
    tied = {"embed": w, "head": w}
    a, b = np.ones((2, 2), np.float32), np.full((2, 2), 2.0, np.float32)
    with pytest.raises(tw.LoadError, match=r"'embed'.*'head'.*different values"):
        tw.load(tied, {"embed": a, "head": b})
    out = tw.load(tied, {"embed": a, "head": a.copy()})
    assert out["embed"] is out["head"]
    np.testing.assert_array_equal(out["head"], a)
    plan = tw.load_plan(tied, {"embed": a, "head": b})
    assert [s.status for s in plan.steps] == ["load", "tied"]


def test_rename_takes_rules_and_callables_and_none_skips():
    sd = {
        "model.lin.weight": np.ones((2, 3)),
        "model.lin.bias": np.zeros(2),
        "model.aux": np.ones(1),
    }
    model = {"fc": eqx.nn.Linear(3, 2, key=jax.random.key(0))}
    # Each rule is needed: without the callable lin/ is not fc/, without None aux is unused.
    rules = [(r"^model/", ""), (r"^aux$", None), lambda k: k.replace("lin/", "fc/")]
    loaded = tw.load(model, sd, convention="torch", rename=rules)
    np.testing.assert_array_equal(loaded["fc"].weight, 1.0)
    plan = tw.load_plan(model, sd, convention="torch", rename=rules)
    assert [s.status for s in plan.steps].count("skip") == 1
    for partial in (rules[:2], rules[::2]):
        with pytest.raises(tw.LoadError):
            tw.load(model, sd, convention="torch", rename=partial)


def test_errors_suggest_the_rename_rule_and_show_renames_only_when_given():
    sd = {"model.fc.weight": np.ones((2, 3)), "model.fc.bias": np.zeros(2)}
    model = {"fc": eqx.nn.Linear(3, 2, key=jax.random.key(0))}
    with pytest.raises(tw.LoadError) as e:
        tw.load(model, sd, convention="torch")
    msg = str(e.value)
    assert "rename=[('^model/', '')]" in msg and "(renamed" not in msg
    tw.load(model, sd, convention="torch", rename=[("^model/", "")])  # the rule works
    sd = {"dense.weight": np.ones((2, 3)), "dense.bias": np.zeros(2)}
    with pytest.raises(tw.LoadError, match=r"rename=\[\('\(\?:\^\|\(\?<=/\)\)dense/', 'fc/'\)\]"):
        tw.load(model, sd, convention="torch")
    tw.load(model, sd, convention="torch", rename=[("(?:^|(?<=/))dense/", "fc/")])


@pytest.mark.parametrize(
    "g, v",
    [
        ("parametrizations.weight.original0", "parametrizations.weight.original1"),
        ("weight_g", "weight_v"),
    ],
)
def test_weight_norm_loads_into_equinox_weight_norm_and_exports_back(g, v):
    # Square (5, 5): PyTorch's weight_norm keys, the new API's and the old one's.
    rng = np.random.default_rng(0)
    sd = {
        f"fc.{g}": rng.uniform(0.5, 2, (5, 1)).astype(np.float32),
        f"fc.{v}": rng.normal(size=(5, 5)).astype(np.float32),
        "fc.bias": rng.normal(size=5).astype(np.float32),
    }

    class Net(eqx.Module):
        fc: eqx.nn.WeightNorm

    net = Net(eqx.nn.WeightNorm(eqx.nn.Linear(5, 5, key=jax.random.key(0))))
    loaded = tw.load(net, sd, convention="torch")
    w = sd[f"fc.{g}"] * sd[f"fc.{v}"] / np.linalg.norm(sd[f"fc.{v}"], axis=1, keepdims=True)
    x = rng.normal(size=5).astype(np.float32)
    np.testing.assert_allclose(loaded.fc(x), w @ x + sd["fc.bias"], rtol=1e-5, atol=1e-6)
    back = tw.export(loaded, convention="torch")  # the new API's keys
    assert sorted(back) == sorted(
        ["fc.bias", "fc.parametrizations.weight.original0", "fc.parametrizations.weight.original1"]
    )
    np.testing.assert_array_equal(back["fc.parametrizations.weight.original1"], sd[f"fc.{v}"])
    # Along another axis it is not PyTorch's weight_norm: its g is not loaded by that name.
    other = Net(eqx.nn.WeightNorm(eqx.nn.Linear(5, 5, key=jax.random.key(0)), axis=1))
    with pytest.raises(tw.LoadError, match="missing"):
        tw.load(other, sd, convention="torch")


class BatchNet(eqx.Module):
    bn: eqx.nn.BatchNorm

    def __init__(self):
        self.bn = eqx.nn.BatchNorm(3, "batch", mode="batch", momentum=0.9)


def test_equinox_batchnorm_exports_the_statistics_inference_uses():
    # mode="batch" debiases its hidden statistics by its counter: the export is what
    # inference divides out, and loading it back gives the same outputs.
    model, state = eqx.nn.make_with_state(BatchNet)()
    x = np.random.default_rng(0).normal(2.0, 3.0, (8, 3)).astype(np.float32)
    train = jax.vmap(
        lambda m, s, x: m.bn(x, s), in_axes=(None, None, 0), out_axes=(0, None), axis_name="batch"
    )
    for _ in range(2):
        _, state = train(model, state, x)
    assert state.get(model.bn.batch_counter) == 2
    infer = jax.vmap(lambda m, s, x: m.bn(x, s, inference=True)[0], in_axes=(None, None, 0))
    want = infer(model, state, x)
    hidden_mean, _ = state.get(model.bn.batch_state_index)
    out = tw.export((model, state), convention="torch")
    np.testing.assert_allclose(out["bn.running_mean"], hidden_mean / (1 - 0.9**2), rtol=1e-6)
    fresh, fresh_state = eqx.nn.make_with_state(BatchNet)()
    model2, state2 = tw.load((fresh, fresh_state), out, convention="torch")
    assert state2.get(model2.bn.batch_counter) == 0
    np.testing.assert_allclose(infer(model2, state2, x), want, rtol=1e-5, atol=1e-6)
    # The model alone has no place for the statistics: the error says to pass the state.
    with pytest.raises(tw.LoadError, match=r"eqx\.nn\.State.*tw\.load\(\(model, state\)"):
        tw.load(fresh, out, convention="torch")


def test_attention_export_refuses_projections_that_do_not_make_up_in_proj_bias():
    attn = eqx.nn.MultiheadAttention(2, 8, use_query_bias=True, key=jax.random.key(0))
    with pytest.raises(tw.ArgumentError, match="in_proj_bias"):
        tw.export({"attn": attn}, convention="torch")
    # With every bias, the packed projections are one (3E, E) array, query rows first.
    full = eqx.nn.MultiheadAttention(
        2,
        8,
        use_query_bias=True,
        use_key_bias=True,
        use_value_bias=True,
        use_output_bias=True,
        key=jax.random.key(0),
    )
    out = tw.export({"attn": full}, convention="torch")
    np.testing.assert_array_equal(out["attn.in_proj_weight"][8:16], full.key_proj.weight)
    assert out["attn.in_proj_bias"].shape == (24,)


def test_haiku_batchnorm_statistics_load_into_its_state_and_export_back():
    import haiku as hk

    def f(x, is_training):
        return hk.BatchNorm(True, True, 0.9, eps=1e-5, name="bn")(x, is_training)

    net = hk.transform_with_state(f)
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    params, state = net.init(jax.random.key(0), x, True)
    sd = {
        "bn.weight": np.array([1.0, 2.0, 0.5], np.float32),
        "bn.bias": np.array([0.1, -0.2, 0.3], np.float32),
        "bn.running_mean": np.array([0.5, -1.0, 2.0], np.float32),
        "bn.running_var": np.array([1.5, 0.25, 4.0], np.float32),
        "bn.num_batches_tracked": np.array(3),
    }
    params, state = tw.load((params, state), sd, convention="torch")
    out, _ = net.apply(params, state, None, x, False)
    want = (x - sd["bn.running_mean"]) / np.sqrt(sd["bn.running_var"] + 1e-5)
    np.testing.assert_allclose(out, want * sd["bn.weight"] + sd["bn.bias"], rtol=1e-5, atol=1e-6)
    mean_ema = state["bn/~/mean_ema"]
    np.testing.assert_array_equal(mean_ema["hidden"], mean_ema["average"])
    # Warmed up: one training step goes on from the loaded average as PyTorch's would.
    _, after = net.apply(params, state, None, x, True)
    np.testing.assert_allclose(
        after["bn/~/mean_ema"]["average"].reshape(-1),
        0.9 * sd["bn.running_mean"] + 0.1 * x.mean(0),
        rtol=1e-5,
    )
    back = tw.export((params, state), convention="torch")
    assert sorted(back) == sorted(k for k in sd if k != "bn.num_batches_tracked")
    for k, v in back.items():
        np.testing.assert_array_equal(v, sd[k])


def _lstm_keys(prefix, rng, layers=(0,)):
    n = 4  # square: the input size is the hidden size
    out = {}
    for k in layers:
        out[f"{prefix}weight_ih_l{k}"] = rng.normal(size=(4 * n, n)).astype(np.float32)
        out[f"{prefix}weight_hh_l{k}"] = rng.normal(size=(4 * n, n)).astype(np.float32)
        out[f"{prefix}bias_ih_l{k}"] = rng.normal(size=4 * n).astype(np.float32)
        out[f"{prefix}bias_hh_l{k}"] = rng.normal(size=4 * n).astype(np.float32)
    return out


class Stacked(eqx.Module):
    rnn: list

    def __init__(self):
        self.rnn = [eqx.nn.LSTMCell(4, 4, key=jax.random.key(k)) for k in range(2)]


def test_a_list_of_cells_is_one_multi_layer_rnn_or_a_list_of_one_layer_rnns():
    rng = np.random.default_rng(0)
    stacked = _lstm_keys("rnn.", rng, layers=(0, 1))  # nn.LSTM(4, 4, num_layers=2)
    net = tw.load(Stacked(), stacked, convention="torch")
    np.testing.assert_array_equal(net.rnn[1].weight_hh, stacked["rnn.weight_hh_l1"])
    np.testing.assert_array_equal(
        net.rnn[1].bias, stacked["rnn.bias_ih_l1"] + stacked["rnn.bias_hh_l1"]
    )
    back = tw.export(net, convention="torch")  # written as one multi-layer RNN
    assert sorted(back) == sorted(stacked)
    listed = {**_lstm_keys("rnn.0.", rng), **_lstm_keys("rnn.1.", rng)}  # a ModuleList
    net = tw.load(Stacked(), listed, convention="torch")
    np.testing.assert_array_equal(net.rnn[1].weight_ih, listed["rnn.1.weight_ih_l0"])
    with pytest.raises(tw.LoadError, match="twice"):
        tw.load(Stacked(), {**stacked, **listed}, convention="torch")


class Blocks(eqx.Module):
    layers: list

    def __init__(self):
        bias = dict.fromkeys(
            ("use_query_bias", "use_key_bias", "use_value_bias", "use_output_bias"), True
        )
        self.layers = [
            {"self_attn": eqx.nn.MultiheadAttention(2, 4, key=jax.random.key(k), **bias)}
            for k in range(2)
        ]


def test_attention_deep_in_a_model_is_cut_at_its_own_path():
    rng = np.random.default_rng(0)
    sd = {}
    for k in range(2):
        p = f"layers.{k}.self_attn."
        sd[p + "in_proj_weight"] = rng.normal(size=(12, 4)).astype(np.float32)
        sd[p + "in_proj_bias"] = rng.normal(size=12).astype(np.float32)
        sd[p + "out_proj.weight"] = rng.normal(size=(4, 4)).astype(np.float32)
        sd[p + "out_proj.bias"] = rng.normal(size=4).astype(np.float32)
    net = tw.load(Blocks(), sd, convention="torch")
    attn = net.layers[1]["self_attn"]
    w = sd["layers.1.self_attn.in_proj_weight"]
    np.testing.assert_array_equal(attn.value_proj.weight, w[8:12])
    np.testing.assert_array_equal(attn.query_proj.bias, sd["layers.1.self_attn.in_proj_bias"][:4])
    back = tw.export(net, convention="torch")
    assert sorted(back) == sorted(sd)
    for key, value in sd.items():
        np.testing.assert_array_equal(back[key], value)
