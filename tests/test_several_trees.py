"""`tw.replace(tree, selector, fn, *rest)`: `fn(path, node, key, *rest_nodes)` with the
nodes at the same path in other trees (aligned by path segments, across frameworks), and
`tw.diff(a, b)`: what differs between two trees, aligned the same way.

Each recipe is checked to the bit against the same arithmetic written out in numpy."""

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given

import treewalk as tw
from treewalk.testing import pytrees, trees_equal


def f32(x):
    """The value of an array (or an NNX variable's) as float32 numpy."""
    return np.asarray(x[...] if isinstance(x, nnx.Variable) else x, dtype=np.float32)


def leaves_by_path(tree, selector=tw.arrays):
    return {tw.path_str(p): x for p, x in tw.select(tree, selector)}


def ema(p, e, k, new):
    return 0.99 * e + 0.01 * new


def ema_np(e, new):
    return np.float32(0.99) * f32(e) + np.float32(0.01) * f32(new)


# --- models ---------------------------------------------------------------------------


def plain(seed, width=3):
    r = np.random.default_rng(seed)

    def w(*s):
        return jnp.asarray(r.standard_normal(s), jnp.float32)

    return {
        "blocks": [{"w": w(width, width), "b": w(width)} for _ in range(2)],
        "head": {"w": w(width, 2), "b": w(2)},
    }


class EqxNet(eqx.Module):
    blocks: list
    head: eqx.nn.Linear

    def __init__(self, key, width=3, depth=2):
        keys = jax.random.split(key, depth + 1)
        self.blocks = [eqx.nn.Linear(width, width, key=k) for k in keys[:-1]]
        self.head = eqx.nn.Linear(width, 2, key=keys[-1])


class NnxNet(nnx.Module):
    def __init__(self, seed, width=3):
        rngs = nnx.Rngs(seed)
        self.blocks = nnx.List([nnx.Linear(width, width, rngs=rngs) for _ in range(2)])
        self.head = nnx.Linear(width, 2, rngs=rngs)


class LinenNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(3, name="block0")(x)
        x = nn.Dense(3, name="block1")(x)
        return nn.Dense(2, name="head")(x)


def linen_params(seed):
    return LinenNet().init(jax.random.key(seed), jnp.ones(3))


def nnx_arrays(module):
    return {k: np.array(v) for k, v in leaves_by_path(module).items()}


# --- EMA of a selected subtree ---------------------------------------------------------


def test_ema_on_plain_dicts():
    e, p = plain(0), plain(1)
    out = tw.replace(e, "blocks/**", ema, p)
    for i in range(2):
        for n in ("w", "b"):
            got = out["blocks"][i][n]
            np.testing.assert_array_equal(got, ema_np(e["blocks"][i][n], p["blocks"][i][n]))
    # Outside the selection: the input's own arrays.
    assert out["head"]["w"] is e["head"]["w"] and out["head"]["b"] is e["head"]["b"]


def test_ema_on_equinox():
    e, p = EqxNet(jax.random.key(0)), EqxNet(jax.random.key(1))
    out = tw.replace(e, "blocks/**", ema, p)
    assert isinstance(out, EqxNet)
    for i in range(2):
        np.testing.assert_array_equal(
            out.blocks[i].weight, ema_np(e.blocks[i].weight, p.blocks[i].weight)
        )
        np.testing.assert_array_equal(
            out.blocks[i].bias, ema_np(e.blocks[i].bias, p.blocks[i].bias)
        )
    assert out.head.weight is e.head.weight and out.head.bias is e.head.bias


def test_ema_equinox_beside_a_dict_of_the_same_names():
    e = EqxNet(jax.random.key(0))
    p = {
        "blocks": [{"weight": jnp.ones((3, 3)), "bias": jnp.ones(3), "extra": 1} for _ in "ab"],
        "unrelated": jnp.zeros(7),
    }
    out = tw.replace(e, "blocks/**", ema, p)
    np.testing.assert_array_equal(
        out.blocks[1].weight, ema_np(e.blocks[1].weight, np.ones((3, 3)))
    )


