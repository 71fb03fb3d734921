"""The helpers (`tw.zeros`, `tw.ones`, `tw.constant`, `tw.initializer`, `tw.key_for_path`)
and `tw.init` on numpy leaves: a leaf keeps its kind and dtype, a value its dtype cannot
hold is an error, and the documented objects are documented."""

import inspect
import pydoc

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import treewalk as tw
import treewalk.init
from treewalk._core.node import Node

KEY = jax.random.key(0)
NUMPY_DTYPES = [np.float64, np.float32, np.complex128, np.int32, np.bool_]


# ------------------------------------------------------------------- kinds and dtypes


@pytest.mark.parametrize("fn", [tw.zeros, tw.ones, tw.constant(1)], ids=repr)
@pytest.mark.parametrize("dtype", NUMPY_DTYPES, ids=lambda d: np.dtype(d).name)
def test_fills_keep_a_numpy_leafs_kind_and_dtype(fn, dtype):
    # Two numpy leaves of one shape (drawn as a batch), one alone, one JAX leaf of the
    # same shape (never batched with the numpy ones), one numpy scalar.
    tree = {
        "a": np.zeros((2, 3), dtype),
        "b": np.zeros((2, 3), dtype),
        "c": np.zeros(4, dtype),
        "j": jnp.zeros((2, 3)),
        "s": np.zeros((), dtype)[()],
    }
    out = tw.replace(tree, tw.arrays | "s", fn)
    for k in "abc":
        assert type(out[k]) is np.ndarray and out[k].dtype == dtype, k
        np.testing.assert_array_equal(out[k], np.full(tree[k].shape, fn.value, dtype))
    assert isinstance(out["s"], np.generic) and out["s"].dtype == dtype
    assert isinstance(out["j"], jax.Array) and out["j"].dtype == jnp.float32
    assert (out["j"] == fn.value).all()


def test_fills_keep_python_numbers_and_jax_leaves():
    out = tw.replace({"n": 3, "f": 2.5, "c": 1j, "x": jnp.ones(2, jnp.bfloat16)},
                     tw.inside(dict), tw.zeros)  # fmt: skip
    assert out["n"] == 0 and type(out["n"]) is int
    assert out["f"] == 0.0 and type(out["f"]) is float
    assert out["c"] == 0j and type(out["c"]) is complex
    assert out["x"].dtype == jnp.bfloat16 and isinstance(out["x"], jax.Array)


def test_fills_of_many_jax_leaves_are_separate_buffers_of_their_dtype():
    """Eagerly, same-shape JAX leaves are filled on the host and put on the device in one
    call: each result is its own buffer (donating one leaves the others intact), of the
    leaf's dtype and device, and equal to what a traced call makes."""
    tree = {
        f"l{i}": {"bias": jnp.full(3, 7, jnp.bfloat16), "w": jnp.ones((2, 2))} for i in range(4)
    }
    out = tw.replace(tree, "**/bias", tw.constant(2.0))
    jitted = jax.jit(lambda t: tw.replace(t, "**/bias", tw.constant(2.0)))(tree)
    for i in range(4):
        bias = out[f"l{i}"]["bias"]
        assert bias.dtype == jnp.bfloat16 and bias.shape == (3,)
        assert bias.devices() == tree[f"l{i}"]["bias"].devices()
        np.testing.assert_array_equal(bias, jitted[f"l{i}"]["bias"])
        assert out[f"l{i}"]["w"] is tree[f"l{i}"]["w"]
    jax.jit(lambda x: x + 1, donate_argnums=0)(out["l0"]["bias"])
    assert (out["l1"]["bias"] == 2).all() and (out["l3"]["bias"] == 2).all()


def test_keys_of_leaves_drawn_one_by_one_match_key_for_path():
    """Big leaves are drawn one by one (their keys cut from the call's key array), small
    ones in a batch: every leaf still gets the key of its own path, legacy keys too."""
    tree = {"big": {"w": jnp.zeros((128, 64)), "v": jnp.zeros((128, 64))},
            "small": {"w": jnp.zeros(3), "v": jnp.zeros(3)}}  # fmt: skip
    for key in (jax.random.key(3), jax.random.PRNGKey(3)):
        out = tw.replace(tree, tw.arrays, tw.init.normal(1.0), key=key)
        for path in (("big", "w"), ("big", "v"), ("small", "w"), ("small", "v")):
            k = tw.key_for_path(key, path)
            want = tw.init.normal(1.0)(path, tree[path[0]][path[1]], k)
            np.testing.assert_array_equal(out[path[0]][path[1]], want)


def _draw(path, x, key):
    return jax.random.normal(key, x.shape, jnp.float32)


