"""`tw.load` into sharded and abstract-sharded destinations on 8 simulated CPU devices
(tests/conftest.py sets XLA_FLAGS before JAX is imported; run alone, this file still gets
them from conftest): the values equal the unsharded load, each leaf in its sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from safetensors.numpy import save_file

import treewalk as tw

pytestmark = [
    pytest.mark.multidevice,
    pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices"),
]


def specs_equal(a, b):
    assert a.is_equivalent_to(b, 2) or a == b


@pytest.fixture
def checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    sd = {
        "fc.weight": rng.normal(size=(8, 16)).astype(np.float32),  # torch (out, in)
        "fc.bias": rng.normal(size=8).astype(np.float32),
        "norm.weight": rng.normal(size=8).astype(np.float32),
        "norm.bias": rng.normal(size=8).astype(np.float32),
    }
    path = tmp_path / "sd.safetensors"
    save_file(sd, str(path))
    return sd, path


def test_sharded_destination_gets_each_array_in_its_sharding(checkpoint):
    sd, path = checkpoint
    mesh = jax.make_mesh((8,), ("x",))

    def put(shape, spec):
        return jax.device_put(jnp.zeros(shape), NamedSharding(mesh, spec))

    sharded = {
        "fc": {"kernel": put((16, 8), P("x", None)), "bias": put((8,), P("x"))},
        "norm": {"scale": put((8,), P()), "bias": put((8,), P("x"))},
    }
    cols = {"fc": {"kernel": put((16, 8), P(None, "x")), "bias": put((8,), P())}}
    plain = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape), sharded)
    want = tw.load(plain, sd, convention="torch")
    np.testing.assert_array_equal(want["fc"]["kernel"], sd["fc.weight"].T)
    for source in (sd, path):
        got = tw.load(sharded, source, convention="torch")
        for g, w, s in zip(*map(jax.tree_util.tree_leaves, (got, want, sharded)), strict=True):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
            specs_equal(g.sharding, s.sharding)
            assert len(g.addressable_shards) == 8
        with pytest.warns(tw.LoadWarning):
            got = tw.load(cols, source, convention="torch", strict=False)
        np.testing.assert_array_equal(np.asarray(got["fc"]["kernel"]), sd["fc.weight"].T)
        specs_equal(got["fc"]["kernel"].sharding, cols["fc"]["kernel"].sharding)
        assert got["fc"]["kernel"].addressable_shards[0].data.shape == (16, 1)


def test_abstract_sharded_destinations(checkpoint):
    sd, path = checkpoint
    mesh = jax.make_mesh((8,), ("x",))
    sharding = NamedSharding(mesh, P(None, "x"))
    abstract = {
        "fc": {
            "kernel": jax.ShapeDtypeStruct((16, 8), jnp.float32, sharding=sharding),
            "bias": jax.ShapeDtypeStruct((8,), jnp.float32),
        }
    }
    with pytest.warns(tw.LoadWarning):
        got = tw.load(abstract, path, convention="torch", strict=False)
    np.testing.assert_array_equal(np.asarray(got["fc"]["kernel"]), sd["fc.weight"].T)
    specs_equal(got["fc"]["kernel"].sharding, sharding)
    np.testing.assert_array_equal(np.asarray(got["fc"]["bias"]), sd["fc.bias"])

    # NNX: the partitioning is metadata on the Param boxes; `mesh=` places it.
    init = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("x", None))
    with jax.set_mesh(mesh):
        model = nnx.eval_shape(lambda: nnx.Linear(16, 8, kernel_init=init, rngs=nnx.Rngs(0)))
    fc = {k[3:]: v for k, v in sd.items() if k.startswith("fc.")}
    for loaded in (
        tw.load(model, fc, convention="torch", mesh=mesh),
        _under(mesh, lambda: tw.load(model, fc, convention="torch")),
    ):
        assert type(loaded.kernel) is nnx.Param
        np.testing.assert_array_equal(np.asarray(loaded.kernel[...]), sd["fc.weight"].T)
        specs_equal(loaded.kernel[...].sharding, NamedSharding(mesh, P("x", None)))


def _under(mesh, fn):
    with jax.set_mesh(mesh):
        return fn()