def test_ema_nnx_module_with_state_as_rest():
    e, p = NnxNet(0), NnxNet(1)
    before = nnx_arrays(e)
    out = tw.replace(e, "blocks/**", ema, nnx.state(p))
    assert isinstance(out, NnxNet) and out is not e
    for i in range(2):
        for n in ("kernel", "bias"):
            want = ema_np(getattr(e.blocks[i], n), getattr(p.blocks[i], n))
            np.testing.assert_array_equal(f32(getattr(out.blocks[i], n)), want)
    np.testing.assert_array_equal(f32(out.head.kernel), before["head/kernel"])
    after = nnx_arrays(e)
    assert after.keys() == before.keys()
    for k in before:  # the input module is unchanged
        np.testing.assert_array_equal(after[k], before[k])


def test_ema_nnx_state_with_module_as_rest():
    e, p = NnxNet(0), NnxNet(1)
    state = nnx.state(e)
    before = nnx_arrays(p)
    out = tw.replace(state, "blocks/**", ema, p)
    assert isinstance(out, nnx.State)
    got = f32(out["blocks"][0]["kernel"])
    np.testing.assert_array_equal(got, ema_np(e.blocks[0].kernel, p.blocks[0].kernel))
    for k, v in nnx_arrays(p).items():
        np.testing.assert_array_equal(v, before[k])


def test_ema_on_linen_params():
    e, p = linen_params(0), linen_params(1)
    out = tw.replace(e, "params/block*/**", ema, p)
    for blk in ("block0", "block1"):
        for n in ("kernel", "bias"):
            got = out["params"][blk][n]
            np.testing.assert_array_equal(got, ema_np(e["params"][blk][n], p["params"][blk][n]))
    assert out["params"]["head"]["kernel"] is e["params"]["head"]["kernel"]


def test_linen_partitioned_boxes_are_opened_in_every_tree():
    boxed = {"w": nn.Partitioned(jnp.ones((2, 4)), names=(None, "model"))}
    bare = {"w": jnp.full((2, 4), 3.0)}
    seen = []

    def fn(p, x, k, y):
        seen.append((type(x), type(y)))
        return x + y

    out = tw.replace(boxed, "w", fn, bare)
    assert isinstance(out["w"], nn.Partitioned) and out["w"].names == (None, "model")
    np.testing.assert_array_equal(out["w"].value, np.full((2, 4), 4.0, np.float32))
    # The box is opened on the rest side too, and the result takes the tree's box.
    out = tw.replace(bare, "w", fn, boxed)
    assert seen == [(type(bare["w"]), type(bare["w"]))] * 2
    assert isinstance(out["w"], jax.Array)
    np.testing.assert_array_equal(out["w"], np.full((2, 4), 4.0, np.float32))
    out = tw.replace(bare, "w", lambda p, x, k, y: y * 2, boxed)
    np.testing.assert_array_equal(out["w"], np.full((2, 4), 2.0, np.float32))


# --- shrink and perturb ----------------------------------------------------------------


def test_shrink_and_perturb_with_fresh_weights_from_tw_init():
    params = plain(0)
    kernels = tw.glob("blocks/*/w")
    fresh = tw.replace(params, kernels, tw.init.normal(0.1), key=jax.random.key(3))
    out = tw.replace(params, kernels, lambda p, x, k, f: 0.8 * x + 0.2 * f, fresh)
    for i in range(2):
        want = np.float32(0.8) * f32(params["blocks"][i]["w"]) + np.float32(0.2) * f32(
            fresh["blocks"][i]["w"]
        )
        np.testing.assert_array_equal(out["blocks"][i]["w"], want)
        assert out["blocks"][i]["b"] is params["blocks"][i]["b"]


def test_shrink_and_perturb_equinox_with_he_normal():
    model = EqxNet(jax.random.key(0))
    sel = "blocks/*/weight"
    fresh = tw.replace(model, sel, tw.init.he_normal(), key=jax.random.key(1))
    out = tw.replace(model, sel, lambda p, x, k, f: 0.8 * x + 0.2 * f, fresh)
    for i in range(2):
        want = np.float32(0.8) * f32(model.blocks[i].weight) + np.float32(0.2) * f32(
            fresh.blocks[i].weight
        )
        np.testing.assert_array_equal(out.blocks[i].weight, want)
    assert out.head.weight is model.head.weight


