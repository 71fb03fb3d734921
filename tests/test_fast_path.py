"""The C++-flatten fast path for type selectors must agree with the full walk."""

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

import treewalk as tw
from treewalk._fast import fast_types
from treewalk.testing import EqxNode, Keyed, Pair, Unkeyed, pytrees, selectors, trees_equal

TYPES = st.sampled_from([dict, list, tuple, Pair, Keyed, Unkeyed, EqxNode])


def slow(sel):
    """The same selector, hidden from the fast path (`~~` is not simplified for it)."""
    return tw.Selector.__invert__(tw._selectors.Not(sel))


def describe(nodes):
    return [(tw.path_str(p), type(x).__name__) for p, x in nodes]


@given(pytrees(), TYPES, TYPES, st.booleans())
def test_select_agrees(tree, a, b, outermost):
    for sel in (
        tw.of_type(a),
        tw.of_type(a, b),
        tw.of_type(a) | tw.of_type(b),
        tw.of_type(a) & tw.glob("**/?"),
    ):
        assert fast_types(sel) is not None and fast_types(slow(sel)) is None
        fast = tw.select(tree, sel, outermost=outermost)
        full = tw.select(tree, slow(sel), outermost=outermost)
        assert describe(fast) == describe(full)
        assert all(x is y for (_, x), (_, y) in zip(fast, full, strict=True))


def wrap(path, node, key):
    return {"wrapped": node}


@given(pytrees(), TYPES)
def test_replace_agrees(tree, a):
    sel = tw.of_type(a)
    one = tw.replace(tree, sel, wrap, strict=False)
    two = tw.replace(tree, slow(sel), wrap, strict=False)
    assert trees_equal(one, two)


def test_equinox_and_nnx_models():
    mlp = eqx.nn.MLP(3, 2, 4, 2, key=jax.random.key(0))
    assert describe(tw.select(mlp, eqx.nn.Linear)) == describe(
        tw.select(mlp, slow(tw.of_type(eqx.nn.Linear)))
    )

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(2, 3, rngs=rngs)
            self.b = nnx.Linear(3, 1, rngs=rngs)

    net = Net(nnx.Rngs(0))
    for sel in (tw.of_type(nnx.Linear), tw.of_type(nnx.Param), tw.of_type(nnx.Param) & "**/bias"):
        assert describe(tw.select(net, sel)) == describe(tw.select(net, slow(sel)))
    out = tw.replace(net, tw.of_type(nnx.Param) & "**/bias", tw.ones)
    assert isinstance(out.a.bias, nnx.Param) and (out.a.bias[...] == 1).all()
    assert (net.a.bias[...] == 0).all()  # the input is untouched
    assert out.a.kernel is not net.a.kernel  # NNX variables are copied, never shared
    assert jnp.array_equal(out.a.kernel[...], net.a.kernel[...])


class Tied(nnx.Module):
    def __init__(self, rngs):
        self.a = nnx.Linear(2, 2, rngs=rngs)
        self.b = nnx.Linear(2, 2, rngs=rngs)
        self.b.kernel = self.a.kernel  # one Variable, two paths


def test_tied_nnx_variable_stays_one_variable_on_both_paths():
    m = Tied(nnx.Rngs(0))
    for sel in (tw.of_type(nnx.Param) & "**/kernel", slow(tw.of_type(nnx.Param) & "**/kernel")):
        out = tw.replace(m, sel, tw.ones)
        assert out.a.kernel is out.b.kernel and out.a.kernel is not m.a.kernel
        assert (out.b.kernel[...] == 1).all() and not (m.a.kernel[...] == 1).all()
        # A shared object is visited once, at its first path.
        assert [tw.path_str(p) for p in tw.paths(m, sel)] == ["a/kernel"]


