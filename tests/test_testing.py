"""treewalk.testing: the strategies draw what they promise, the structural law checks
pass on lawful transforms (treewalk's own) and catch the transforms that break each
law, and every failure is one AssertionError, whatever hypothesis' settings. The value
laws are tested in test_testing_values.py, the planted bugs in test_planted_bugs.py."""

import itertools
import os
import re
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import treewalk as tw
from treewalk.testing import (
    check_key_deterministic,
    check_laws,
    check_pure,
    check_structure_preserving,
    params_trees,
    pytrees,
    trees_equal,
)

N = 10  # examples per check: the checks themselves are what is tested here


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

    with pytest.raises(AssertionError, match=r"float32\[.*\] became float32\[.*, 2\]"):
        check_structure_preserving(widen, max_examples=N)


def test_structure_check_catches_a_dropped_leaf():
    def drop(tree):
        return tw.replace(tree, tw.arrays, lambda p, x, k: None, check=False, strict=False)

    with pytest.raises(AssertionError, match="became None"):
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
    with pytest.raises(AssertionError, match="was replaced in place"):
        check_pure(overwrite, trees=dicts, max_examples=N)


def test_key_check_catches_hidden_state():
    counter = itertools.count()

    def drifting(tree, key):
        key = jax.random.fold_in(key, next(counter))
        return tw.replace(tree, tw.arrays, _normal, key=key, strict=False)

    trees = st.just({"w": jnp.zeros(3)})
    with pytest.raises(AssertionError, match="differ at 'w'"):
        check_key_deterministic(drifting, trees=trees, max_examples=N)


def test_bad_arguments_are_treewalk_errors():
    with pytest.raises(tw.ArgumentError, match="callable"):
        check_pure(42)  # type: ignore[arg-type]
    with pytest.raises(tw.ArgumentError, match="hypothesis.settings"):
        check_pure(lambda t: t, settings={"max_examples": 5})  # type: ignore[arg-type]
    with pytest.raises(tw.ArgumentError, match="strategy.*st.just"):
        check_pure(lambda t: t, trees=[{"a": 1}])  # type: ignore[arg-type]


def test_key_check_needs_a_keyed_transform():
    with pytest.raises(TypeError, match="transform\\(tree, key\\)"):
        check_key_deterministic(lambda t: t)  # type: ignore[arg-type]


@given(pytrees())
def test_the_five_line_user_example(tree):
    # What the docs show a user: strategies straight into their own property.
    out = tw.replace(tree, tw.arrays, tw.zeros, strict=False)
    assert trees_equal(out, tw.replace(out, tw.arrays, tw.zeros, strict=False))


# ------------------------------------------------- one AssertionError, whatever happens


def _two_bugs(tree):
    """A shape change on lists, a crash on dicts: two distinct failures."""
    if isinstance(tree, dict) and tree:
        raise KeyError("no dicts, please")
    return tw.replace(tree, tw.arrays, lambda p, x, k: x[None], check=False, strict=False)


LISTS_AND_DICTS = st.one_of(
    st.lists(st.just(jnp.ones(2)), min_size=1, max_size=3),
    st.dictionaries(st.sampled_from("ab"), st.just(jnp.ones(2)), min_size=1),
)


@pytest.mark.parametrize("multiple", [True, False])
def test_two_distinct_failures_are_one_assertion_error(multiple):
    s = settings(report_multiple_bugs=multiple, database=None, max_examples=50)
    with pytest.raises(AssertionError) as info:
        check_structure_preserving(_two_bugs, trees=LISTS_AND_DICTS, settings=s)
    assert type(info.value) is AssertionError  # not hypothesis' ExceptionGroup
    text = str(info.value)
    assert text.startswith("check_structure_preserving: ")
    assert "Falsifying example" in text
    assert re.search(r"^  0 +float32\[2\]$", text, re.M) or re.search(r"^  a +", text, re.M)
    if multiple:  # hypothesis found both: the other one is noted
        assert "other distinct failure" in text
        assert "KeyError" in text or "became" in text


def test_an_exception_of_the_transform_is_a_failure_with_its_cause():
    def crash(tree):
        raise ValueError("boom")

    with pytest.raises(AssertionError, match="the transform raised ValueError: boom") as info:
        check_pure(crash, max_examples=N)
    cause = info.value.__cause__
    assert isinstance(cause, AssertionError) and isinstance(cause.__cause__, ValueError)