def test_shrink_and_perturb_nnx_with_a_second_init():
    model, fresh = NnxNet(0), NnxNet(7)
    out = tw.replace(model, "blocks/0/**", lambda p, x, k, f: 0.8 * x + 0.2 * f, nnx.state(fresh))
    want = np.float32(0.8) * f32(model.blocks[0].kernel) + np.float32(0.2) * f32(
        fresh.blocks[0].kernel
    )
    np.testing.assert_array_equal(f32(out.blocks[0].kernel), want)
    np.testing.assert_array_equal(f32(out.blocks[1].kernel), f32(model.blocks[1].kernel))


def test_shrink_and_perturb_linen_with_a_second_init():
    params, fresh = linen_params(0), linen_params(1)
    out = tw.replace(params, "params/head/**", lambda p, x, k, f: 0.8 * x + 0.2 * f, fresh)
    for n in ("kernel", "bias"):
        want = np.float32(0.8) * f32(params["params"]["head"][n]) + np.float32(0.2) * f32(
            fresh["params"]["head"][n]
        )
        np.testing.assert_array_equal(out["params"]["head"][n], want)


# --- interpolation / model soup --------------------------------------------------------


def soup(p, a, k, b, c):
    return 0.5 * a + 0.25 * b + 0.25 * c


def soup_np(a, b, c):
    return np.float32(0.5) * f32(a) + np.float32(0.25) * f32(b) + np.float32(0.25) * f32(c)


def test_soup_of_three_dicts():
    a, b, c = plain(0), plain(1), plain(2)
    out = tw.replace(a, tw.arrays, soup, b, c)
    for path, x in leaves_by_path(out).items():
        la, lb, lc = (leaves_by_path(t)[path] for t in (a, b, c))
        np.testing.assert_array_equal(x, soup_np(la, lb, lc))


def test_soup_of_three_equinox_models():
    a, b, c = (EqxNet(jax.random.key(s)) for s in range(3))
    out = tw.replace(a, tw.arrays, soup, b, c)
    np.testing.assert_array_equal(
        out.head.weight, soup_np(a.head.weight, b.head.weight, c.head.weight)
    )
    np.testing.assert_array_equal(
        out.blocks[1].bias, soup_np(a.blocks[1].bias, b.blocks[1].bias, c.blocks[1].bias)
    )


def test_soup_of_nnx_module_state_and_module():
    a, b, c = NnxNet(0), NnxNet(1), NnxNet(2)
    out = tw.replace(a, tw.arrays, soup, nnx.state(b), c)
    np.testing.assert_array_equal(
        f32(out.head.kernel), soup_np(a.head.kernel, b.head.kernel, c.head.kernel)
    )


def test_interpolation_linen():
    a, b = linen_params(0), linen_params(1)
    t = 0.25
    out = tw.replace(a, tw.arrays, lambda p, x, k, y: (1 - t) * x + t * y, b)
    want = np.float32(0.75) * f32(a["params"]["block0"]["kernel"]) + np.float32(0.25) * f32(
        b["params"]["block0"]["kernel"]
    )
    np.testing.assert_array_equal(out["params"]["block0"]["kernel"], want)


# --- partial transfer between architectures -------------------------------------------


def same_shape_in(source):
    """A selector: the arrays whose path `source` has, with the same shape."""
    shapes = {tw.path_str(p): np.shape(x) for p, x in tw.select(source, tw.arrays)}
    return tw.arrays & tw.predicate(lambda p, x: shapes.get(tw.path_str(p)) == np.shape(x))


def take(p, x, k, y):
    return y