@pytest.mark.parametrize(
    "fn",
    [tw.initializer(jax.nn.initializers.normal(1.0)), tw.init.normal(1.0), tw.init.he_normal()],
    ids=repr,
)
def test_random_init_of_a_numpy_float64_leaf(fn):
    """x64 off: drawn by JAX in float32 (the same values a float32 JAX leaf at that path
    gets), returned as a numpy float64 array."""
    shape = (6, 5)
    leaves = {"a": np.zeros(shape), "b": np.zeros(shape)}  # batched when fn can
    got = tw.replace({"l": {"kernel": leaves["a"], "k": leaves["b"]}}, "l/kernel", fn, key=KEY)
    ref = tw.replace({"l": {"kernel": jnp.zeros(shape)}}, "l/kernel", fn, key=KEY)
    kernel = got["l"]["kernel"]
    assert type(kernel) is np.ndarray and kernel.dtype == np.float64
    np.testing.assert_array_equal(kernel, np.asarray(ref["l"]["kernel"]).astype(np.float64))
    assert kernel.std() > 0


def test_random_init_of_many_numpy_leaves_is_batched_and_numpy():
    tree = [{"kernel": np.zeros((4, 3)), "bias": np.zeros(3, np.float32)} for _ in range(3)]
    out = tw.replace(tree, tw.arrays, tw.init.lecun_uniform(), key=KEY)
    for layer in out:
        assert type(layer["kernel"]) is np.ndarray and layer["kernel"].dtype == np.float64
        assert type(layer["bias"]) is np.ndarray and layer["bias"].dtype == np.float32
        assert np.abs(layer["bias"]).max() <= 1.0  # sqrt(3 / fan_in 3)
    assert not np.array_equal(out[0]["kernel"], out[1]["kernel"])


def test_complex128_numpy_leaf_with_a_complex_initializer():
    tree = {"w": np.zeros((3, 3), np.complex128)}
    out = tw.replace(tree, "w", tw.initializer(jax.nn.initializers.normal(1.0)), key=KEY)
    assert type(out["w"]) is np.ndarray and out["w"].dtype == np.complex128
    assert np.abs(out["w"].imag).max() > 0


def test_with_x64_on_numpy_float64_gets_float64_draws():
    with jax.enable_x64(True):
        shape = (4, 4)
        np_out = tw.replace({"w": np.zeros(shape)}, "w", tw.init.normal(1.0), key=KEY)["w"]
        jax_out = tw.replace({"w": jnp.zeros(shape, jnp.float64)}, "w", tw.init.normal(1.0),
                             key=KEY)["w"]  # fmt: skip
        assert type(np_out) is np.ndarray and np_out.dtype == np.float64
        np.testing.assert_array_equal(np_out, np.asarray(jax_out))
        assert tw.replace({"w": np.zeros(2)}, "w", tw.constant(0.1))["w"][0] == 0.1


# ------------------------------------------------------------- values a dtype cannot hold


@pytest.mark.parametrize(
    "value, dtype, why",
    [
        (0.5, jnp.int32, "become 0"),
        (1e10, jnp.int32, "become"),
        (-1, jnp.uint8, "become 255"),
        (1e5, jnp.float16, "inf"),
        (2, jnp.bool_, "become True"),
        (1j, jnp.float32, "imaginary"),
    ],
)
def test_constant_that_the_dtype_cannot_hold(value, dtype, why):
    name = np.dtype(dtype).name
    for tree in ({"enc": {"w": jnp.zeros(3, dtype)}}, {"enc": {"w": np.zeros(3, dtype)}}):
        with pytest.raises(tw.InitError) as info:
            tw.replace(tree, "enc/w", tw.constant(value))
        msg = str(info.value)
        for word in ("'enc/w'", repr(value), name, why):
            assert word in msg, msg
        assert info.value.__cause__ is not info.value


def test_constant_check_in_a_batch():
    """Many same-shape leaves go through `tw_batched`, which checks too."""
    tree = {f"l{i}": jnp.zeros(2, jnp.int32) for i in range(4)}
    with pytest.raises(tw.InitError, match="'l0'.*int32.*0.5"):
        tw.replace(tree, tw.arrays, tw.constant(0.5))
    nodes = [Node(p, x, None, None) for p, x in tw.select(tree, tw.arrays)]
    fn = tw.constant(-3)
    sig = fn.tw_signature(nodes[0])
    with pytest.raises(tw.InitError, match="uint8"):
        fn.tw_batched(nodes, None, (sig[0], np.dtype(np.uint8), False))


def test_constant_python_int_leaf():
    with pytest.raises(tw.InitError, match="'n'.*Python int.*0.5"):
        tw.replace({"n": 3}, "n", tw.constant(0.5))


@pytest.mark.parametrize(
    "value, dtype",
    [(True, jnp.int32), (0.1, jnp.float32), (float("nan"), jnp.float16), (255, jnp.uint8),
     (-(2**31), jnp.int32), (1, jnp.bool_), (2.0, jnp.int32), (1 + 2j, jnp.complex64)],
)  # fmt: skip
def test_constant_that_fits(value, dtype):
    out = tw.replace({"w": jnp.zeros(2, dtype)}, "w", tw.constant(value))["w"]
    assert out.dtype == dtype
    np.testing.assert_array_equal(np.asarray(out), np.full(2, value, dtype))


