"""`tw.load` and `tw.export` with PyTorch live (skipped where torch is not installed, as in
CI; tests/test_load.py checks the same against PyTorch numbers stored in tests/fixtures).
The PyTorch nets are those of tests/fixtures/make_torch_fixtures.py."""

import importlib.util

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from load_models import (
    ENCODER_RENAME,
    FIXTURES,
    EqxEncoder,
    NnxEncoder,
    close,
    convnets,
)

import treewalk as tw

torch = pytest.importorskip("torch")

_spec = importlib.util.spec_from_file_location("tfix", FIXTURES / "make_torch_fixtures.py")
assert _spec is not None and _spec.loader is not None
tfix = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tfix)

FRAMEWORKS = ["equinox", "nnx", "linen", "haiku"]


def run(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(np.asarray(x))).numpy()


def to_torch(state):
    return {k: torch.from_numpy(v) for k, v in state.items()}


@pytest.fixture(scope="module")
def convnet():
    torch.manual_seed(1)
    return tfix.ConvNet().eval(), torch.randn(3, 3, 6, 6).numpy()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_live_state_dict_of_tensors_loads_into_every_framework(framework, convnet):
    net, x = convnet
    model, apply = convnets(x)[framework]
    loaded = tw.load(model, net.state_dict(), convention="torch")  # torch tensors as values
    close(apply(loaded, x), run(net, x))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_export_loads_into_pytorch_and_gives_the_same_outputs(framework, convnet):
    _, x = convnet
    model, apply = convnets(x)[framework]  # its own random weights
    fresh = tfix.ConvNet().eval()
    fresh.load_state_dict(to_torch(tw.export(model, convention="torch")))  # strict
    close(run(fresh, x), apply(model, x))


def test_sequential_mlp_both_ways():
    torch.manual_seed(2)
    seq = tfix.sequential_mlp()
    x = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)
    mlp = eqx.nn.MLP(4, 3, 8, 2, key=jax.random.key(0))

    def into(key):
        index, name = key.split("/")
        return f"layers/{int(index) // 2}/{name}"

    loaded = tw.load(mlp, seq.state_dict(), convention="torch", rename=into)
    close(jax.vmap(loaded)(x), run(seq, x))

    def back(key):
        _, index, name = key.split("/")
        return f"{int(index) * 2}/{name}"

    fresh = tfix.sequential_mlp()
    fresh.load_state_dict(to_torch(tw.export(mlp, rename=back)))
    close(run(fresh, x), jax.vmap(mlp)(x))


HUB = [
    (r"^embed/", "embeddings/word_embeddings/"),
    (r"^layers/(\d+)/q/", r"layer/\1/attention/self/query/"),
    (r"^layers/(\d+)/k/", r"layer/\1/attention/self/key/"),
    (r"^layers/(\d+)/v/", r"layer/\1/attention/self/value/"),
    (r"^layers/(\d+)/o/", r"layer/\1/attention/output/dense/"),
    (r"^layers/(\d+)/ln1/", r"layer/\1/attention/output/LayerNorm/"),
    (r"^layers/(\d+)/up/", r"layer/\1/intermediate/dense/"),
    (r"^layers/(\d+)/down/", r"layer/\1/output/dense/"),
    (r"^layers/(\d+)/ln2/", r"layer/\1/output/LayerNorm/"),
]


@pytest.mark.parametrize("make", [EqxEncoder, NnxEncoder], ids=["equinox", "nnx"])
def test_transformer_both_ways(make):
    torch.manual_seed(3)
    enc = tfix.Encoder().eval()
    tokens = np.array([0, 10, 2, 2, 7])
    model = make(nnx.Rngs(0) if make is NnxEncoder else jax.random.key(0))
    loaded = tw.load(model, enc.state_dict(), convention="torch", rename=ENCODER_RENAME)
    close(loaded(jnp.asarray(tokens)), run(enc, tokens))
    fresh = tfix.Encoder().eval()
    fresh.load_state_dict(to_torch(tw.export(model, rename=HUB)))
    close(run(fresh, tokens), model(jnp.asarray(tokens)))


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("target", ["equinox", "nnx", "nnx, transpose_kernel"])
def test_transposed_convolutions_of_every_rank_match_pytorch(ndim, target):
    torch.manual_seed(ndim)
    cls = getattr(torch.nn, f"ConvTranspose{ndim}d")
    net = cls(3, 3, 3, stride=2, padding=1, output_padding=1).eval()  # square channels
    x = np.random.default_rng(ndim).normal(size=(2, 3) + (4,) * ndim).astype(np.float32)
    want = run(net, x)
    if target == "equinox":
        layer = eqx.nn.ConvTranspose(
            ndim, 3, 3, 3, stride=2, padding=1, output_padding=1, key=jax.random.key(0)
        )
        got = jax.vmap(tw.load(layer, net))(x)  # the module itself: its types, its convention
    else:
        layer = nnx.ConvTranspose(
            3,
            3,
            (3,) * ndim,
            strides=2,
            padding=((1, 2),) * ndim,
            transpose_kernel=target != "nnx",
            rngs=nnx.Rngs(0),
        )
        loaded = tw.load(layer, net.state_dict(), convention="torch")
        got = jnp.moveaxis(loaded(jnp.moveaxis(x, 1, -1)), -1, 1)
    close(got, want)