def test_transfer_between_equinox_models_that_differ():
    target = EqxNet(jax.random.key(0), width=3, depth=3)  # one block more
    source = EqxNet(jax.random.key(1), width=3, depth=2)
    source = eqx.tree_at(lambda m: m.head, source, eqx.nn.Linear(3, 5, key=jax.random.key(2)))
    out = tw.replace(target, same_shape_in(source), take, source)
    for i in range(2):
        assert out.blocks[i].weight is source.blocks[i].weight
        assert out.blocks[i].bias is source.blocks[i].bias
    assert out.blocks[2].weight is target.blocks[2].weight  # not in source
    assert out.head.weight is target.head.weight  # another shape in source
    # Selecting all: block 2 is missing from source, a StructureError naming it.
    with pytest.raises(tw.StructureError, match=r"'blocks/2/weight'.*rest\[0\]"):
        tw.replace(target, "blocks/**", take, source)
    # The head's other shape, with check=True (the default).
    with pytest.raises(tw.StructureError, match=r"'head/weight'.*rest\[0\].*\(5, 3\)"):
        tw.replace(target, "head/**", take, source)


def test_transfer_nnx_from_a_state_of_another_width():
    target = NnxNet(0, width=3)
    source = nnx.state(NnxNet(1, width=4))
    # blocks/*/kernel are (3, 3) against (4, 4): only the head's bias (2,) is shared.
    out = tw.replace(target, same_shape_in(source), take, source)
    np.testing.assert_array_equal(f32(out.head.bias), f32(source["head"]["bias"]))
    np.testing.assert_array_equal(f32(out.blocks[0].kernel), f32(target.blocks[0].kernel))
    with pytest.raises(tw.StructureError, match=r"'blocks/0/bias'.*rest\[0\].*\(4,\)"):
        tw.replace(target, "blocks/0/**", take, source)


def test_transfer_with_check_false_lets_fn_slice():
    target, source = plain(0, width=3), plain(1, width=4)
    out = tw.replace(target, "blocks/*/w", lambda p, x, k, y: y[:3, :3], source, check=False)
    np.testing.assert_array_equal(out["blocks"][1]["w"], f32(source["blocks"][1]["w"])[:3, :3])


def test_transfer_linen_dict_into_equinox_by_path():
    src = {"head": {"weight": jnp.full((2, 3), 0.5), "bias": jnp.full(2, -1.0)}}
    model = EqxNet(jax.random.key(0))
    out = tw.replace(model, "head/**", take, src)
    np.testing.assert_array_equal(out.head.weight, np.full((2, 3), 0.5, np.float32))
    np.testing.assert_array_equal(out.head.bias, np.full(2, -1.0, np.float32))


# --- errors ----------------------------------------------------------------------------


def test_missing_path_names_the_path_and_the_tree():
    a = plain(0)
    b = plain(1)
    c = {"blocks": b["blocks"]}  # no head
    with pytest.raises(tw.StructureError, match=r"'head/b' is not in rest\[1\]"):
        tw.replace(a, tw.arrays, lambda p, x, k, y, z: x, b, c)


def test_shape_mismatch_names_the_path_and_the_tree():
    a, b, c = plain(0), plain(1), plain(2, width=4)
    with pytest.raises(tw.StructureError, match=r"'blocks/0/b', rest\[1\].*\(4,\).*\(3,\)"):
        tw.replace(a, "blocks/**", lambda p, x, k, y, z: x, b, c)
    out = tw.replace(a, "blocks/**", lambda p, x, k, y, z: x, b, c, check=False)
    assert out["blocks"][0]["b"] is a["blocks"][0]["b"]


def test_fn_of_the_wrong_arity_is_an_argument_error():
    a = plain(0)
    with pytest.raises(tw.ArgumentError, match="rest0"):
        tw.replace(a, tw.arrays, lambda p, x, k: x, a)
    with pytest.raises(tw.ArgumentError, match="rest0, rest1"):
        tw.replace(a, tw.arrays, lambda p, x, k, y: x, a, a)


def test_strict_still_raises_for_dead_selectors():
    a, b = plain(0), plain(1)
    with pytest.raises(tw.NoMatchError, match="blokcs"):
        tw.replace(a, "blokcs/**", take, b)
    with pytest.raises(tw.NoMatchError, match="nope"):
        tw.replace(a, tw.glob("blocks/**") | tw.name("nope"), take, b)
    # strict=False: nothing selected, nothing asked of rest (even a tree without the paths).
    out = tw.replace(a, "blokcs/**", take, {}, strict=False)
    assert out["head"]["w"] is a["head"]["w"]


# --- inputs untouched ------------------------------------------------------------------


