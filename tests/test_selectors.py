import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

import treewalk as tw
from treewalk.testing import Pair, pytrees, selectors

TREE = {
    "encoder": {
        "layers": [
            {"w": jnp.ones((2, 2)), "bias": jnp.zeros(2)},
            {"w": jnp.ones((2, 2)), "bias": jnp.zeros(2)},
        ],
        "norm": {"scale": jnp.ones(2), "bias": jnp.zeros(2)},
    },
    "bias": jnp.zeros(1),
    "mlp/~/linear_0": {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)},
    "act": jax.nn.relu,
    "n": 3,
    "none": None,
}


def strs(selector, tree=TREE, **kw):
    return [tw.path_str(p) for p in tw.paths(tree, selector, **kw)]


@pytest.mark.parametrize(
    "pattern, expected",
    [
        (
            "**/bias",
            ["bias", "encoder/layers/0/bias", "encoder/layers/1/bias", "encoder/norm/bias"],
        ),
        ("bias", ["bias"]),
        ("encoder/layers/*/w", ["encoder/layers/0/w", "encoder/layers/1/w"]),
        ("encoder/*/bias", ["encoder/norm/bias"]),
        (
            "encoder/**/bias",
            ["encoder/layers/0/bias", "encoder/layers/1/bias", "encoder/norm/bias"],
        ),
        ("encoder/layers/[1-9]/*", ["encoder/layers/1/bias", "encoder/layers/1/w"]),
        ("encoder/layers/?", ["encoder/layers/0", "encoder/layers/1"]),
        ("**/no*", ["encoder/norm"]),  # the `None` at "none" is skipped
        ("*/w", ["mlp/~/linear_0/w"]),  # the Haiku key is ONE segment
        ("mlp/*", []),  # ... so `*` never crosses its `/` (fnmatch would)
        (("mlp/~/linear_0", "*"), ["mlp/~/linear_0/b", "mlp/~/linear_0/w"]),
        # A trailing `/**` is the leaves below (as in .gitignore): not `norm` itself.
        ("**/norm/**", ["encoder/norm/bias", "encoder/norm/scale"]),
        ("encoder/**/norm/**", ["encoder/norm/bias", "encoder/norm/scale"]),
        (
            "encoder/layers/**",
            ["encoder/layers/" + s for s in ("0/bias", "0/w", "1/bias", "1/w")],
        ),
    ],
)
def test_glob(pattern, expected):
    assert sorted(strs(tw.glob(pattern))) == sorted(expected)
    assert strs(pattern) == strs(tw.glob(pattern))  # a str (or tuple) is coerced to a glob


def test_glob_double_star_matches_everything_including_root():
    assert strs("**") == strs(tw.everything)
    assert strs("**")[0] == ""


def test_name_regex_type_predicate_arrays():
    assert strs(tw.name("w", "b")) == [
        "encoder/layers/0/w",
        "encoder/layers/1/w",
        "mlp/~/linear_0/b",
        "mlp/~/linear_0/w",
    ]
    assert strs(tw.name(0)) == ["encoder/layers/0"]
    assert strs(tw.regex(r"encoder/layers/\d+/bias")) == [
        "encoder/layers/0/bias",
        "encoder/layers/1/bias",
    ]
    assert strs(tw.regex(re.compile("mlp/~/linear_0/.*"))) == [
        "mlp/~/linear_0/b",
        "mlp/~/linear_0/w",
    ]
    assert strs(list) == ["encoder/layers"]  # a class is of_type
    assert strs(tw.arrays & tw.predicate(lambda p, x: x.ndim == 2)) == [
        "encoder/layers/0/w",
        "encoder/layers/1/w",
        "mlp/~/linear_0/w",
    ]
    assert "act" not in strs(tw.arrays) and "n" not in strs(tw.arrays)
    assert strs(lambda p, x: x is jax.nn.relu) == ["act"]  # a callable is a predicate
    assert strs(tw.arrays & tw.glob("encoder/**")) == strs(tw.arrays & tw.inside("encoder"))


def test_none_is_skipped_unless_asked():
    assert "none" not in strs("*")
    assert "none" in strs("*", include_none=True)