@given(pytrees(), st.integers(0, 2**16))
def test_keyed_replace_of_arrays_agrees(tree, seed):
    def draw(path, x, key):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            return x
        return jax.random.normal(key, x.shape, x.dtype)

    sel = tw.arrays & ~tw.name("w")
    assert fast_types(sel, arrays_ok=True) is not None
    key = jax.random.key(seed)
    one = tw.replace(tree, sel, draw, key=key, strict=False)
    two = tw.replace(tree, slow(sel), draw, key=key, strict=False)
    assert trees_equal(one, two)
    assert jax.tree_util.tree_structure(one) == jax.tree_util.tree_structure(tree)


def test_keyed_replace_of_arrays_under_jit_and_on_tied_arrays():
    w = jnp.ones((2, 2))
    tree = {"a": w, "b": w, "c": jnp.ones(3)}
    init = tw.initializer(jax.nn.initializers.normal())
    eager = tw.replace(tree, tw.arrays, init, key=jax.random.key(0))
    assert eager["a"] is eager["b"]
    jitted = jax.jit(lambda k: tw.replace(tree, tw.arrays, init, key=k))(jax.random.key(0))
    for name in tree:  # the same draws (XLA may fuse the transform differently: last ulp)
        assert jnp.allclose(eager[name], jitted[name], rtol=1e-6, atol=1e-7)


def bump(path, x, key):
    """A new array for every numeric array leaf; other array leaves come back as they are."""
    if isinstance(x, jax.ShapeDtypeStruct) or x.dtype == jnp.bool_:
        return x
    return x + jnp.ones((), x.dtype)


@given(pytrees(), st.sampled_from(["all", "glob", "none"]))
def test_unkeyed_replace_of_arrays_agrees(tree, which):
    """The leaf loop (one C++ flatten, fn per leaf, one unflatten) against the walk."""
    sel = {"all": tw.arrays, "glob": tw.arrays & tw.glob("**/?"), "none": tw.arrays & "zzz"}[which]
    assert fast_types(sel, arrays_ok=True) is not None
    one = tw.replace(tree, sel, bump, strict=False)
    two = tw.replace(tree, slow(sel), bump, strict=False)
    assert trees_equal(one, two)
    assert jax.tree_util.tree_structure(one) == jax.tree_util.tree_structure(tree)
    # fn called on the same nodes at the same paths, in the same order
    seen_fast, seen_walk = [], []
    tw.replace(tree, sel, lambda p, x, k: seen_fast.append(p) or x, strict=False)
    tw.replace(tree, slow(sel), lambda p, x, k: seen_walk.append(p) or x, strict=False)
    assert seen_fast == seen_walk


def test_leaf_loop_returns_the_input_when_nothing_changed_and_keeps_ties():
    w = jnp.ones((2, 2))
    tree = {"a": w, "b": [w, jnp.zeros(3)], "n": 3}
    assert tw.replace(tree, tw.arrays, lambda p, x, k: x) is tree
    calls = []

    def double(p, x, k):
        calls.append(tw.path_str(p))
        return x * 2

    out = tw.replace(tree, tw.arrays, double)
    assert calls == ["a", "b/1"]  # the tied array once, at its first path
    assert out["a"] is out["b"][0] and (out["a"] == 2).all()
    assert out["b"][1] is not tree["b"][1] and out["n"] == 3
    assert (tree["a"] == 1).all()  # the input is untouched


def test_leaf_loop_errors_name_the_path_and_respect_is_leaf():
    tree = {"enc": {"w": jnp.ones(2), "b": jnp.ones(2)}, "head": {"w": jnp.ones(3)}}
    with pytest.raises(tw.ReplacementError, match="'enc/b'"):
        tw.replace(tree, tw.arrays, lambda p, x, k: jnp.ones(5))
    with pytest.raises(tw.CallbackError, match="'enc/b'.*boom"):
        tw.replace(tree, tw.arrays, lambda p, x, k: _boom())
    # is_leaf stops at `enc`: nothing inside it is an array leaf any more
    out = tw.replace(
        tree, tw.arrays, lambda p, x, k: x * 0, is_leaf=lambda x: isinstance(x, dict) and "b" in x
    )
    assert (out["enc"]["w"] == 1).all() and (out["head"]["w"] == 0).all()
    with pytest.raises(tw.CallbackError, match="is_leaf raised"):
        tw.replace(tree, tw.arrays, tw.zeros, is_leaf=lambda x: _boom())


