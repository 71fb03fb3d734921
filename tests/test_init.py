"""tw.init: fans from the layer, layouts, batched draws, frameworks' defaults, bad input."""

import math

import equinox as eqx
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import treewalk as tw
from treewalk._core.node import Node
from treewalk.init._layout import axes_of, weight_fans

FAN_BASED = [
    tw.init.lecun_normal,
    tw.init.lecun_uniform,
    tw.init.he_normal,
    tw.init.he_uniform,
    tw.init.glorot_normal,
    tw.init.glorot_uniform,
    tw.init.torch_default,
]


def _leaves_var(x):
    return float(np.var(np.asarray(x, np.float64)))


def _amax(x):
    return float(np.abs(np.asarray(x, np.float64)).max())


# ----------------------------------------------------------------------------- layouts


@pytest.mark.parametrize(
    "shape, layout, fans",
    [
        ((3, 5), "oi", (5, 3)),
        ((3, 5), "io", (3, 5)),
        ((3, 5), "kio", (3, 5)),
        ((4, 6, 3, 3), "oik", (54, 36)),
        ((3, 3, 6, 4), "kio", (54, 36)),
        ((7, 6, 4), "kio", (42, 28)),
        ((3, 5), "oik", (5, 3)),
    ],
)
def test_weight_fans(shape, layout, fans):
    assert weight_fans(shape, layout) == fans


def test_layout_mismatch_is_none():
    assert axes_of("oi", 3) is None and axes_of("kio", 1) is None


def test_bias_fan_in_is_the_layers_in_every_framework(getkey):
    """The bias of each kind of layer gets the fan-in of its own layer's weight."""
    init = tw.init.variance_scaling(1.0, "fan_in", "normal", layout=None)
    eqx_lin = eqx.nn.Linear(4, 3000, key=getkey())  # weight (3000, 4): fan_in 4
    eqx_conv = eqx.nn.Conv2d(2, 3000, 3, key=getkey())  # bias (3000, 1, 1): fan_in 18
    nnx_lin = nnx.Linear(9, 3000, rngs=nnx.Rngs(0))  # kernel (9, 3000)
    nnx_conv = nnx.Conv(2, 3000, (2, 2), rngs=nnx.Rngs(0))  # kernel (2, 2, 2, 3000): 8
    haiku = {"conv": {"w": jnp.zeros((3, 3, 1, 3000)), "b": jnp.zeros(3000)}}
    linen = {"Dense_0": {"kernel": jnp.zeros((16, 3000)), "bias": jnp.zeros(3000)}}
    cases = [
        (eqx_lin, lambda t: t.bias, 4),
        (eqx_conv, lambda t: t.bias, 18),
        (nnx_lin, lambda t: t.bias[...], 9),
        (nnx_conv, lambda t: t.bias[...], 8),
        (haiku, lambda t: t["conv"]["b"], 9),
        (linen, lambda t: t["Dense_0"]["bias"], 16),
    ]
    for tree, get, fan_in in cases:
        out = tw.replace(tree, tw.name("bias", "b"), init, key=getkey())
        assert _leaves_var(get(out)) == pytest.approx(1 / fan_in, rel=0.1), type(tree)


def test_linen_partitioned_sibling_is_unboxed(getkey):
    import flax.linen as nn

    params = {
        "Dense_0": {
            "kernel": nn.Partitioned(jnp.zeros((25, 2000)), names=(None, "model")),
            "bias": jnp.zeros(2000),
        }
    }
    out = tw.replace(params, tw.arrays, tw.init.lecun_normal(), key=getkey())
    assert isinstance(out["Dense_0"]["kernel"], nn.Partitioned)
    assert out["Dense_0"]["kernel"].names == (None, "model")
    assert _leaves_var(out["Dense_0"]["bias"]) == pytest.approx(1 / 25, rel=0.1)
    assert _leaves_var(out["Dense_0"]["kernel"].value) == pytest.approx(1 / 25, rel=0.05)


