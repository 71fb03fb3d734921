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