def _boom():
    raise RuntimeError("boom")


def test_leaf_loop_gives_way_to_the_walk_on_boxes_and_modules():
    """A tree holding an NNX module or a linen box is not a plain tree: the walk looks
    through the boxes and copies the module (the leaf loop would lose both)."""
    import flax.linen as nn

    boxed = {"dense": {"kernel": nn.Partitioned(jnp.ones((2, 2)), names=("a", "b"))}}
    out = tw.replace(boxed, tw.arrays, lambda p, x, k: x * 2)
    assert isinstance(out["dense"]["kernel"], nn.Partitioned)
    assert out["dense"]["kernel"].names == ("a", "b")
    assert (out["dense"]["kernel"].value == 2).all()
    net = {"m": nnx.Linear(2, 2, rngs=nnx.Rngs(0)), "x": jnp.ones(2)}
    out = tw.replace(net, tw.arrays, lambda p, x, k: x * 0)
    assert out["m"] is not net["m"] and (out["m"].kernel[...] == 0).all()
    assert not (net["m"].kernel[...] == 0).all()


def walk_only(sel):
    """The same selector, for the walk only: a selector that asks about ancestors (here
    one that never objects) keeps every call off the flatten-based paths."""
    return sel & ~tw.inside("__never__")


def tag(path, node, key):
    return ("new", tw.path_str(path))


@given(st.data())
def test_any_selector_replace_mask_labels_agree_with_the_walk(data):
    """Whatever path `replace`, `mask` and `labels` take (leaf loop, path selectors on a
    plain tree, C++ fast path, walk), they agree with the walk, calls included."""
    tree = data.draw(pytrees())
    sel = data.draw(selectors(tree))
    calls_fast, calls_walk = [], []
    fast = tw.replace(
        tree, sel, lambda p, x, k: calls_fast.append(p) or tag(p, x, k), strict=False, check=False
    )
    walk = tw.replace(
        tree,
        walk_only(sel),
        lambda p, x, k: calls_walk.append(p) or tag(p, x, k),
        strict=False,
        check=False,
    )
    assert trees_equal(fast, walk) and calls_fast == calls_walk
    assert trees_equal(tw.mask(tree, sel), tw.mask(tree, walk_only(sel)))
    spec, default = {"a": sel}, "b"
    assert trees_equal(
        tw.labels(tree, spec, default=default),
        tw.labels(tree, {"a": walk_only(sel)}, default=default),
    )


def test_path_selectors_on_plain_trees_give_way_where_a_flatten_cannot_see():
    """A path selector that picks an internal node replaces it whole, and a selected
    `None` or empty container (which a flatten does not show) still reaches `fn`."""
    tree = {"enc": {"w": jnp.ones(2), "bias": jnp.ones(2)}, "bias": {"x": jnp.ones(1)}}
    out = tw.replace(tree, "**/bias", lambda p, x, k: "whole", check=False)
    assert out["bias"] == "whole" and out["enc"]["bias"] == "whole"
    empty = {"enc": {"w": jnp.ones(2)}, "state": ()}
    out = tw.replace(empty, "state", lambda p, x, k: (jnp.zeros(1),), check=False)
    assert out["state"][0].shape == (1,)
    with_none = {"enc": {"w": jnp.ones(2), "bias": None}}
    assert tw.replace(with_none, "**/bias", tw.zeros, strict=False)["enc"]["bias"] is None
    # Integer keys and their text are one segment to a glob, whichever path is taken.
    seq = {"layers": [jnp.ones(1), jnp.ones(2)]}
    assert tw.replace(seq, "layers/1", tw.zeros)["layers"][1].tolist() == [0, 0]