def test_layout_and_fan_overrides(getkey):
    tree = {"w": jnp.zeros((100, 7))}
    out = tw.replace(tree, tw.arrays, tw.init.he_normal(layout="io"), key=getkey())
    assert _leaves_var(out["w"]) == pytest.approx(2 / 100, rel=0.15)
    out = tw.replace(tree, tw.arrays, tw.init.he_normal(layout="oi"), key=getkey())
    assert _leaves_var(out["w"]) == pytest.approx(2 / 7, rel=0.15)
    out = tw.replace(tree, tw.arrays, tw.init.he_normal(fan_in=50), key=getkey())
    assert _leaves_var(out["w"]) == pytest.approx(2 / 50, rel=0.15)
    scale = {"scale": jnp.zeros(5000)}
    out = tw.replace(scale, tw.arrays, tw.init.lecun_uniform(fan_in=3), key=getkey())
    assert _leaves_var(out["scale"]) == pytest.approx(1 / 3, rel=0.1)


def test_haiku_model_params(getkey):
    def f(x):
        return hk.nets.MLP([300, 2])(x)

    net = hk.without_apply_rng(hk.transform(f))
    params = net.init(jax.random.key(0), jnp.zeros((1, 12)))
    out = tw.replace(params, tw.arrays, tw.init.torch_default(), key=getkey())
    b0 = out["mlp/~/linear_0"]["b"]
    assert _amax(b0) <= 12**-0.5 and _amax(b0) > 0.25
    w1 = out["mlp/~/linear_1"]["w"]
    assert _amax(w1) <= 300**-0.5


# ----------------------------------------------------------------------- frameworks' own


def test_torch_default_matches_equinox_linear_and_conv(getkey):
    lin = eqx.nn.Linear(50, 400, key=getkey())
    conv = eqx.nn.Conv2d(8, 300, 3, key=getkey())
    for layer, fan_in in [(lin, 50), (conv, 72)]:
        ours = tw.replace(layer, tw.arrays, tw.init.torch_default(), key=getkey())
        lim = 1 / math.sqrt(fan_in)
        for leaf in ("weight", "bias"):
            theirs, mine = getattr(layer, leaf), getattr(ours, leaf)
            assert mine.shape == theirs.shape and mine.dtype == theirs.dtype
            # same family and bounds: uniform on [-lim, lim], variance lim^2 / 3
            for x in (theirs, mine):
                assert _amax(x) <= lim
                assert _amax(x) > 0.9 * lim
                assert _leaves_var(x) == pytest.approx(lim**2 / 3, rel=0.15)
            assert not jnp.array_equal(mine, theirs)


def test_lecun_normal_matches_nnx_default(getkey):
    lin = nnx.Linear(300, 500, rngs=nnx.Rngs(0))  # NNX's default kernel init is lecun_normal
    ours = tw.replace(lin, "kernel", tw.init.lecun_normal(), key=getkey())
    theirs = nnx.initializers.lecun_normal()(getkey(), (300, 500))
    a, b = np.asarray(ours.kernel[...]), np.asarray(theirs)
    assert np.std(a) == pytest.approx(np.std(b), rel=0.02)
    assert np.std(a) == pytest.approx(300**-0.5, rel=0.02)
    # truncated at two standard deviations of the untruncated normal
    bound = 2 * 300**-0.5 / 0.87962566103423978
    assert _amax(a) <= bound and _amax(b) <= bound
    assert not np.array_equal(np.asarray(lin.kernel[...]), a)  # the input is untouched


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (tw.init.normal(0.3), jax.nn.initializers.normal(0.3)),
        (tw.init.uniform(0.7), jax.nn.initializers.uniform(0.7)),
        (tw.init.truncated_normal(0.2), jax.nn.initializers.truncated_normal(0.2)),
        (tw.init.lecun_normal(), jax.nn.initializers.lecun_normal()),
        (tw.init.he_uniform(), jax.nn.initializers.he_uniform()),
        (tw.init.glorot_normal(), jax.nn.initializers.glorot_normal()),
        (tw.init.orthogonal(1.5), jax.nn.initializers.orthogonal(1.5)),
    ],
)
def test_same_values_as_jax_on_kio_kernels(ours, theirs, getkey):
    """On a (in, out) kernel, tw.init draws what jax.nn.initializers draws with that key."""
    key = getkey()
    kernel = jnp.zeros((6, 4))
    (path,) = tw.paths({"kernel": kernel}, "kernel")
    n = Node(path, kernel, None, None)
    mine = ours.tw_call(n, key)
    assert jnp.allclose(mine, theirs(key, (6, 4), jnp.float32), atol=1e-6)