def test_inputs_are_never_changed():
    a, b = plain(0), plain(1)
    snap = [jax.tree.map(np.array, t) for t in (a, b)]
    leaves = [jax.tree.leaves(t) for t in (a, b)]
    out = tw.replace(a, tw.arrays, lambda p, x, k, y: x * 0 + y, b)
    for t, s, ls in zip((a, b), snap, leaves, strict=True):
        assert all(x is y for x, y in zip(jax.tree.leaves(t), ls, strict=True))
        jax.tree.map(np.testing.assert_array_equal, t, s)
    assert out["head"]["w"] is not b["head"]["w"]


def test_nnx_modules_in_rest_are_not_changed_by_an_fn_that_mutates():
    tree, other = NnxNet(0), NnxNet(1)
    before_tree, before_other = nnx_arrays(tree), nnx_arrays(other)

    def scribble(p, layer, k, theirs):
        theirs.kernel[...] = theirs.kernel[...] * 0  # in place, on what fn was given
        layer.bias[...] = layer.bias[...] + 1
        return theirs

    out = tw.replace(tree, tw.of_type(nnx.Linear), scribble, other)
    for mod, before in ((tree, before_tree), (other, before_other)):
        for k, v in nnx_arrays(mod).items():
            np.testing.assert_array_equal(v, before[k])
    assert out.head is not other.head
    np.testing.assert_array_equal(f32(out.head.kernel), np.zeros((3, 2), np.float32))
    np.testing.assert_array_equal(f32(out.head.bias), before_other["head/bias"])


# --- ties ------------------------------------------------------------------------------


def test_a_tie_is_one_call_and_stays_a_tie():
    shared = jnp.ones((2, 2))
    tree = {"embed": {"w": shared}, "unembed": {"w": shared}}
    other = {"embed": {"w": jnp.full((2, 2), 3.0)}, "unembed": {"w": jnp.full((2, 2), 5.0)}}
    calls = []

    def fn(p, x, k, y):
        calls.append(tw.path_str(p))
        return x + y

    out = tw.replace(tree, "**/w", fn, other)
    assert calls == ["embed/w"]
    assert out["embed"]["w"] is out["unembed"]["w"]
    np.testing.assert_array_equal(out["unembed"]["w"], np.full((2, 2), 4.0, np.float32))


def test_a_tie_in_nnx_a_shared_variable():
    lin = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    tree = nnx.Sequential(lin, lin)
    other = nnx.state(
        nnx.Sequential(nnx.Linear(2, 2, rngs=nnx.Rngs(1)), nnx.Linear(2, 2, rngs=nnx.Rngs(2)))
    )
    calls = []
    out = tw.replace(tree, "**/kernel", lambda p, x, k, y: calls.append(p) or x + y, other)
    assert len(calls) == 1
    assert out.layers[0].kernel is out.layers[1].kernel
    np.testing.assert_array_equal(
        f32(out.layers[1].kernel), f32(lin.kernel) + f32(other["layers"][0]["kernel"])
    )


# --- jit, vmap, keys -------------------------------------------------------------------


def half(p, x, k, y):
    return 0.5 * x + 0.5 * y


def test_under_jit():
    a, b = plain(0), plain(1)
    f = jax.jit(lambda a, b: tw.replace(a, "blocks/**", half, b))
    out = f(a, b)
    np.testing.assert_array_equal(
        out["blocks"][0]["w"], tw.replace(a, "blocks/**", half, b)["blocks"][0]["w"]
    )
    np.testing.assert_array_equal(out["head"]["w"], a["head"]["w"])
    # An NNX State through jax.jit, a model through eqx.filter_jit.
    sa, sb = nnx.state(NnxNet(0)), nnx.state(NnxNet(1))
    got = jax.jit(lambda s, r: tw.replace(s, "head/**", half, r))(sa, sb)
    want = np.float32(0.5) * f32(sa["head"]["bias"]) + np.float32(0.5) * f32(sb["head"]["bias"])
    np.testing.assert_array_equal(f32(got["head"]["bias"]), want)
    ea, eb = EqxNet(jax.random.key(0)), EqxNet(jax.random.key(1))
    got = eqx.filter_jit(lambda m, r: tw.replace(m, "head/**", half, r))(ea, eb)
    want = np.float32(0.5) * f32(ea.head.bias) + np.float32(0.5) * f32(eb.head.bias)
    np.testing.assert_array_equal(got.head.bias, want)