def test_inside_is_strict_and_composes():
    assert strs(tw.inside("encoder/norm")) == ["encoder/norm/bias", "encoder/norm/scale"]
    no_norm = tw.glob("**/bias") & ~tw.inside(tw.name("norm"))
    assert strs(no_norm) == ["bias", "encoder/layers/0/bias", "encoder/layers/1/bias"]


def test_arrays_matches_numpy_and_shape_dtype_struct():
    tree = {"np": np.ones(2), "sds": jax.ShapeDtypeStruct((2,), jnp.float32), "f": 1.0}
    assert strs(tw.arrays, tree) == ["np", "sds"]


def test_repr_reads_like_code():
    class LayerNorm:
        pass

    sel = tw.glob("**/bias") & ~tw.inside(tw.of_type(LayerNorm))
    assert (
        repr(sel)
        == "glob('**/bias') & ~inside(of_type(test_repr_reads_like_code.<locals>.LayerNorm))"
    )
    assert repr(tw.name("w", "kernel") | tw.arrays) == "name('w', 'kernel') | arrays"
    assert repr(~(tw.name("a") & tw.regex("b"))) == "~(name('a') & regex('b'))"
    assert repr("**/w" & tw.arrays) == "glob('**/w') & arrays"


def test_selectors_are_immutable_values():
    a = tw.glob("**/bias")
    assert a == tw.glob("**/bias") and hash(a) == hash(tw.glob("**/bias"))
    assert a != tw.glob("bias") and a != tw.name("bias")
    assert {a, tw.glob("**/bias")} == {a}
    with pytest.raises(AttributeError, match="immutable"):
        a.pattern = "x"
    assert ~~a == ~~tw.glob("**/bias") and ~~a != a  # the leaves `a` covers


@pytest.mark.parametrize(
    "bad, error, message",
    [
        ("", tw.PatternError, "empty segment"),
        ("a//b", tw.PatternError, "empty segment"),
        ("/bias", tw.PatternError, "leading, trailing"),
        ("a/***", tw.PatternError, r"'\*\*' must be a whole segment"),
        ("a**/b", tw.PatternError, r"'\*\*' must be a whole segment"),
        ("layer_[0-9", tw.PatternError, "unbalanced"),
        (3, tw.SelectorError, "must be a selector.*got int"),
        ({"a": 1}, tw.SelectorError, "must be a selector.*got dict"),
        (None, tw.SelectorError, "must be a selector"),
    ],
)
def test_bad_selectors(bad, error, message):
    with pytest.raises(error, match=message):
        tw.paths(TREE, bad)
    assert issubclass(error, tw.TreewalkError)


def test_bad_regex_and_constructor_arguments():
    with pytest.raises(tw.PatternError, match=r"regex '\(' does not compile"):
        tw.regex("(")
    with pytest.raises(tw.SelectorError, match="at least one name"):
        tw.name()
    with pytest.raises(tw.SelectorError, match="at least one type"):
        tw.of_type()
    with pytest.raises(tw.SelectorError, match="takes classes"):
        tw.of_type("Linear")
    with pytest.raises(tw.SelectorError, match="callable"):
        tw.predicate(3)
    with pytest.raises(tw.SelectorError, match="tw.inside's argument"):
        tw.inside(3.5)


def test_predicate_that_raises_names_path_and_selector():
    with pytest.raises(
        tw.CallbackError, match=r"predicate predicate\(.*\) raised KeyError at path"
    ):
        tw.paths({"a": 1}, tw.predicate(lambda p, x: {}["nope"]))


def test_a_query_matching_nothing_is_not_an_error():
    assert tw.paths(TREE, "nothing/here") == []
    # A mask is strict by default (tests/test_training_safety.py); non-strict, it is
    # an all-False mask.
    assert not any(jax.tree_util.tree_leaves(tw.mask(TREE, "nothing/here", strict=False)))


# --- properties ------------------------------------------------------------------------


@st.composite
def tree_and_selectors(draw):
    tree = draw(pytrees())
    return tree, draw(selectors(tree)), draw(selectors(tree))


class leaves(tw.Selector):
    """The leaves of the walk, by `Node.leaf` (a selector of one's own, as users write)."""

    def match(self, n):
        return n.leaf


def covered_by(hits, path):
    """Is `path` one of `hits` or below one?"""
    return any(path[:k] in hits for k in range(len(path) + 1))