def test_orthogonal_uses_the_layers_out_axis(getkey):
    lin = eqx.nn.Linear(16, 4, key=getkey())  # weight (4, 16): rows are outputs
    w = tw.replace(lin, "weight", tw.init.orthogonal(), key=getkey()).weight
    assert jnp.allclose(w @ w.T, jnp.eye(4), atol=1e-5)
    k = tw.replace(nnx.Linear(16, 4, rngs=nnx.Rngs(0)), "kernel", tw.init.orthogonal(),
                   key=getkey()).kernel[...]  # fmt: skip
    assert jnp.allclose(k.T @ k, jnp.eye(4), atol=1e-5)


# ----------------------------------------------------------------------------- batching


class _Spy:
    """Forwards the fn protocol to `init` and counts batched calls."""

    needs_key = True

    def __init__(self, init, batched):
        self.init, self.batches = init, []
        if batched:
            self.tw_signature = init.tw_signature
            self.tw_batched = self._batched

    def _batched(self, nodes, keys, signature):
        self.batches.append(len(nodes))
        return self.init.tw_batched(nodes, keys, signature)

    def tw_call(self, n, key):
        return self.init.tw_call(n, key)

    def __call__(self, path, node, key):
        return self.init(path, node, key)


def _stack(depth_in):
    """Layers of equal shapes but different fan-ins for the biases."""
    layers = [{"kernel": jnp.zeros((fi, 8)), "bias": jnp.zeros(8)} for fi in depth_in]
    layers.append({"weight": jnp.zeros((8, 8)), "bias": jnp.zeros(8)})  # dict: unknown
    return layers


@pytest.mark.parametrize("init", [tw.init.torch_default(), tw.init.lecun_normal()])
def test_batched_equals_leaf_by_leaf(init, getkey):
    tree = [{"kernel": jnp.zeros((4 if i % 2 else 16, 8)), "bias": jnp.zeros(8)} for i in range(4)]
    key = getkey()
    batched = _Spy(init, batched=True)
    single = _Spy(init, batched=False)
    a = tw.replace(tree, tw.arrays, batched, key=key)
    b = tw.replace(tree, tw.arrays, single, key=key)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert sum(batched.batches) == 8 and len(batched.batches) >= 2
    # fan-based: biases of layers with fan-in 4 and 16 are not drawn in one batch
    assert len(batched.batches) == 4
    small = [t["bias"] for t in a[1::2]]
    big = [t["bias"] for t in a[0::2]]
    assert np.std(np.stack(small)) > 1.5 * np.std(np.stack(big))


def test_batched_under_jit(getkey):
    tree = [{"kernel": jnp.zeros((4, 8)), "bias": jnp.zeros(8)} for _ in range(5)]
    key = getkey()
    f = jax.jit(lambda t, k: tw.replace(t, tw.arrays, tw.init.he_uniform(), key=k))
    a, b = f(tree, key), tw.replace(tree, tw.arrays, tw.init.he_uniform(), key=key)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert jnp.allclose(x, y, atol=1e-6)


def test_weight_and_bias_get_different_keys(getkey):
    tree = {"l": {"kernel": jnp.zeros((1, 64)), "bias": jnp.zeros(64)}}
    out = tw.replace(tree, tw.arrays, tw.init.lecun_uniform(), key=getkey())
    assert not jnp.allclose(out["l"]["kernel"][0], out["l"]["bias"])