def test_under_vmap():
    a = {"w": jnp.arange(6.0).reshape(2, 3), "n": jnp.ones(2)}
    b = {"w": jnp.ones((2, 3)), "n": jnp.ones(2), "more": jnp.zeros(4)}
    out = jax.vmap(lambda a, b: tw.replace(a, "w", lambda p, x, k, y: x - y, b), in_axes=(0, 0))(
        a, {"w": b["w"], "n": b["n"], "more": jnp.zeros((2, 4))}
    )
    np.testing.assert_array_equal(out["w"], np.arange(6.0, dtype=np.float32).reshape(2, 3) - 1)
    # vmapped over one tree only: the rest tree is closed over.
    out = jax.vmap(
        lambda a: tw.replace(a, "w", lambda p, x, k, y: x * y, {"w": jnp.full(3, 2.0)})
    )(a)
    np.testing.assert_array_equal(out["w"], np.arange(6.0, dtype=np.float32).reshape(2, 3) * 2)


@pytest.mark.parametrize("policy", ["path", "split"])
def test_keys_are_the_same_as_without_rest(policy):
    a, b = plain(0), plain(1)
    key = jax.random.key(4)

    def draw(p, x, k):
        return jax.random.normal(k, x.shape, x.dtype)

    one = tw.replace(a, tw.arrays, draw, key=key, key_policy=policy)
    two = tw.replace(a, tw.arrays, lambda p, x, k, y: draw(p, x, k), b, key=key, key_policy=policy)
    jax.tree.map(np.testing.assert_array_equal, one, two)
    # And fn can mix the rest node with its key.
    mixed = tw.replace(a, tw.arrays, lambda p, x, k, y: y + draw(p, x, k), b, key=key)
    want = jax.tree.map(lambda y, n: f32(y) + f32(n), b, tw.replace(a, tw.arrays, draw, key=key))
    jax.tree.map(np.testing.assert_array_equal, mixed, want)


def test_drawing_helpers_take_no_extra_nodes():
    a, b = plain(0), plain(1)
    key = jax.random.key(0)
    for init in (tw.init.normal(0.5), tw.init.he_normal()):
        sel = "blocks/*/w"
        one = tw.replace(a, sel, init, key=key)
        two = tw.replace(a, sel, init, b, key=key)
        jax.tree.map(np.testing.assert_array_equal, one, two)


@pytest.mark.parametrize(
    "fn", [tw.zeros, tw.initializer(jax.nn.initializers.normal())], ids=["zeros", "initializer"]
)
def test_helpers_with_rest_on_a_leaf_of_its_own_shape(fn):
    a = {"w": jnp.ones(3)}
    out = tw.replace(a, "w", fn, {"w": jnp.ones(3)}, key=jax.random.key(0))
    one = tw.replace(a, "w", fn, key=jax.random.key(0))  # the rest nodes are not read
    np.testing.assert_array_equal(out["w"], one["w"])


# --- properties ------------------------------------------------------------------------


@given(pytrees())
def test_identity_with_the_tree_itself_as_rest(t):
    out = tw.replace(t, tw.arrays, lambda p, x, k, y: y, t, strict=False)
    want, got = tw.select(t, tw.arrays), tw.select(out, tw.arrays)
    assert [tw.path_str(p) for p, _ in got] == [tw.path_str(p) for p, _ in want]
    assert all(x is y for (_, x), (_, y) in zip(got, want, strict=True))
    assert trees_equal(out, t)


def shift(x):
    if isinstance(x, jax.Array | np.ndarray) and x.dtype.kind in "fi":
        return x + np.ones((), x.dtype)
    return x


def minus(x, y):
    return y - x if isinstance(x, jax.Array | np.ndarray) and x.dtype.kind in "fi" else x


