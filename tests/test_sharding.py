"""Sharded arrays: `replace` keeps every leaf's sharding, `materialize` creates an abstract
model directly in its shardings, with the same values on any mesh. 8 simulated CPU devices
(tests/conftest.py sets XLA_FLAGS before JAX is imported)."""

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import treewalk as tw
from treewalk._materialize import _Materializer

COLLECTIVES = ("all-gather", "all-to-all", "collective-permute", "all-reduce", "reduce-scatter")
NORMAL = tw.initializer(jax.nn.initializers.normal(1.0))

pytestmark = [
    pytest.mark.multidevice,
    pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices"),
]


def mesh8(axis_type=AxisType.Auto):
    return jax.make_mesh((8,), ("x",), axis_types=(axis_type,))


def mesh24(axis_type=AxisType.Explicit):
    return jax.make_mesh((2, 4), ("data", "model"), axis_types=(axis_type, axis_type))


def collectives(compiled_text):
    return [c for c in COLLECTIVES if c in compiled_text]


def same_values(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def sharded_tree(mesh):
    def put(shape, spec):
        return jax.device_put(jnp.zeros(shape), NamedSharding(mesh, spec))

    return {
        "rows": put((16, 4), P("x", None)),
        "cols": put((16, 8), P(None, "x")),
        "rows2": put((16, 4), P("x", None)),
        "replicated": put((16, 5), P()),
        "bias": put((8,), P("x")),
    }


def specs(tree):
    """Each leaf's spec, with trailing `None`s dropped (`P('x', None)` is `P('x')`)."""
    out = {}
    for k, v in tree.items():
        spec = tuple(v.sharding.spec)
        while spec and spec[-1] is None:
            spec = spec[:-1]
        out[k] = spec
    return out


FNS = {
    "initializer": NORMAL,
    "lambda": lambda path, x, key: jax.random.normal(key, x.shape, x.dtype),
}


def test_threefry_partitionable_is_on():
    # materialize switches it on explicitly; JAX >= 0.5 has it on by default.
    assert jax.config.jax_threefry_partitionable


@pytest.mark.parametrize("fn", FNS.values(), ids=FNS.keys())
@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
def test_replace_eager_keeps_sharding(fn, axis_type):
    mesh = mesh8(axis_type)
    tree = sharded_tree(mesh)
    out = tw.replace(
        tree, tw.name("rows", "cols", "rows2", "replicated"), fn, key=jax.random.key(0)
    )
    assert specs(out) == specs(tree)
    assert out["bias"] is tree["bias"]  # unselected: the same array
    # The values are those of the same replace on unsharded arrays.
    plain = jax.tree.map(lambda x: jnp.zeros(x.shape), tree)
    ref = tw.replace(
        plain, tw.name("rows", "cols", "rows2", "replicated"), fn, key=jax.random.key(0)
    )
    same_values(out, ref)
    zeroed = tw.replace(tree, tw.arrays, tw.ones)
    assert specs(zeroed) == specs(tree)


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
def test_replace_under_jit_keeps_sharding(axis_type):
    mesh = mesh8(axis_type)
    tree = sharded_tree(mesh)
    sel = tw.name("rows", "cols", "rows2", "replicated")
    f = jax.jit(lambda t, k: tw.replace(t, sel, NORMAL, key=k))
    with jax.set_mesh(mesh):  # JAX needs it for Explicit axes; harmless for Auto
        out = f(tree, jax.random.key(0))
        text = f.lower(tree, jax.random.key(0)).compile().as_text()
    assert specs(out) == specs(tree)
    assert collectives(text) == []
    same_values(out, tw.replace(tree, sel, NORMAL, key=jax.random.key(0)))


def test_replace_user_fn_under_jit_auto_mesh():
    # The case the issue names: eqx.tree_at + jax.random.normal loses P('x', None) here.
    mesh = mesh8(AxisType.Auto)
    tree = sharded_tree(mesh)
    f = jax.jit(lambda t, k: tw.replace(t, tw.arrays, FNS["lambda"], key=k))
    out = f(tree, jax.random.key(0))
    assert specs(out) == specs(tree)
    naive = jax.jit(
        lambda t, k: eqx.tree_at(lambda t: t["rows"], t, jax.random.normal(k, (16, 4)))
    )(tree, jax.random.key(0))
    assert naive["rows"].sharding.spec != P("x", None)  # what treewalk fixes


# ---------------------------------------------------------------------------------------
# materialize: Equinox, 100 layers


class Deep(eqx.Module):
    layers: tuple[eqx.nn.Linear, ...]
    head: eqx.nn.Linear

    def __init__(self, depth, width, key):
        keys = jax.random.split(key, depth + 1)
        self.layers = tuple(eqx.nn.Linear(width, width, key=k) for k in keys[:-1])
        self.head = eqx.nn.Linear(width, 8, use_bias=False, key=keys[-1])


DEPTH, WIDTH = 100, 32
INIT = {"**/bias": tw.zeros, "**/weight": NORMAL}


@pytest.fixture(scope="module")
def deep_abstract():
    return eqx.filter_eval_shape(Deep, DEPTH, WIDTH, jax.random.key(0))


def deep_plan(axes):
    a, b = axes
    return {"layers/*/weight": P(a, b), "layers/*/bias": P(a), "head/weight": P(None, b)}


MESHES = {
    "mesh8": lambda: jax.make_mesh((8, 1), ("a", "b"), axis_types=(AxisType.Auto,) * 2),
    "mesh2x4": lambda: jax.make_mesh((2, 4), ("a", "b")),
}


@pytest.fixture(scope="module")
def deep_results(deep_abstract):
    out = {}
    for name, make in MESHES.items():
        mesh = make()
        m = _Materializer(
            deep_abstract,
            INIT,
            plan=deep_plan(("a", "b")),
            mesh=mesh,
            key_policy="path",
            strict=True,
        )
        programs = m.lower(jax.random.key(1))
        # A program per kind of leaf: the layers' weights, their biases, the head.
        assert len(programs) == 3
        text = "\n".join(p.compile().as_text() for p in programs)
        out[name] = (mesh, m(jax.random.key(1)), text)
    return out


@pytest.mark.parametrize("name", MESHES.keys())
def test_materialize_equinox_shardings(deep_results, name):
    mesh, model, text = deep_results[name]
    assert len(model.layers) == DEPTH
    for layer in model.layers:
        assert layer.weight.sharding == NamedSharding(mesh, P("a", "b"))
        assert layer.bias.sharding == NamedSharding(mesh, P("a"))
        assert layer.weight.addressable_shards[0].data.shape == (
            WIDTH // mesh.shape["a"],
            WIDTH // mesh.shape["b"],
        )
    assert model.head.weight.sharding == NamedSharding(mesh, P(None, "b"))
    assert model.head.bias is None
    assert collectives(text) == []
    # No device ever holds a whole sharded weight: its full shape is not in the program.
    if mesh.size > 1:
        assert f"f32[{WIDTH},{WIDTH}]" not in text and f"f32[{DEPTH},{WIDTH},{WIDTH}]" not in text


def test_materialize_equinox_values_independent_of_mesh(deep_abstract, deep_results):
    # One device: the same init done eagerly by `replace` (abstract leaves become arrays).
    one = tw.replace(deep_abstract, "**/bias", tw.zeros)
    one = tw.replace(one, "**/weight", NORMAL, key=jax.random.key(1))
    assert one.layers[0].weight.sharding.device_set == {jax.devices()[0]}
    same_values(one, deep_results["mesh8"][1])
    same_values(one, deep_results["mesh2x4"][1])
    assert not bool((one.layers[0].weight == one.layers[1].weight).all())
    assert bool((one.layers[0].bias == 0).all())


def test_materialize_one_device_mesh():
    abstract = {"w": jax.ShapeDtypeStruct((16, 8), jnp.float32)}
    mesh = jax.make_mesh((1,), ("x",), devices=jax.devices()[:1])
    got = tw.materialize(abstract, NORMAL, key=jax.random.key(0), plan={"w": P("x")}, mesh=mesh)
    assert got["w"].sharding == NamedSharding(mesh, P("x"))
    same_values(got, tw.replace(abstract, "w", NORMAL, key=jax.random.key(0)))


def test_materialize_ignores_global_threefry_setting():
    abstract = {"w": jax.ShapeDtypeStruct((16, 8), jnp.float32)}
    mesh = mesh8()
    ref = tw.materialize(abstract, NORMAL, key=jax.random.key(0), plan={"w": P("x")}, mesh=mesh)
    with jax.threefry_partitionable(False):
        got = tw.materialize(
            abstract, NORMAL, key=jax.random.key(0), plan={"w": P("x")}, mesh=mesh
        )
        assert not jax.config.jax_threefry_partitionable  # restored after the call
    same_values(ref, got)


def test_materialize_leaf_shardings_and_context_mesh():
    mesh = mesh8()
    abstract = {
        "own": jax.ShapeDtypeStruct((16, 4), jnp.float32, sharding=NamedSharding(mesh, P("x"))),
        "spec_only": jax.ShapeDtypeStruct((8, 16), jnp.float32),
        "rest": jax.ShapeDtypeStruct((3,), jnp.float32),
        "keep": jnp.arange(3.0),
        "act": jax.nn.relu,
    }
    with jax.set_mesh(mesh):
        out = tw.materialize(
            abstract, NORMAL, key=jax.random.key(0), plan={"spec_only": (None, "x")}
        )
    assert out["own"].sharding.spec == P("x")
    assert out["spec_only"].sharding == NamedSharding(mesh, P(None, "x"))
    assert out["rest"].sharding == NamedSharding(mesh, P())  # replicated over the mesh
    assert out["keep"] is abstract["keep"] and out["act"] is jax.nn.relu


def test_materialize_errors():
    abstract = {
        "w": jax.ShapeDtypeStruct((8, 8), jnp.float32),
        "b": jax.ShapeDtypeStruct((8,), jnp.float32),
    }
    with pytest.raises(tw.ArgumentError, match="no mesh is known"):
        tw.materialize(abstract, tw.zeros, plan={"w": P("x")})
    with pytest.raises(tw.InitError, match="'b'"):
        tw.materialize(abstract, {"w": tw.zeros})
    with pytest.raises(tw.NoMatchError, match="plan entry"):
        tw.materialize(abstract, tw.zeros, plan={"**/kernel": P("x")}, mesh=mesh8())
    with pytest.raises(tw.ArgumentError, match="needs a key"):
        tw.materialize(abstract, NORMAL)
    with pytest.raises(tw.NoMatchError, match="no jax.ShapeDtypeStruct leaves"):
        tw.materialize({"w": jnp.ones(2)}, tw.zeros)
    assert tw.materialize({"w": jnp.ones(2)}, tw.zeros, strict=False)["w"].tolist() == [1, 1]


def test_materialize_key_kinds_and_split_policy():
    abstract = {
        "w": jax.ShapeDtypeStruct((16, 8), jnp.float32),
        "v": jax.ShapeDtypeStruct((16, 8), jnp.float32),
    }
    kw = dict(plan={"*": P("x")}, mesh=mesh8())
    legacy = tw.materialize(abstract, NORMAL, key=jax.random.PRNGKey(0), **kw)
    typed = tw.materialize(abstract, NORMAL, key=jax.random.key(0), **kw)
    same_values(legacy, typed)
    split = tw.materialize(abstract, NORMAL, key=jax.random.key(0), key_policy="split", **kw)
    same_values(
        split, tw.replace(abstract, "*", NORMAL, key=jax.random.key(0), key_policy="split")
    )
    assert not bool((split["w"] == typed["w"]).all())


def test_materialize_programs_per_kind_of_leaf():
    # torch_default reads each leaf's layer (a bias's fan-in is its weight's): a program
    # per kind of leaf, drawn with each leaf's own key, gives replace's values.
    abstract = eqx.filter_eval_shape(Deep, 6, 16, jax.random.key(0))
    init = tw.init.torch_default()
    m = _Materializer(abstract, init, plan=None, mesh=None, key_policy="path", strict=True)
    assert len(m.lower(jax.random.key(2))) == 3  # layers' weights, their biases, the head
    same_values(m(jax.random.key(2)), tw.replace(abstract, tw.arrays, init, key=jax.random.key(2)))

    # An fn without a signature: its leaves in one program, the same values as replace.
    def scaled(p, x, k):
        return 2 * jax.random.normal(k, x.shape, x.dtype)

    m = _Materializer(abstract, scaled, plan=None, mesh=None, key_policy="split", strict=True)
    assert len(m.lower(jax.random.key(2))) == 1
    want = tw.replace(abstract, tw.arrays, scaled, key=jax.random.key(2), key_policy="split")
    same_values(m(jax.random.key(2)), want)


def test_materialize_program_holds_one_draw_at_a_time():
    # XLA:CPU's default scheduler starts all of a program's draws before any finishes: the
    # temporaries were ~1 leaf each plus a draw's state. treewalk compiles for memory.
    abstract = {f"w{i}": jax.ShapeDtypeStruct((256, 256), jnp.float32) for i in range(8)}

    def normal(p, x, k):  # no signature: the 8 leaves in one program
        return jax.random.normal(k, x.shape, x.dtype)

    m = _Materializer(abstract, normal, plan=None, mesh=None, key_policy="path", strict=True)
    (program,) = m.lower(jax.random.key(0))
    temp = program.compile().memory_analysis().temp_size_in_bytes
    leaf = 256 * 256 * 4
    assert temp <= 4 * leaf, temp / leaf  # the default scheduler's: 10 leaves
    same_values(
        m(jax.random.key(0)), tw.replace(abstract, tw.arrays, normal, key=jax.random.key(0))
    )


def test_materialize_init_of_the_wrong_shape_names_the_leaf():
    abstract = {"enc": {"w": jax.ShapeDtypeStruct((4, 4), jnp.float32)}}
    with pytest.raises(tw.InitError, match=r"enc/w.*shape \(4, 4\)"):
        tw.materialize(abstract, lambda p, x, k: jnp.zeros(3))


# ---------------------------------------------------------------------------------------
# materialize: Flax NNX and linen partitioning metadata


class NNXMLP(nnx.Module):
    def __init__(self, rngs):
        kinit = nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, "model"))
        binit = nnx.with_partitioning(nnx.initializers.zeros_init(), ("model",))
        self.l1 = nnx.Linear(16, 32, kernel_init=kinit, bias_init=binit, rngs=rngs)
        kinit2 = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("model", None))
        self.l2 = nnx.Linear(32, 8, kernel_init=kinit2, rngs=rngs)