def test_a_transformers_conv1d_loads_from_the_module_the_right_way_round():
    pytorch_utils = pytest.importorskip("transformers.pytorch_utils")
    torch.manual_seed(0)
    sq, wide = pytorch_utils.Conv1D(4, 4), pytorch_utils.Conv1D(8, 4)  # (nf, nx): (in, out)
    net = torch.nn.ModuleDict({"c_proj": sq, "c_fc": wide})
    model = {
        "c_proj": eqx.nn.Linear(4, 4, key=jax.random.key(0)),
        "c_fc": eqx.nn.Linear(4, 8, key=jax.random.key(1)),
    }
    x = np.random.default_rng(0).normal(size=(4,)).astype(np.float32)
    loaded = tw.load(model, net)
    for name in model:
        close(loaded[name](x), run(net[name], x[None])[0])
    # From its state_dict the source's layout is not known: the wide one says so, and the
    # square one never loads transposed, since nothing loads.
    with pytest.raises(tw.LoadError, match="looks laid out the other way round"):
        tw.load(model, net.state_dict(), convention="torch")
    by_rule = tw.load(model, net.state_dict(), convention="torch", layouts={r"weight$": "io"})
    for name in model:
        close(by_rule[name](x), run(net[name], x[None])[0])


@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e4m3fn", "float16"])
def test_torch_tensors_of_every_dtype_load_without_a_float32_copy(dtype):
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3).to(getattr(torch, dtype))
    model = {"w": jnp.zeros((2, 3), jnp.dtype(dtype))}
    plan = tw.load_plan(model, {"w": t})
    assert plan.steps[0].conversion() == ""  # no cast: read as its own dtype
    out = tw.load(model, {"w": t})
    assert out["w"].dtype == jnp.dtype(dtype)
    np.testing.assert_array_equal(np.asarray(out["w"], np.float32), t.float().numpy())


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
@pytest.mark.parametrize("old_api", [False, True])
@pytest.mark.parametrize("conv", [False, True])
def test_weight_norm_matches_pytorch_both_ways(old_api, conv):
    from torch.nn.utils import parametrizations, weight_norm

    torch.manual_seed(0)
    layer = torch.nn.Conv1d(4, 4, 3) if conv else torch.nn.Linear(5, 5)  # square
    module = torch.nn.Module()
    module.fc = weight_norm(layer) if old_api else parametrizations.weight_norm(layer)
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(0.5, 1.5)
    key = jax.random.key(0)
    inner = eqx.nn.Conv1d(4, 4, 3, key=key) if conv else eqx.nn.Linear(5, 5, key=key)
    loaded = tw.load({"fc": eqx.nn.WeightNorm(inner)}, module)
    x = torch.randn(4, 7) if conv else torch.randn(5)
    want = module.fc(x).detach().numpy()
    np.testing.assert_allclose(loaded["fc"](jnp.asarray(x.numpy())), want, rtol=1e-5, atol=1e-6)
    back = tw.export(loaded, convention="torch")
    fresh = torch.nn.Module()
    fresh.fc = parametrizations.weight_norm(
        torch.nn.Conv1d(4, 4, 3) if conv else torch.nn.Linear(5, 5)
    )
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)
    np.testing.assert_allclose(fresh.fc(x).detach().numpy(), want, rtol=1e-5, atol=1e-6)


def test_haiku_batchnorm_with_its_state_matches_pytorch_both_ways():
    import haiku as hk

    torch.manual_seed(0)
    module = torch.nn.Sequential()
    module.conv, module.bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)
    with torch.no_grad():
        module.bn.running_mean.uniform_(-1, 1)
        module.bn.running_var.uniform_(0.5, 2)
        module.bn.weight.uniform_(0.5, 2)
        module.bn.bias.uniform_(-1, 1)
    module.eval()
    x = torch.randn(2, 3, 6, 6)
    want = module(x).detach().numpy()

    def f(x, is_training):
        h = hk.Conv2D(4, 3, padding="VALID", name="conv")(x)
        return hk.BatchNorm(True, True, 0.9, eps=1e-5, name="bn")(h, is_training)

    net = hk.transform_with_state(f)
    xh = jnp.asarray(x.numpy().transpose(0, 2, 3, 1))
    params, state = tw.load(net.init(jax.random.key(0), xh, True), module)
    out, _ = net.apply(params, state, None, xh, False)
    np.testing.assert_allclose(np.asarray(out).transpose(0, 3, 1, 2), want, rtol=1e-5, atol=1e-5)
    fresh = torch.nn.Sequential()
    fresh.conv, fresh.bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)
    result = fresh.load_state_dict(to_torch(tw.export((params, state))), strict=False)
    assert set(result.missing_keys) <= {"bn.num_batches_tracked"} and not result.unexpected_keys
    np.testing.assert_allclose(fresh.eval()(x).detach().numpy(), want, rtol=1e-5, atol=1e-5)