# penzai's Parameter is a leaf to jax.tree.map (a mutable leaf), a box to treewalk.
@given(pytrees(penzai=False))
def test_agrees_with_jax_tree_map_on_same_structure_trees(a):
    b = jax.tree.map(shift, a)
    got = tw.replace(a, tw.arrays, lambda p, x, k, y: minus(x, y), b, strict=False)
    assert trees_equal(got, jax.tree.map(minus, a, b))


# --- tw.diff ---------------------------------------------------------------------------


def test_frozen_leaves_bit_identical_after_a_masked_optax_step():
    params = {
        "encoder": {
            "w": jnp.asarray(np.random.default_rng(0).standard_normal((3, 3)), jnp.float32)
        },
        "decoder": {"w": jnp.ones((3, 2)), "b": jnp.ones(2)},
    }
    labels = tw.labels(params, {"frozen": "encoder/**"}, default="train")
    tx = optax.multi_transform({"frozen": optax.set_to_zero(), "train": optax.adam(0.1)}, labels)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    after = optax.apply_updates(params, updates)
    assert not tw.diff(params, after, "encoder/**")
    moved = tw.diff(params, after, "decoder/**")
    assert moved and [c.path for c in moved.changes] == ["decoder/b", "decoder/w"]
    assert all(c.kind == "values" and c.fraction == 1.0 for c in moved.changes)
    assert moved.max_abs == pytest.approx(0.1, rel=1e-3)
    assert tw.diff(params, after).compared == 3


def test_which_layers_moved_most():
    a = plain(0)
    b = tw.replace(a, "blocks/1/**", lambda p, x, k: x + 0.5)
    b = tw.replace(b, "head/w", lambda p, x, k: x.at[0, 0].add(-2.0))
    d = tw.diff(a, b)
    top = max(d.changes, key=lambda c: c.max_abs)
    assert top.path == "head/w" and top.fraction == pytest.approx(1 / 6)
    assert d.max_abs == float(np.abs(f32(b["head"]["w"]) - f32(a["head"]["w"])).max())
    assert {c.path for c in d.changes} == {"blocks/1/w", "blocks/1/b", "head/w"}
    assert d.compared == 6 and len(d) == 3


def test_shape_dtype_type_and_one_sided_paths():
    a = {"s": jnp.ones(2), "d": jnp.ones(2), "t": 1, "x": jnp.ones(1)}
    b = {"s": jnp.ones(3), "d": jnp.ones(2, jnp.int32), "t": jnp.ones(1), "y": jnp.ones(1)}
    kinds = {c.path: c.kind for c in tw.diff(a, b).changes}
    assert kinds == {"s": "shape", "d": "dtype", "t": "type", "x": "only in a", "y": "only in b"}
    d = tw.diff(a, b)
    assert d.max_abs is None and all(c.max_abs is None for c in d.changes)
    assert tw.diff(a, b, "y").changes[0].kind == "only in b"  # alive in b only: not dead


def test_nan_equals_nan():
    a = {"w": jnp.array([1.0, jnp.nan, 3.0])}
    assert not tw.diff(a, {"w": jnp.array([1.0, jnp.nan, 3.0])})
    (c,) = tw.diff(a, {"w": jnp.array([1.0, 2.0, 4.0])}).changes
    assert c.max_abs == 1.0 and c.fraction == pytest.approx(2 / 3)