def test_shape_dtype_struct_and_bf16(getkey):
    abstract = eqx.filter_eval_shape(eqx.nn.Linear, 10, 20, key=jax.random.key(0))
    out = tw.replace(abstract, tw.arrays, tw.init.torch_default(), key=getkey())
    assert isinstance(out.bias, jax.Array) and _amax(out.bias) <= 10**-0.5
    tree = {"kernel": jnp.zeros((64, 64), jnp.bfloat16), "bias": jnp.zeros(64, jnp.bfloat16)}
    out = tw.replace(tree, tw.arrays, tw.init.glorot_uniform(), key=getkey())
    assert out["kernel"].dtype == jnp.bfloat16 and out["bias"].dtype == jnp.bfloat16


# ----------------------------------------------------------------------------- bad input


def _raises(tree, init, *words):
    with pytest.raises(tw.InitError) as info:
        tw.replace(tree, tw.arrays, init, key=jax.random.key(0))
    msg = str(info.value)
    for w in words:
        assert w in msg, msg
    return msg


@pytest.mark.parametrize("make", FAN_BASED)
def test_norm_scale_is_an_error(make):
    ln = eqx.nn.LayerNorm(5)
    _raises(ln, make(), "'weight'", "1-D", "not the bias of a layer", "fan_in=")


def test_unknown_layout_says_how():
    msg = _raises({"enc": {"weight": jnp.zeros((3, 4))}}, tw.init.he_normal(), "'enc/weight'")
    assert "layout='oi'" in msg and "fan_in=" in msg
    _raises({"enc": {"weight": jnp.zeros((3, 4)), "bias": jnp.zeros(3)}}, tw.init.he_normal(),
            "'enc/bias'", "layout is unknown")  # fmt: skip
    _raises({"kernel": jnp.zeros(3)}, tw.init.orthogonal(), "'kernel'", "at least 2 axes")


def test_layout_that_does_not_fit():
    _raises({"w": jnp.zeros((2, 3, 4))}, tw.init.he_normal(layout="oi"), "does not fit")
    with pytest.raises(tw.ArgumentError, match="not a weight layout"):
        tw.init.he_normal(layout="oo")


@pytest.mark.parametrize(
    "dtype, word", [(jnp.int32, "int32"), (jnp.bool_, "bool"), (jnp.complex64, "complex")]
)
def test_non_float_dtypes(dtype, word):
    tree = {"kernel": jnp.zeros((3, 4), dtype)}
    for init in (tw.init.he_normal(), tw.init.normal(), tw.init.torch_default()):
        _raises(tree, init, "'kernel'", word)


def test_scalars_and_python_numbers():
    _raises({"s": jnp.zeros(())}, tw.init.lecun_normal(), "'s'", "scalar")
    with pytest.raises(tw.InitError, match="'s'.*float"):
        tw.replace({"s": 1.0}, "s", tw.init.normal(), key=jax.random.key(0))
    out = tw.replace({"s": jnp.zeros(())}, tw.arrays, tw.init.normal(1.0), key=jax.random.key(0))
    assert out["s"].shape == () and float(out["s"]) != 0


def test_zero_size_is_skipped():
    tree = {"l": {"kernel": jnp.zeros((0, 4)), "bias": jnp.zeros(4)}, "e": jnp.zeros((0, 3))}
    out = tw.replace(tree, "e", tw.init.normal(), key=jax.random.key(0))
    assert out["e"].shape == (0, 3)
    out = tw.replace(tree, "l/kernel", tw.init.he_normal(), key=jax.random.key(0))
    assert out["l"]["kernel"].shape == (0, 4)
    _raises(tree["l"], tw.init.he_normal(), "'bias'", "fan_in is 0")


def test_needs_a_key():
    with pytest.raises(tw.ArgumentError, match="key"):
        tw.replace({"kernel": jnp.zeros((2, 2))}, tw.arrays, tw.init.he_normal())


def test_bad_arguments():
    with pytest.raises(tw.ArgumentError, match="mode"):
        tw.init.variance_scaling(1.0, "fan_middle")  # type: ignore[arg-type]
    with pytest.raises(tw.ArgumentError, match="distribution"):
        tw.init.variance_scaling(1.0, "fan_in", "cauchy")  # type: ignore[arg-type]
    with pytest.raises(tw.ArgumentError, match="scale"):
        tw.init.variance_scaling(0.0)


