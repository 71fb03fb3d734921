"""The C++-flatten fast path for type selectors must agree with the full walk."""

import equinox as eqx
import jax
import jax.numpy as jnp
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

import treewalk as tw
from treewalk._fast import fast_types
from treewalk.testing import EqxNode, Keyed, Pair, Unkeyed, pytrees, trees_equal

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
