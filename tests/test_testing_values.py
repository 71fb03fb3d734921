"""treewalk.testing's value laws: they hold for lawful transforms (treewalk's own), say
what broke them, and `check_key_deterministic(across_processes=True)` runs the
transform in a second process. Each wrong transform of the issue is in
test_planted_bugs.py."""

import io

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from penzai.core.variables import Parameter

import treewalk as tw
from treewalk.testing import (
    check_commutes_with_jit,
    check_commutes_with_vmap,
    check_idempotent,
    check_key_deterministic,
    check_matches_reference,
    check_only_selected,
    params_trees,
    trees_equal,
)
from treewalk.testing._processes import _dumps, _Unpickler

N = 10  # examples per check: the checks themselves are what is tested here


def halve(path, x, key):
    return x / 2


def normal(path, x, key):
    return jax.random.normal(key, x.shape, x.dtype)


def reinit(tree, key):
    """A lawful keyed transform, at module level: another process imports it."""
    return tw.replace(tree, tw.params, normal, key=key, strict=False)


def shift(path, x, key):
    return x + jax.random.uniform(key, (), x.dtype)  # one shape: compiles once a dtype


def jiggle(tree, key):
    """A lawful keyed transform that compiles little (each array draws a scalar)."""
    return tw.replace(tree, tw.params, shift, key=key, strict=False)


@pytest.mark.parametrize("sel", ["blocks/0/**", "**/kernel", tw.name("bias", "scale")])
def test_replace_changes_only_what_its_selector_covers(sel):
    def transform(tree):
        return tw.replace(tree, tw.as_selector(sel) & tw.params, halve, strict=False)

    check_only_selected(transform, sel, max_examples=N)


def test_a_change_outside_the_selector_names_the_leaf():
    def everything(tree):
        return tw.replace(tree, tw.params, halve, strict=False)

    with pytest.raises(AssertionError, match=r"at '.*', not selected by glob\('\*\*/bias'\)"):
        check_only_selected(everything, "**/bias", max_examples=N)


def test_only_selected_takes_only_selectors():
    with pytest.raises(tw.SelectorError):
        check_only_selected(lambda t: t, 42)


def test_the_reference_with_a_key_is_what_replace_draws():
    def reference(path, x, key):
        return shift(path, x, tw.key_for_path(key, path))

    check_matches_reference(jiggle, tw.params, reference, max_examples=N)


def test_a_reference_of_another_dtype_fails():
    def to_float32(tree):
        return tw.replace(tree, tw.params, lambda p, x, k: x.astype(jnp.float32), check=False)

    trees = params_trees(dtypes=["bfloat16"])
    with pytest.raises(AssertionError, match="bfloat16.* became float32"):
        check_matches_reference(to_float32, tw.params, lambda p, x: x, trees=trees)


def test_idempotent_transforms_pass_and_others_fail():
    check_idempotent(lambda t: tw.replace(t, tw.arrays, tw.zeros, strict=False), max_examples=N)
    with pytest.raises(AssertionError, match="applied twice"):
        check_idempotent(lambda t: tw.replace(t, tw.params, halve, strict=False))


def test_treewalk_transforms_commute_with_jit_and_vmap():
    def transform(tree):
        return tw.replace(tree, tw.params, halve, strict=False)

    # Each example compiles: a few only, and random draws on small trees.
    for check in (check_commutes_with_jit, check_commutes_with_vmap):
        check(transform, max_examples=5)
        check(transform, trees=params_trees(), max_examples=3)
        check(jiggle, max_examples=5)


def test_jit_and_vmap_try_twenty_trees_unless_told(monkeypatch):
    calls = []

    def counted(tree):
        calls.append(tree)
        return tree

    check_commutes_with_jit(counted, trees=st.integers(0, 10**6).map(lambda i: [jnp.ones(2), i]))
    assert len(calls) == 2 * min(settings().max_examples, 20)  # eagerly, and traced


def test_vmap_of_a_tree_without_arrays_is_vacuous():
    check_commutes_with_vmap(lambda t: t, trees=st.just({"a": 1, "b": "s", "c": None}))


def test_a_traced_value_in_a_leaf_box_is_named():
    def transform(tree):  # penzai Parameters are leaves: jit does not trace into them
        return tw.replace(tree, tw.params, halve)

    trees = st.just({"p": Parameter(value=jnp.ones(2), label="w")})
    with pytest.raises(AssertionError, match="traced value inside a Parameter"):
        check_commutes_with_jit(transform, trees=trees)


# ------------------------------------------------------------------ across processes


def test_keys_agree_across_processes():
    check_key_deterministic(jiggle, across_processes=True, max_examples=N)


def test_a_transform_another_process_cannot_import_is_refused():
    with pytest.raises(tw.ArgumentError, match="cannot go there.*module level"):
        check_key_deterministic(lambda t, k: t, across_processes=True)


def test_a_tree_that_cannot_be_pickled_is_refused():
    trees = st.just({"f": lambda x: x})  # a lambda leaf
    with pytest.raises(tw.ArgumentError, match="cannot be pickled"):
        check_key_deterministic(reinit, across_processes=True, trees=trees)


@pytest.mark.parametrize("framework", ["equinox", "nnx", "linen", "haiku"])
def test_drawn_models_go_to_another_process(framework):
    # Their classes are found by name, jax.nn.gelu (a custom_jvp) where jax.nn has it.
    @settings(max_examples=3, database=None, deadline=None)
    @given(params_trees(frameworks=framework))
    def roundtrip(model):
        again = _Unpickler(io.BytesIO(_dumps(model))).load()
        assert type(again) is type(model) and trees_equal(again, model)

    roundtrip()


def test_trees_equal_compares_prng_keys_by_their_data():
    a = nnx.Dropout(0.1, rngs=nnx.Rngs(0))
    assert trees_equal(a, nnx.Dropout(0.1, rngs=nnx.Rngs(0)))
    assert not trees_equal(a, nnx.Dropout(0.1, rngs=nnx.Rngs(1)))