def test_bad_numbers():
    with pytest.raises(tw.ArgumentError, match="stddev must be a number"):
        tw.init.normal("wide")  # type: ignore[arg-type]
    with pytest.raises(tw.ArgumentError, match="fan_in must be a positive integer"):
        tw.init.he_normal(fan_in=0)
    with pytest.raises(tw.ArgumentError, match="column_axis must be an integer"):
        tw.init.orthogonal(column_axis=1.5)  # type: ignore[arg-type]


def test_reprs():
    assert repr(tw.init.he_normal()) == "tw.init.he_normal()"
    assert repr(tw.init.lecun_normal(layout="oi")) == "tw.init.lecun_normal(layout='oi')"
    assert repr(tw.init.torch_default(fan_in=3)) == "tw.init.torch_default(fan_in=3)"
    vs = tw.init.variance_scaling(2.0, "fan_in", "normal")
    assert repr(vs) == "tw.init.variance_scaling(2.0, 'fan_in', 'normal')"
    assert repr(tw.init.orthogonal(column_axis=0)) == "tw.init.orthogonal(column_axis=0)"
    # A closure has no name to evaluate: its repr is still valid Python.
    compile(repr(tw.initializer(jax.nn.initializers.normal(0.02))), "<repr>", "eval")


# Every public initialiser, each argument set to something other than its default.
ROUND_TRIP = [
    tw.init.variance_scaling(2.0, "fan_avg", "uniform", layout="io", fan_in=3, fan_out=5),
    tw.init.variance_scaling(0.5, distribution="normal"),
    tw.init.lecun_normal(mode="fan_out", layout="oi", fan_in=3, fan_out=5),
    tw.init.lecun_uniform(mode="fan_avg", layout="io", fan_in=7, fan_out=2),
    tw.init.he_normal(mode="fan_avg", layout="kio", fan_in=3, fan_out=3),
    tw.init.he_uniform(mode="fan_out", layout="oi", fan_in=1, fan_out=4),
    tw.init.glorot_normal(mode="fan_in", layout="io", fan_in=2, fan_out=9),
    tw.init.glorot_uniform(mode="fan_out", layout="oi", fan_in=6, fan_out=6),
    tw.init.torch_default(layout="oi", fan_in=5),
    tw.init.normal(0.02),
    tw.init.uniform(0.5),
    tw.init.truncated_normal(0.1, -1.5, 3.0),
    tw.init.orthogonal(2.0, layout="io"),
    tw.init.orthogonal(0.5, column_axis=0),
    tw.zeros,
    tw.ones,
    tw.constant(0.5),
    tw.constant(-3),
    tw.constant(float("-inf")),
    tw.initializer(jax.nn.initializers.zeros),
]


@pytest.mark.parametrize("init", ROUND_TRIP, ids=repr)
def test_repr_round_trips(init):
    again = eval(repr(init), {"tw": tw, "jax": jax})
    assert again == init and hash(again) == hash(init) and repr(again) == repr(init)
    tree = {"kernel": jnp.zeros((4, 4))}  # square: every layout and column axis fits
    want = tw.replace(tree, tw.arrays, init, key=jax.random.key(0))["kernel"]
    got = tw.replace(tree, tw.arrays, again, key=jax.random.key(0))["kernel"]
    assert jnp.array_equal(want, got)


def test_round_trip_list_covers_every_initialiser():
    data_driven = {"Initializer", "LayerStats", "empirical", "layer_stats"}
    names = {repr(init).split("(")[0].rsplit(".", 1)[-1] for init in ROUND_TRIP}
    assert set(tw.init.__all__) - data_driven <= names


def test_equality_is_by_value():
    assert tw.init.he_normal() == tw.init.variance_scaling(2.0)  # the same draws
    assert tw.init.he_normal() != tw.init.he_normal(mode="fan_out")
    assert tw.init.orthogonal(column_axis=0) != tw.init.orthogonal(column_axis=1)
    assert tw.constant(0.0) != tw.constant(-0.0) and tw.constant(0) == tw.zeros
    assert len({tw.init.normal(0.1), tw.init.normal(0.1), tw.init.uniform(0.1)}) == 2