@given(tree_and_selectors())
def test_boolean_algebra(args):
    tree, a, b = args
    universe = tw.paths(tree, tw.everything)
    leaf_paths = tw.paths(tree, leaves())
    A, B = set(tw.paths(tree, a)), set(tw.paths(tree, b))
    assert tw.paths(tree, a & b) == [p for p in universe if p in A and p in B]
    assert tw.paths(tree, a | b) == [p for p in universe if p in A or p in B]
    # A negation picks the leaves the selector does not cover (pick, or lie below a pick).
    assert tw.paths(tree, ~a) == [p for p in leaf_paths if not covered_by(A, p)]
    assert tw.paths(tree, ~(a | b)) == tw.paths(tree, ~a & ~b)  # De Morgan
    covered = [p for p in leaf_paths if covered_by(A, p)]
    assert tw.paths(tree, ~~a) == covered  # ~(~a): the leaves `a` covers
    m, n = tw.mask(tree, a, strict=False), tw.mask(tree, ~a, strict=False)
    bools = tw.predicate(lambda p, x: isinstance(x, bool))
    assert [not x for _, x in tw.select(m, bools)] == [x for _, x in tw.select(n, bools)]


@given(pytrees())
def test_glob_star_star_and_literal_globs(tree):
    universe = tw.paths(tree, tw.everything)
    assert tw.paths(tree, "**") == universe
    for path in universe:
        segs = tw.path_segments(path)
        if segs and not any(c in str(s) for s in segs for c in "*?["):
            assert path in tw.paths(tree, tw.glob(tuple(map(str, segs))))


@given(tree_and_selectors())
def test_mask_has_tree_structure_and_is_true_exactly_at_covered_leaves(args):
    tree, a, _ = args
    m = tw.mask(tree, a, strict=False)  # drawn selectors may have atoms matching nothing
    hits = set(tw.paths(tree, a))
    hit_strs = {tw.path_str(p) for p in hits}
    if isinstance(tree, nnx.Module):
        # The mask of an NNX module is pure: a bool per Param, as nnx.Optimizer hands
        # optax the parameters.
        want = nnx.as_pure(nnx.state(tree, nnx.Param))
        assert jax.tree_util.tree_structure(m) == jax.tree_util.tree_structure(want)
        for path, value in jax.tree_util.tree_flatten_with_path(m)[0]:
            segs = tw.path_str(path).split("/")
            on = any("/".join(segs[:k]) in hit_strs for k in range(len(segs) + 1))
            assert value == on, tw.path_str(path)
        return
    assert jax.tree_util.tree_structure(m) == jax.tree_util.tree_structure(tree)
    visible = set(tw.paths(tree, tw.everything))  # a tie's later paths are not visited
    for path, value in tw.select(m, leaves()):
        assert isinstance(value, bool)
        if path in visible:
            assert value == covered_by(hits, path), tw.path_str(path)


def test_pair_fields_are_selectable_by_name():
    assert strs("second", Pair(1, 2)) == ["second"]


def test_arrays_never_selects_keys_whatever_carries_them():
    # `tw.arrays` is decided by type for numpy and JAX's concrete arrays; keys come as
    # PRNGKeyArrays, tracers and ShapeDtypeStructs, each asked by its dtype.
    key = jax.random.key(0)
    tree = {
        "w": jnp.ones(2),
        "n": np.ones(2),
        "key": key,
        "keys": jax.random.split(key, 3),
        "key_spec": jax.ShapeDtypeStruct((), key.dtype),
        "spec": jax.ShapeDtypeStruct((2,), jnp.float32),
        "legacy": jax.random.PRNGKey(0),  # a uint32 array: an array like any other
    }
    want = ["legacy", "n", "spec", "w"]
    assert [tw.path_str(p) for p in tw.paths(tree, tw.arrays)] == want
    assert tw.mask(tree, tw.arrays)["key"] is False

    @jax.jit
    def inside(t):
        paths = [tw.path_str(p) for p in tw.paths(t, tw.arrays)]
        assert paths == ["legacy", "n", "w"], paths  # traced: every array is a tracer
        return tw.replace(t, tw.arrays, tw.zeros)

    out = inside({k: v for k, v in tree.items() if "spec" not in k})
    assert jnp.array_equal(jax.random.key_data(out["key"]), jax.random.key_data(key))
    assert (out["w"] == 0).all()