def test_init_errors_are_not_their_own_cause():
    for tree, fn in [
        ({"enc": {"weight": jnp.zeros((3, 4))}}, tw.init.he_normal()),
        ({"enc": {"weight": jnp.zeros((3, 4), jnp.int32)}}, tw.init.normal()),
        ({"enc": {"weight": np.zeros((3, 4), np.int32)}}, tw.constant(0.5)),
    ]:
        with pytest.raises(tw.InitError) as info:
            tw.replace(tree, tw.arrays, fn, key=KEY)
        assert info.value.__cause__ is not info.value
        assert "'enc/weight'" in str(info.value)


# ---------------------------------------------------------------------------- key_for_path


def test_key_for_path_refuses_a_string():
    with pytest.raises(tw.ArgumentError, match=r"\('enc', 'w'\)"):
        tw.key_for_path(KEY, "enc/w")


def test_key_for_path_segments_and_key_paths_agree_with_replace():
    tree = {"enc": {"w": jnp.zeros(3)}, "mlp/~/linear_0": {"w": jnp.zeros(3)}}
    got = tw.replace(tree, tw.arrays, lambda p, x, k: jax.random.normal(k, x.shape), key=KEY)
    for path in tw.paths(tree, tw.arrays):
        segs = tw.path_segments(path)
        want = jax.random.normal(tw.key_for_path(KEY, segs), (3,))
        assert jnp.array_equal(got[segs[0]]["w"], want)
        assert jnp.array_equal(
            jax.random.key_data(tw.key_for_path(KEY, path)),
            jax.random.key_data(tw.key_for_path(KEY, segs)),
        )


# -------------------------------------------------------------------------------- mode=


@pytest.mark.parametrize(
    "make, mode, var",
    [
        (tw.init.he_normal, "fan_out", 2 / 10),
        (tw.init.he_uniform, "fan_avg", 2 / 55),
        (tw.init.lecun_normal, "fan_out", 1 / 10),
        (tw.init.lecun_uniform, "fan_in", 1 / 100),
        (tw.init.glorot_normal, "fan_in", 1 / 100),
        (tw.init.glorot_uniform, "fan_out", 1 / 10),
    ],
)
def test_named_initialisers_take_a_mode(make, mode, var):
    kernel = jnp.zeros((100, 10))  # (in, out): fan_in 100, fan_out 10
    (path,) = tw.paths({"kernel": kernel}, "kernel")
    init = make(mode=mode)
    assert init.mode == mode
    assert init.params(Node(path, kernel, None, None))[3] == pytest.approx(var)
    out = tw.replace({"kernel": jnp.zeros((400, 10))}, "kernel", make(mode=mode, fan_in=100),
                     key=KEY)["kernel"]  # fmt: skip
    assert float(jnp.var(out)) == pytest.approx(var, rel=0.15)


def test_mode_defaults_and_reprs():
    for make, mode in [(tw.init.he_normal, "fan_in"), (tw.init.glorot_uniform, "fan_avg")]:
        assert make().mode == mode
        assert "mode" not in repr(make())
    assert repr(tw.init.he_normal(mode="fan_out")) == "tw.init.he_normal(mode='fan_out')"
    assert repr(tw.init.glorot_normal(fan_out=3)) == "tw.init.glorot_normal(fan_out=3)"
    with pytest.raises(tw.ArgumentError, match="mode"):
        tw.init.he_normal(mode="fan_sideways")  # type: ignore[arg-type]


# ------------------------------------------------------------------------ documentation


def test_zeros_and_ones_are_documented():
    assert repr(tw.zeros) == "tw.zeros" and repr(tw.ones) == "tw.ones"
    assert repr(tw.constant(0.5)) == "tw.constant(0.5)"
    assert "an array filled with one" in (inspect.getdoc(tw.zeros) or "")
    griffe = pytest.importorskip("griffe")
    package = griffe.load("treewalk")
    for name in ("zeros", "ones", "init.zeros", "init.ones"):
        doc = package[name].docstring
        assert doc is not None and "`fn` for `replace`" in doc.value, name
        # what mkdocstrings renders, its example included, runs
        example = doc.value.split("```python", 1)[1].split("```", 1)[0]
        exec(compile(inspect.cleandoc(example), name, "exec"), {})


def test_init_module_lists_its_public_names():
    public = sorted(n for n in vars(treewalk.init) if not n.startswith("_"))
    assert sorted(treewalk.init.__all__) == public
    text = pydoc.render_doc(treewalk.init)
    for name in treewalk.init.__all__:
        assert name in text, name