def test_a_flaky_failure_is_one_assertion_error():
    calls = itertools.count()

    def first_call_only(tree):  # mutates its input once, then never again
        if next(calls) == 0 and isinstance(tree, list):
            tree.append(1)
        return tree

    trees = st.lists(st.just(jnp.ones(2)), max_size=2)
    with pytest.raises(AssertionError, match="Flaky") as info:
        check_pure(first_call_only, trees=trees, settings=settings(database=None))
    assert type(info.value) is AssertionError


def test_a_deadline_of_yours_is_kept_and_its_overrun_is_an_assertion_error():
    def slow(tree):
        time.sleep(0.05)
        return tree

    s = settings(deadline=5, database=None, max_examples=3)
    with pytest.raises(AssertionError, match="deadline"):
        check_pure(slow, trees=st.just([jnp.ones(2)]), settings=s)


def _counting(transform):
    calls = []

    def counted(tree):
        calls.append(1)
        return transform(tree)

    return counted, calls


def test_settings_given_are_used_and_max_examples_overrides_them():
    f, calls = _counting(lambda t: t)
    s = settings(max_examples=7, database=None, phases=[Phase.generate])
    check_pure(f, trees=st.integers(0, 10**6).map(lambda i: [i]), settings=s)
    assert len(calls) == 7
    calls.clear()
    check_pure(f, trees=st.integers(0, 10**6).map(lambda i: [i]), settings=s, max_examples=3)
    assert len(calls) == 3


def test_the_active_profile_is_used_and_no_global_state_changes():
    before = (settings.default, list(warnings.filters), settings().max_examples)
    f, calls = _counting(lambda t: t)
    check_pure(f, trees=st.integers(0, 10**6).map(lambda i: [i]))
    assert len(calls) == settings().max_examples  # the conftest's profile
    assert (settings.default, list(warnings.filters), settings().max_examples) == before


# -------------------------------------------------------------- as a user runs them


def _python(args, cwd):
    """Run python with `args` in a fresh interpreter in `cwd`, as a user would: no
    conftest, no hypothesis profile, no simulated devices."""
    # Not CI either: on CI, hypothesis loads its own "ci" profile (no deadline), which
    # would hide the very failure this runs for.
    drop = ("HYPOTHESIS_PROFILE", "XLA_FLAGS", "CI", "TF_BUILD", "GITHUB_ACTIONS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONWARNINGS"] = "default"
    if isinstance(args, str):
        args = ["-c", textwrap.dedent(args)]
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


DOCS = Path(__file__).resolve().parent.parent / "docs" / "testing.md"


def test_docs_testing_page_runs_under_plain_pytest(tmp_path):
    """docs/testing.md's examples as a user runs them: each block a test file of its
    own, run by plain `pytest` in a folder with no conftest and no configuration, so
    under hypothesis' default settings (a 200 ms deadline, the example database), and
    the transform of `across_processes=True` imported in another process as pytest
    imports a test module."""
    blocks = re.findall(r"^```python\n(.*?)^```", DOCS.read_text(), re.S | re.M)
    assert len(blocks) >= 6
    for i, code in enumerate(blocks):
        # The page calls its tests at the end, to run as a script: pytest calls them.
        code = re.sub(r"^test_\w+\(\)\n", "", code, flags=re.M)
        (tmp_path / f"test_block_{i}.py").write_text(code)
    out = _python(["-m", "pytest", "-q", "-p", "no:cacheprovider", "."], tmp_path)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert re.search(r"\d+ passed", out.stdout), out.stdout[-2000:]


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


def _has_distinct_siblings(tree):
    """Does `tree` hold a list or tuple with two different children (not `None`)?"""
    found = []

    def visit(x):
        if isinstance(x, list | tuple):
            kids = {id(c) for c in x if c is not None}
            found.append(len(kids) >= 2)
        return False

    jax.tree_util.tree_flatten(tree, is_leaf=visit)
    return any(found)


def test_pytrees_structure_is_varied_and_ties_rare_and_deliberate():
    n, counts = 200, dict.fromkeys(["distinct", "tie", "root tie", "numpy", "half"], 0)

    @settings(max_examples=n, derandomize=True, database=None, deadline=None)
    @given(pytrees())
    def collect(tree):
        kinds = _kinds(tree)
        leaves = jax.tree.leaves(tree)
        counts["distinct"] += _has_distinct_siblings(tree)
        counts["tie"] += bool({"tied array", "shared variable"} & kinds)
        counts["root tie"] += isinstance(tree, list) and len(tree) == 2 and tree[0] is tree[1]
        counts["numpy"] += any(isinstance(x, np.ndarray) for x in leaves)
        counts["half"] += any(
            getattr(x, "dtype", None) in (jnp.float16, jnp.bfloat16) for x in leaves
        )

    collect()
    assert counts["distinct"] >= 0.45 * n, counts  # a list reversed in place shows
    assert 0.04 * n <= counts["tie"] <= 0.25 * n, counts
    assert counts["root tie"] <= 0.05 * n, counts
    assert counts["numpy"] >= 0.1 * n and counts["half"] >= 0.1 * n, counts


