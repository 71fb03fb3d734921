"""treewalk.testing law checks: they pass on lawful transforms (treewalk's own), and
catch the transforms that break each law."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import treewalk as tw
from treewalk.testing import (
    check_key_deterministic,
    check_laws,
    check_pure,
    check_structure_preserving,
    pytrees,
    trees_equal,
)

N = 15  # examples per check: the checks themselves are what is tested here


def _normal(path, x, key):
    return jax.random.normal(key, x.shape).astype(x.dtype)


def reinit(tree, key):
    return tw.replace(tree, tw.arrays, _normal, key=key, strict=False)


def test_treewalk_transforms_obey_the_laws():
    check_laws(lambda t: tw.replace(t, tw.arrays, tw.zeros, strict=False), max_examples=N)
    check_laws(reinit, max_examples=N)
    check_laws(lambda t: tw.prewalk(lambda p, x: x, t), max_examples=N)
    check_laws(lambda t: tw.postwalk(lambda p, x: x, t), max_examples=N)


def test_split_keys_are_deterministic_too():
    check_key_deterministic(
        lambda t, k: tw.replace(t, tw.arrays, _normal, key=k, keys="split", strict=False),
        max_examples=N,
    )


def test_structure_check_catches_a_shape_change():
    def widen(tree):
        return tw.replace(
            tree, tw.arrays, lambda p, x, k: jnp.zeros((*x.shape, 2)), check=False, strict=False
        )

    with pytest.raises(AssertionError, match="changed from"):
        check_structure_preserving(widen, max_examples=N)


def test_structure_check_catches_a_dropped_leaf():
    def drop(tree):
        return tw.replace(tree, tw.arrays, lambda p, x, k: None, check=False, strict=False)

    with pytest.raises(AssertionError, match="structure changed"):
        check_structure_preserving(drop, max_examples=N)


def test_pure_check_catches_in_place_writes():
    def scribble(tree):
        for x in jax.tree.leaves(tree):
            if isinstance(x, np.ndarray) and x.size:
                x[...] = 7
        return tree

    arrays = st.lists(st.integers(1, 3).map(lambda n: np.zeros(n)), min_size=1, max_size=3)
    with pytest.raises(AssertionError, match="written in place"):
        check_pure(scribble, trees=arrays, max_examples=N)


def test_pure_check_catches_replaced_leaves_in_a_mutable_container():
    def overwrite(tree):
        if isinstance(tree, dict):
            for k in tree:
                tree[k] = 0
        return tree

    dicts = st.dictionaries(st.sampled_from("abc"), st.just(jnp.ones(2)), min_size=1)
    with pytest.raises(AssertionError, match="was replaced"):
        check_pure(overwrite, trees=dicts, max_examples=N)


def test_key_check_catches_hidden_state():
    counter = itertools.count()

    def drifting(tree, key):
        key = jax.random.fold_in(key, next(counter))
        return tw.replace(tree, tw.arrays, _normal, key=key, strict=False)

    trees = st.just({"w": jnp.zeros(3)})
    with pytest.raises(AssertionError, match="differ at 'w'"):
        check_key_deterministic(drifting, trees=trees, max_examples=N)


def test_key_check_needs_a_keyed_transform():
    with pytest.raises(TypeError, match="transform\\(tree, key\\)"):
        check_key_deterministic(lambda t: t)


@given(pytrees())
def test_the_five_line_user_example(tree):
    # What the docs show a user: strategies straight into their own property.
    out = tw.replace(tree, tw.arrays, tw.zeros, strict=False)
    assert trees_equal(out, tw.replace(out, tw.arrays, tw.zeros, strict=False))
