"""`tw.load` into sharded and abstract-sharded destinations on 8 simulated CPU devices
(tests/conftest.py sets XLA_FLAGS before JAX is imported; run alone, this file still gets
them from conftest): the values equal the unsharded load, each leaf in its sharding."""

import logging

import equinox as eqx
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


def _abstract(tree, mesh, spec_of):
    """`tree`'s arrays as abstract leaves in `NamedSharding(mesh, spec_of(leaf))`."""

    def leaf(x):
        if not isinstance(x, jax.ShapeDtypeStruct | jax.Array):
            return x
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, spec_of(x)))

    return jax.tree_util.tree_map(leaf, tree)


def _held_bytes(tree):
    """The bytes of the distinct shards this process's devices hold, over every array."""
    out = 0
    for x in jax.tree_util.tree_leaves(tree):
        if isinstance(x, jax.Array):
            out += sum(
                s.data.nbytes for s in {str(s.index): s for s in x.addressable_shards}.values()
            )
    return out


def _bytes_read(caplog, load):
    """`load()`, and the bytes it read, from `tw.load`'s debug record."""
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="treewalk"):
        out = load()
    (record,) = [r for r in caplog.records if r.msg.startswith("tw.load: read")]
    return out, record.args[0]


def test_a_shard_two_devices_hold_is_read_once(checkpoint, caplog):
    # A (4, 2) mesh: P("data") puts each quarter on the two devices of a "model" row.
    sd, path = checkpoint
    mesh = jax.make_mesh((4, 2), ("data", "model"))
    plain = {"fc": {"weight": jnp.zeros((8, 16)), "bias": jnp.zeros(8)}}
    want = tw.load(plain, {"fc.weight": sd["fc.weight"], "fc.bias": sd["fc.bias"]})
    source = path.parent / "fc.safetensors"
    save_file({"fc.weight": sd["fc.weight"], "fc.bias": sd["fc.bias"]}, str(source))
    for spec in (P("data"), P("model"), P(), P(None, ("data", "model"))):
        abstract = _abstract(plain, mesh, lambda x, spec=spec: P(*spec[: x.ndim]))
        got, read = _bytes_read(caplog, lambda a=abstract: tw.load(a, source))
        jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)
        assert read == _held_bytes(got) == (8 * 16 + 8) * 4, spec  # each element once


def _conv_file(tmp_path):
    rng = np.random.default_rng(1)
    sd = {
        # eqx.nn.Conv2d(4, 8, 2): its bias is (8, 1, 1), the file's (8,)
        "conv.weight": rng.normal(size=(8, 4, 2, 2)).astype(np.float32),
        "conv.bias": rng.normal(size=8).astype(np.float32),
        # eqx.nn.ConvTranspose2d(8, 4, 4): torch (in, out, kh, kw), flipped on the way
        "up.weight": rng.normal(size=(8, 4, 4, 4)).astype(np.float32),
        "up.bias": rng.normal(size=4).astype(np.float32),
        # eqx.nn.MultiheadAttention(2, 8): q, k, v are rows of the packed projection
        "attn.in_proj_weight": rng.normal(size=(24, 8)).astype(np.float32),
        "attn.in_proj_bias": rng.normal(size=24).astype(np.float32),
        "attn.out_proj.weight": rng.normal(size=(8, 8)).astype(np.float32),
        "attn.out_proj.bias": rng.normal(size=8).astype(np.float32),
    }
    path = tmp_path / "layers.safetensors"
    save_file(sd, str(path))
    return path


class Layers(eqx.Module):
    conv: eqx.nn.Conv2d
    up: eqx.nn.ConvTranspose2d
    attn: eqx.nn.MultiheadAttention

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv = eqx.nn.Conv2d(4, 8, 2, key=k1)
        self.up = eqx.nn.ConvTranspose2d(8, 4, 4, key=k2)
        bias = dict.fromkeys(("query", "key", "value", "output"), True)
        self.attn = eqx.nn.MultiheadAttention(
            2, 8, **{f"use_{k}_bias": v for k, v in bias.items()}, key=k3
        )


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_converted_shards_are_read_as_parts(tmp_path, caplog, axis):
    # A reshaped bias, a flipped and transposed kernel, rows of a packed projection: each
    # device's shard is read as only the part of the source it comes from.
    path = _conv_file(tmp_path)
    abstract = eqx.filter_eval_shape(Layers, jax.random.key(0))
    want = tw.load(abstract, path, convention="torch")
    mesh = jax.make_mesh((4, 2), ("a", "b"))

    def spec(x):  # the axis `axis`, else the first that 4 divides
        fits = [a for a in range(x.ndim) if x.shape[a] % 4 == 0]
        axes: list[str | None] = [None] * x.ndim
        axes[axis if axis in fits else fits[0]] = "a"
        return P(*axes)

    got, read = _bytes_read(
        caplog, lambda: tw.load(_abstract(abstract, mesh, spec), path, convention="torch")
    )
    got_arrays, want_arrays = (
        jax.tree_util.tree_leaves(eqx.filter(m, eqx.is_array)) for m in (got, want)
    )
    for g, w in zip(got_arrays, want_arrays, strict=True):
        assert len({str(s.index) for s in g.addressable_shards}) == 4
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    assert read == _held_bytes(got)


def test_a_sharded_tie_is_checked_shard_by_shard(tmp_path):
    mesh = jax.make_mesh((8,), ("x",))
    w = jax.device_put(jnp.zeros((8, 4)), NamedSharding(mesh, P("x")))
    tied = {"embed": w, "head": w}
    value = np.arange(32, dtype=np.float32).reshape(8, 4)
    other = value.copy()
    other[7, 3] = -1  # differs in the last device's shard only
    got = tw.load(tied, {"embed": value, "head": value})
    assert got["embed"] is got["head"]
    np.testing.assert_array_equal(np.asarray(got["head"]), value)
    with pytest.raises(tw.LoadError, match="'head' and 'embed' are one array"):
        tw.load(tied, {"embed": value, "head": other})