def test_str_fits_100_columns_with_a_summary(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    long = "/".join(["a_rather_long_layer_name"] * 6)
    a = {long: {"w": jnp.ones((3, 4))}, "s": jnp.ones(2), "only_a": jnp.ones(1)}
    b = {long: {"w": jnp.zeros((3, 4))}, "s": jnp.ones(3)}
    text = str(tw.diff(a, b))
    lines = text.splitlines()
    assert all(len(line) <= 100 for line in lines), text
    assert lines[0].split() == ["path", "change", "a", "->", "b", "max", "|a-b|", "differ"]
    assert lines[-1] == "3 of 3 leaves differ (1 values, 1 only in a, 1 shape); max |a - b| 1"
    assert any(line.startswith("...") and "/w" in line for line in lines)  # cut on the left
    assert str(tw.diff(a, a)) == "no differences in 3 leaves"
    many = tw.diff(
        {f"l{i:02d}": jnp.ones(1) for i in range(30)},
        {f"l{i:02d}": jnp.zeros(1) for i in range(30)},
        max_rows=6,
    )
    lines = str(many).splitlines()
    assert len(lines) == 1 + 6 + 1 + 1 and "24 more" in lines[4]
    assert lines[1].startswith("l00") and lines[-2].startswith("l29")


def test_strict_typo_raises():
    a = plain(0)
    with pytest.raises(tw.NoMatchError, match="blokcs"):
        tw.diff(a, a, "blokcs/**")
    assert not tw.diff(a, a, "blokcs/**", strict=False)


def test_nnx_module_against_its_own_state():
    net = NnxNet(0)
    d = tw.diff(net, nnx.state(net))
    assert not d and d.compared == 6
    # Against another init's state: the kernels differ (NNX biases start at zero).
    d = tw.diff(net, nnx.state(NnxNet(1)))
    assert [c.path for c in d.changes] == ["blocks/0/kernel", "blocks/1/kernel", "head/kernel"]
    assert {c.kind for c in d.changes} == {"values"} and d.compared == 6


def test_prng_keys_compare_by_their_key_data():
    # An NNX Dropout holds a typed key, which numpy cannot convert (it raised TypeError).
    a = nnx.Dropout(0.1, rngs=nnx.Rngs(0))
    assert not tw.diff(a, nnx.Dropout(0.1, rngs=nnx.Rngs(0)))
    (c,) = tw.diff(a, nnx.Dropout(0.1, rngs=nnx.Rngs(1))).changes
    assert c.path == "rngs/key" and c.kind == "values"


def test_equinox_model_against_a_dict_of_its_arrays():
    model = EqxNet(jax.random.key(0))
    as_dict = {"blocks": [{"weight": b.weight, "bias": b.bias} for b in model.blocks]}
    as_dict["head"] = {"weight": model.head.weight, "bias": model.head.bias}
    assert not tw.diff(model, as_dict, tw.arrays)


def test_an_infinite_difference_is_inf_and_the_overall_max_ignores_leaf_order():
    (c,) = tw.diff({"w": jnp.array([jnp.inf])}, {"w": jnp.array([1.0])}).changes
    assert c.max_abs == float("inf")
    for name in ("a", "z"):
        d = tw.diff(
            {name: jnp.array([jnp.nan]), "b": jnp.array([1.0])},
            {name: jnp.array([1.0]), "b": jnp.array([3.0])},
        )
        assert d.max_abs == 2.0
    text = str(tw.diff({"f": "abc"}, {"f": "xyz"}))
    assert "'abc' -> 'xyz'" in text


# --- per-depth learning rate with labels -------------------------------------------------


def test_per_depth_learning_rate_with_labels():
    params = plain(0)

    def depth(path, leaf):
        segs = tw.path_segments(path)
        return f"block{segs[1]}" if segs[0] == "blocks" else "head"

    labels = tw.labels(params, depth)
    rates = {"block0": 0.25, "block1": 0.5, "head": 1.0}
    tx = optax.multi_transform({k: optax.sgd(v) for k, v in rates.items()}, labels)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params))
    np.testing.assert_array_equal(updates["blocks"][1]["w"], np.full((3, 3), -0.5, np.float32))
    np.testing.assert_array_equal(updates["head"]["b"], np.full(2, -1.0, np.float32))


def test_haiku_params_ema_and_diff():
    import haiku as hk

    def f(x):
        return hk.nets.MLP([4, 2])(x)

    net = hk.without_apply_rng(hk.transform(f))
    x = jnp.ones((1, 3))
    params = net.init(jax.random.key(0), x)
    fresh = net.init(jax.random.key(1), x)
    ema = tw.replace(params, "**/w", lambda p, a, k, b: 0.5 * a + 0.5 * b, fresh)
    for module in params:
        want = 0.5 * np.asarray(params[module]["w"]) + 0.5 * np.asarray(fresh[module]["w"])
        np.testing.assert_array_equal(ema[module]["w"], want)
        assert ema[module]["b"] is params[module]["b"]
    d = tw.diff(params, ema)
    assert sorted(c.path for c in d.changes) == sorted(f"{m}/w" for m in params)
    assert not tw.diff(params, ema, "**/b")
