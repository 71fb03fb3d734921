"""treewalk.testing law checks: they pass on lawful transforms (treewalk's own), and
catch the transforms that break each law."""

import itertools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
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
        lambda t, k: tw.replace(t, tw.arrays, _normal, key=k, key_policy="split", strict=False),
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
        check_key_deterministic(lambda t: t)  # type: ignore[arg-type]


@given(pytrees())
def test_the_five_line_user_example(tree):
    # What the docs show a user: strategies straight into their own property.
    out = tw.replace(tree, tw.arrays, tw.zeros, strict=False)
    assert trees_equal(out, tw.replace(out, tw.arrays, tw.zeros, strict=False))


# -------------------------------------------------------------- as a user runs them


def _python(script, cwd):
    """Run `script` in a fresh interpreter in `cwd`, as a user would: no conftest, no
    hypothesis profile, no simulated devices."""
    # Not CI either: on CI, hypothesis loads its own "ci" profile (no deadline), which
    # would hide the very failure this runs for.
    drop = ("HYPOTHESIS_PROFILE", "XLA_FLAGS", "CI", "TF_BUILD", "GITHUB_ACTIONS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONWARNINGS"] = "default"
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_docs_example_passes_with_hypothesis_defaults(tmp_path):
    """The example of docs/testing.md and of `check_laws`' docstring, in a user's own
    script: hypothesis' default settings (a 200 ms deadline) and no conftest."""
    script = """
        import jax
        import jax.numpy as jnp
        import hypothesis
        import treewalk as tw
        from treewalk.testing import check_laws

        assert hypothesis.settings().deadline is not None  # the defaults, not a profile

        def jitter(tree, key):
            floats = tw.arrays & tw.predicate(lambda p, x: jnp.issubdtype(x.dtype, jnp.floating))
            noise = lambda p, x, k: x + 1e-3 * jax.random.normal(k, x.shape, x.dtype)
            return tw.replace(tree, floats, noise, key=key, strict=False)

        check_laws(jitter, max_examples=10)
        check_laws(lambda t: tw.replace(t, tw.arrays, tw.zeros, strict=False), max_examples=10)
        print("laws hold")
    """
    out = _python(script, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "laws hold" in out.stdout


def test_import_without_hypothesis_says_what_to_install(tmp_path):
    script = """
        import sys

        sys.modules["hypothesis"] = None  # as if it were not installed
        import treewalk  # the core does not need it
        try:
            import treewalk.testing
        except ImportError as e:
            assert 'pip install "jax-treewalk[testing]"' in str(e), str(e)
        else:
            raise SystemExit("treewalk.testing imported without hypothesis")
        del sys.modules["hypothesis"]
        import treewalk.testing

        frameworks = {"equinox", "flax", "haiku", "penzai"} & set(sys.modules)
        assert not frameworks, f"importing treewalk.testing imported {frameworks}"
        print("ok")
    """
    out = _python(script, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "ok"


# ------------------------------------------------------------------ the kinds drawn


def _kinds(tree):
    """The kinds of node in `tree`, every node visited (boxes and modules included)."""
    import flax.linen as nn
    from flax import nnx
    from penzai.core.variables import Parameter

    from treewalk.testing import NnxNode, Static

    found, seen = set(), {}
    kinds = {
        "nnx module": NnxNode,
        "nnx variable": nnx.Variable,
        "nnx state": nnx.State,
        "partitioned": nn.Partitioned,
        "penzai parameter": Parameter,
        "static": Static,
    }

    def visit(x):
        found.update(k for k, t in kinds.items() if isinstance(x, t))
        if x is None:
            found.add("none")
        if isinstance(x, jax.Array | nnx.Variable):
            if id(x) in seen:
                found.add("shared variable" if isinstance(x, nnx.Variable) else "tied array")
            seen[id(x)] = x  # kept alive, so ids stay distinct
        return False

    jax.tree_util.tree_flatten(tree, is_leaf=visit)
    return found


ALL_KINDS = {"nnx module", "nnx variable", "nnx state", "partitioned", "penzai parameter",
             "static", "none", "tied array", "shared variable"}  # fmt: skip


def _drawn(strategy, n=300):
    found = set()

    @settings(max_examples=n, derandomize=True, database=None, deadline=None)
    @given(strategy)
    def collect(tree):
        found.update(_kinds(tree))

    collect()
    return found


def test_pytrees_draws_every_kind():
    assert _drawn(pytrees()) >= ALL_KINDS


def test_pytrees_kinds_can_be_turned_off():
    off = pytrees(nnx=False, linen=False, penzai=False, static=False, ties=False, none=False)
    assert not _drawn(off, n=100) & ALL_KINDS


def test_trees_equal_looks_inside_leaf_boxes():
    from penzai.core.variables import Parameter

    a = {"p": Parameter(value=jnp.ones(2), label="w")}
    assert trees_equal(a, {"p": Parameter(value=jnp.ones(2), label="w")})
    assert not trees_equal(a, {"p": Parameter(value=jnp.zeros(2), label="w")})
    assert not trees_equal(a, {"p": Parameter(value=jnp.ones(2), label="v")})
