"""Vision and sequence checkpoints from real PyTorch and transformers
(tests/fixtures/make_zoo_vision.py) loaded into their Equinox and NNX twins
(tests/zoo_vision_models.py) by the destination layer's type, with no `rename=`: a ResNet
with BatchNorm (Equinox's statistics in `eqx.nn.State`: `tw.load((model, state), ...)`
returns `(model, state)`), a ViT, `nn.MultiheadAttention` packed (`in_proj_weight`) and
not (`q/k/v_proj_weight`), `nn.LSTM` and `nn.GRU` into `eqx.nn.LSTMCell` / `GRUCell`
(their two biases summed; GRU's hidden `n` bias is `bias_n`). Each computes what PyTorch
computed, exports back to the same `state_dict`, and (where torch is installed) that
export loads into the PyTorch module rebuilt by the fixture script."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from load_models import FIXTURES
from safetensors.numpy import load_file
from zoo_vision_models import (
    CASES,
    EqxAttention,
    EqxGRU,
    EqxLSTM,
    NnxAttention,
    abstract,
    apply_attention,
    apply_nnx_attention,
    apply_rnn,
    arrays,
    io,
    path,
)

import treewalk as tw

TOL = {"atol": 1e-4, "rtol": 1e-4}


def fixture_state(name: str) -> dict[str, np.ndarray]:
    """The fixture's `state_dict`, less PyTorch's BatchNorm counters (never exported)."""
    return {
        k: v for k, v in load_file(path(name)).items() if not k.endswith("num_batches_tracked")
    }


def outputs_match(got: dict, want: dict) -> None:
    assert got, "no outputs"
    for key, value in got.items():
        np.testing.assert_allclose(np.asarray(value), want[key], err_msg=key, **TOL)


def gates(name: str) -> int:
    return {"lstm": 4, "gru": 3}.get(name, 0)


def same_state(exported: dict, want: dict, n_gates: int = 0, atol: float = 1e-6) -> None:
    """`exported` holds `want`'s keys and values. A recurrent cell holds one bias where
    PyTorch holds `bias_ih` and `bias_hh`: what it can give back is their sum per gate, but
    GRU's `n` gate, whose two biases enter apart (`bias_n` is the hidden one)."""
    assert sorted(exported) == sorted(want)
    for key, value in want.items():
        if n_gates and "bias_" in key:
            continue
        assert exported[key].shape == value.shape, key
        np.testing.assert_allclose(exported[key], value, rtol=0, atol=atol, err_msg=key)
    if n_gates:
        (ih,) = (k for k in want if "bias_ih" in k)
        (hh,) = (k for k in want if "bias_hh" in k)
        total = exported[ih] + exported[hh]
        np.testing.assert_allclose(total, want[ih] + want[hh], rtol=0, atol=atol)
        if n_gates == 3:  # GRU: r, z summed; n's input and hidden biases apart
            n = slice(2 * len(want[ih]) // 3, None)
            np.testing.assert_allclose(exported[ih][n], want[ih][n], rtol=0, atol=atol)
            np.testing.assert_allclose(exported[hh][n], want[hh][n], rtol=0, atol=atol)


# ---------------------------------------------------------------------------------------
# The fixtures: PyTorch's numbers, loaded into the twins


@pytest.mark.parametrize("case", list(CASES))
def test_a_zoo_checkpoint_loads_by_layer_type_and_computes_what_pytorch_computed(case):
    c = CASES[case]
    loaded = c.load(path(c.fixture))  # into the twin's shapes: nothing initialised
    outputs_match(c.apply(loaded, io(c.fixture)), io(c.fixture))


@pytest.mark.parametrize("case", list(CASES))
def test_a_concrete_twin_loads_the_same_arrays(case):
    c = CASES[case]
    got = arrays(c.load(path(c.fixture), destination="zeros"))
    want = arrays(c.load(path(c.fixture)))
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("case", list(CASES))
def test_a_loaded_twin_exports_pytorchs_state_dict_back(case):
    c = CASES[case]
    loaded = c.load(path(c.fixture))
    exported = tw.export(loaded, convention="torch")
    same_state(exported, fixture_state(c.fixture), gates(c.fixture))
    # Loaded again into a fresh twin, the same arrays (so the same outputs).
    again = c.load(exported)
    for a, b in zip(arrays(loaded), arrays(again), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["ema", "batch"])
def test_equinox_batchnorm_statistics_load_into_the_state_not_the_module(mode):
    c = CASES[f"resnet-equinox-{mode}"]
    plan = tw.load_plan(abstract(c.make, c.framework), path(c.fixture), convention="torch")
    assert {s.status for s in plan.steps} == {"load", "skip"}, plan  # skip: the counters
    model, state = c.load(path(c.fixture))
    sd = load_file(path(c.fixture))
    prefix = "encoder.stages.1.layers.0.shortcut.normalization."
    bn = model.encoder.stages[1].layers[0].shortcut.normalization
    np.testing.assert_array_equal(bn.weight, sd[prefix + "weight"])
    np.testing.assert_array_equal(bn.bias, sd[prefix + "bias"])
    if mode == "ema":
        mean, var = state.get(bn.ema_state_index)
        assert not state.get(bn.ema_first_time_index)  # the statistics are there
    else:
        mean, var = state.get(bn.batch_state_index)
        # PyTorch's statistics are not zero-debiased: a count of 0 reads them as they are.
        # (PyTorch's num_batches_tracked, 7 in the fixture, is not that count.)
        assert state.get(bn.batch_counter) == 0
    np.testing.assert_array_equal(mean, sd[prefix + "running_mean"])
    np.testing.assert_array_equal(var, sd[prefix + "running_var"])


# ---------------------------------------------------------------------------------------
# Live PyTorch: the export loads into the module the fixture script builds


def _fixture_script():
    spec = importlib.util.spec_from_file_location("zfix", FIXTURES / "make_zoo_vision.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _torch_net(name: str, zfix):
    builders = {
        "resnet": zfix.resnet,
        "vit": zfix.vit,
        "mha": lambda: zfix.SelfAttention().eval(),
        "mha_kdim": lambda: zfix.CrossAttention(8, 12).eval(),
        "mha_kv": lambda: zfix.CrossAttention(8, 8).eval(),
        "lstm": zfix.lstm,
        "gru": zfix.gru,
    }
    return builders[name]()


def _run_torch(torch, name: str, net, inputs: dict) -> dict:
    t = {k: torch.from_numpy(np.array(v)) for k, v in inputs.items()}
    with torch.no_grad():
        if name in ("resnet", "vit"):
            out = net(t["x"])
            return {"y": out.last_hidden_state.numpy(), "pooled": out.pooler_output.numpy()}
        if name == "mha":
            return {"y": net(t["x"]).numpy()}
        if name.startswith("mha"):
            return {"y": net(t["x"], t["key"], t["value"]).numpy()}
        return {"y": net(t["x"]).numpy()}


@pytest.fixture(scope="module")
def live():
    """`(torch, the fixture script as a module)`; skipped where torch is not installed."""
    torch = pytest.importorskip("torch")
    zfix = _fixture_script()
    if importlib.util.find_spec("transformers") is not None:
        zfix.resnet()  # transformers' first model imports its machinery: seconds, once
    return torch, zfix


@pytest.mark.parametrize("case", list(CASES))
def test_the_export_loads_into_the_pytorch_module_and_computes_the_same(case, live):
    torch, zfix = live
    c = CASES[case]
    name = c.fixture
    if name in ("resnet", "vit"):
        pytest.importorskip("transformers")
    exported = tw.export(c.load(path(name)), convention="torch")
    torch.manual_seed(1)  # its own weights first: nothing is left from the fixture
    net = _torch_net(name, zfix)
    result = net.load_state_dict(
        {k: torch.from_numpy(np.array(v)) for k, v in exported.items()}, strict=False
    )
    assert all(k.endswith("num_batches_tracked") for k in result.missing_keys), result
    assert not result.unexpected_keys, result
    want = {k: v for k, v in io(name).items() if k in ("y", "pooled")}
    outputs_match(_run_torch(torch, name, net.eval(), io(name)), want)


# ---------------------------------------------------------------------------------------
# Property-style: random weights and sizes (square ones, in == out, among them) against
# PyTorch's formulas written in numpy. A packed or gate-stacked weight loaded the wrong
# way round, or sliced in the wrong order, changes these outputs.


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def torch_mha(sd: dict, q, k, v, heads: int) -> np.ndarray:
    """PyTorch's `nn.MultiheadAttention` (batch_first) on (N, T, .) inputs."""
    if "attn.in_proj_weight" in sd:
        wq, wk, wv = np.split(sd["attn.in_proj_weight"], 3)
    else:
        wq, wk, wv = (sd[f"attn.{p}_proj_weight"] for p in "qkv")
    bq, bk, bv = np.split(sd["attn.in_proj_bias"], 3)
    n, t, d = q.shape

    def split(a):
        return a.reshape(n, a.shape[1], heads, d // heads).transpose(0, 2, 1, 3)

    qh, kh, vh = split(q @ wq.T + bq), split(k @ wk.T + bk), split(v @ wv.T + bv)
    s = qh @ kh.transpose(0, 1, 3, 2) / np.sqrt(d // heads)
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    h = (w @ vh).transpose(0, 2, 1, 3).reshape(n, t, d)
    return h @ sd["attn.out_proj.weight"].T + sd["attn.out_proj.bias"]


def torch_rnn(sd: dict, xs, cell: str) -> np.ndarray:
    """PyTorch's one-layer `nn.LSTM` / `nn.GRU` (batch_first) from a zero state."""
    wi, wh = sd["rnn.weight_ih_l0"], sd["rnn.weight_hh_l0"]
    bi, bh = sd["rnn.bias_ih_l0"], sd["rnn.bias_hh_l0"]
    hidden = wh.shape[1]
    h = c = np.zeros((xs.shape[0], hidden), np.float32)
    out = []
    for x in xs.transpose(1, 0, 2):
        if cell == "lstm":
            i, f, g, o = np.split(x @ wi.T + bi + h @ wh.T + bh, 4, axis=-1)
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            h = _sigmoid(o) * np.tanh(c)
        else:
            ir, iz, in_ = np.split(x @ wi.T + bi, 3, axis=-1)
            hr, hz, hn = np.split(h @ wh.T + bh, 3, axis=-1)
            r, z = _sigmoid(ir + hr), _sigmoid(iz + hz)
            n = np.tanh(in_ + r * hn)
            h = (1 - z) * n + z * h
        out.append(h)
    return np.stack(out, axis=1)


def _random(rng, shapes: dict) -> dict:
    return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


#: (embed_dim, heads, kdim, vdim): kdim == vdim == embed_dim is PyTorch's packed form.
ATTENTION_SIZES = [(8, 2, 8, 8), (6, 3, 6, 6), (8, 4, 8, 8), (8, 2, 4, 4), (4, 2, 6, 3)]


@pytest.mark.parametrize(
    ("sizes", "framework"),
    [
        (sizes, framework)
        for sizes in ATTENTION_SIZES
        for framework in ("equinox", "nnx")
        # NNX's MultiHeadAttention has one `in_kv_features` for key and value.
        if framework == "equinox" or sizes[2] == sizes[3]
    ],
    ids=str,
)
def test_attention_projections_load_by_layer_type(sizes, framework):
    d, heads, kdim, vdim = sizes
    rng = np.random.default_rng(sum(sizes))
    packed = kdim == vdim == d
    shapes = {"attn.in_proj_bias": (3 * d,), "attn.out_proj.weight": (d, d)}
    shapes["attn.out_proj.bias"] = (d,)
    if packed:
        shapes["attn.in_proj_weight"] = (3 * d, d)
    else:
        shapes.update({"attn.q_proj_weight": (d, d), "attn.k_proj_weight": (d, kdim)})
        shapes["attn.v_proj_weight"] = (d, vdim)
    sd = _random(rng, shapes)
    inputs = {"x": rng.normal(size=(2, 3, d)).astype(np.float32)}
    if not packed:
        inputs["key"] = rng.normal(size=(2, 4, kdim)).astype(np.float32)
        inputs["value"] = rng.normal(size=(2, 4, vdim)).astype(np.float32)
    x = inputs["x"]
    want = torch_mha(sd, x, inputs.get("key", x), inputs.get("value", x), heads)
    kv = None if packed else (kdim, vdim)
    if framework == "equinox":
        model = abstract(lambda: EqxAttention(*(kv or (None, None)), d, heads), "equinox")
        apply = apply_attention
    else:
        model = abstract(lambda: NnxAttention(kv and kdim, d, heads), "nnx")
        apply = apply_nnx_attention
    loaded = tw.load(model, sd, convention="torch")
    np.testing.assert_allclose(np.asarray(apply(loaded, inputs)["y"]), want, **TOL)
    same_state(tw.export(loaded, convention="torch"), sd)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("sizes", [(4, 4), (3, 6), (6, 2)], ids=str)
def test_recurrent_gates_load_by_layer_type(sizes, cell):
    n_in, hidden = sizes  # (4, 4): weight_ih and weight_hh of one shape
    g = gates(cell)
    rng = np.random.default_rng(n_in * 10 + hidden)
    sd = _random(
        rng,
        {
            "rnn.weight_ih_l0": (g * hidden, n_in),
            "rnn.weight_hh_l0": (g * hidden, hidden),
            "rnn.bias_ih_l0": (g * hidden,),
            "rnn.bias_hh_l0": (g * hidden,),
        },
    )
    xs = rng.normal(size=(2, 5, n_in)).astype(np.float32)
    model = abstract(lambda: (EqxLSTM if cell == "lstm" else EqxGRU)(n_in, hidden), "equinox")
    loaded = tw.load(model, sd, convention="torch")
    got = apply_rnn(loaded, {"x": xs})["y"]
    np.testing.assert_allclose(np.asarray(got), torch_rnn(sd, xs, cell), **TOL)
    same_state(tw.export(loaded, convention="torch"), sd, g, atol=1e-5)