def _params_facts(framework, tree):
    """What a drawn model shows: its kinds of node, layouts and names."""
    import equinox as eqx
    from flax import nnx
    from flax.linen import Partitioned

    facts = set()
    paths = [tw.path_str(p) for p in tw.paths(tree, tw.arrays)]
    nodes = tw.select(tree, tw.everything, include_none=True)
    if any(tw.path_str(p).endswith("bias") and x is None for p, x in nodes):
        facts.add("None bias")
    if any(re.search(r"blocks?[/_]1(/|$)", p) for p in paths):
        facts.add("two blocks")
    if any(x.dtype != jnp.float32 for _, x in tw.select(tree, tw.params)):
        facts.add("low precision")
    if framework == "equinox":
        assert isinstance(tree, eqx.Module) and "blocks/0/mlp/layers/0/weight" in paths
        for _, lin in tw.select(tree, eqx.nn.Linear):
            assert lin.weight.shape == (lin.out_features, lin.in_features)  # (out, in)
            facts |= {"non-square"} if lin.in_features != lin.out_features else set()
        weights = [b.mlp.layers[0].weight for b in tree.blocks]
        if len(weights) > 1 and weights[1] is weights[0]:  # one array at two paths
            facts.add("shared block")
    if framework == "nnx":
        assert isinstance(tree, nnx.Module) and "blocks/0/mlp/fc1/kernel" in paths
        for _, lin in tw.select(tree, nnx.Linear):
            assert lin.kernel.shape == (lin.in_features, lin.out_features)  # (in, out)
        found = {type(v).__name__ for _, v in nnx.iter_graph(tree)}
        facts |= {"BatchStat", "RngKey"} & found
        if len(tree.blocks) > 1 and tree.blocks[1] is tree.blocks[0]:
            facts.add("shared block")
    if framework == "linen":
        assert set(tree) <= {"params", "batch_stats"}
        assert "params/blocks_0/mlp/Dense_0/kernel" in paths
        if any(
            isinstance(x, Partitioned)
            for x in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, Partitioned))
        ):
            facts.add("Partitioned")
        facts |= {"batch_stats"} if "batch_stats" in tree else set()
    if framework == "haiku":
        assert "model/~/block_0/~/mlp/~/linear_0" in tree
        assert all(set(v) <= {"w", "b", "scale", "offset", "embeddings"} for v in tree.values())
    return facts


WANTED = {
    "equinox": {"None bias", "two blocks", "low precision", "non-square", "shared block"},
    "nnx": {"None bias", "two blocks", "BatchStat", "RngKey", "shared block"},
    "linen": {"two blocks", "low precision", "Partitioned", "batch_stats"},
    "haiku": {"two blocks", "low precision"},
}


@pytest.mark.parametrize("framework", sorted(WANTED))
def test_params_trees_are_shaped_like_models(framework):
    seen = set()

    @settings(max_examples=60, derandomize=True, database=None, deadline=None)
    @given(params_trees(frameworks=framework))
    def collect(tree):
        seen.update(_params_facts(framework, tree))
        if framework in ("equinox", "nnx"):  # the selectors users write select something
            assert tw.paths(tree, "blocks/0/**") and tw.paths(tree, tw.name("weight", "kernel"))

    collect()
    assert seen >= WANTED[framework], WANTED[framework] - seen


def test_params_trees_draws_every_framework_by_default():
    seen = set()

    @settings(max_examples=40, derandomize=True, database=None, deadline=None)
    @given(params_trees())
    def collect(tree):
        seen.add(
            type(tree).__name__
            if not isinstance(tree, dict)
            else ("linen" if "params" in tree else "haiku")
        )

    collect()
    assert seen == {"EqxModel", "NnxModel", "linen", "haiku"}


def test_params_trees_says_what_is_wrong():
    with pytest.raises(tw.ArgumentError, match="'equinox', 'nnx', 'linen', 'haiku'"):
        params_trees(frameworks=["pytorch"])
    with pytest.raises(tw.ArgumentError, match="1 block at least"):
        params_trees(max_blocks=0)
    with pytest.raises(tw.ArgumentError, match="float32, bfloat16, float16"):
        params_trees(dtypes=["float64"])