NNX_INIT = {"**/bias": tw.zeros, "**/kernel": NORMAL}


def test_materialize_nnx_partitioning():
    results = []
    for mesh in (
        jax.make_mesh((1, 8), ("data", "model"), axis_types=(AxisType.Auto,) * 2),
        mesh24(AxisType.Auto),
    ):
        with jax.set_mesh(mesh):
            abstract = nnx.eval_shape(lambda: NNXMLP(nnx.Rngs(0)))
            model = tw.materialize(abstract, NNX_INIT, key=jax.random.key(2))
        assert isinstance(model.l1.kernel, nnx.Param)
        assert model.l1.kernel.get_metadata()["out_sharding"] == (None, "model")
        assert model.l1.kernel[...].sharding == NamedSharding(mesh, P(None, "model"))
        assert model.l1.bias[...].sharding == NamedSharding(mesh, P("model"))
        assert model.l2.kernel[...].sharding == NamedSharding(mesh, P("model", None))
        assert model.l2.bias[...].sharding == NamedSharding(mesh, P())
        assert isinstance(abstract.l1.kernel.get_value(), jax.ShapeDtypeStruct)  # input untouched
        results.append(nnx.state(model))
    same_values(*results)


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(
            32, kernel_init=nn.with_partitioning(nn.initializers.lecun_normal(), (None, "model"))
        )(x)
        return nn.Dense(
            8, kernel_init=nn.with_partitioning(nn.initializers.lecun_normal(), ("model", None))
        )(x)


def test_materialize_linen_partitioning():
    abstract = jax.eval_shape(LinenMLP().init, jax.random.key(0), jnp.zeros((1, 16)))
    results = []
    for mesh in (mesh24(), jax.make_mesh((1, 8), ("data", "model"))):
        params = tw.materialize(abstract, NNX_INIT, key=jax.random.key(3), mesh=mesh)
        k0 = params["params"]["Dense_0"]["kernel"]
        assert isinstance(k0, nn.Partitioned) and k0.names == (None, "model")
        assert k0.value.sharding == NamedSharding(mesh, P(None, "model"))
        k1 = params["params"]["Dense_1"]["kernel"]
        assert k1.value.sharding == NamedSharding(mesh, P("model", None))
        assert params["params"]["Dense_0"]["bias"].sharding == NamedSharding(mesh, P())
        results.append(params)
    same_values(*results)
    assert float(jnp.std(results[0]["params"]["Dense_0"]["kernel"].value)) > 0.5
