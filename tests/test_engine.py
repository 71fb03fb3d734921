"""Every front-end agrees with a small reference recursion written here, on every kind of
tree `treewalk.testing.pytrees()` draws (NNX modules and variables, linen `Partitioned`,
penzai parameters, `None`, static nodes, ties), and the defects issue 12 listed stay fixed.

The reference states the rules once, independently of the engine:

- the root is a node; a node's children are what a one-level JAX flatten gives;
- a box (NNX `Variable`, linen `Partitioned`, penzai `Parameter`) is not a node of its
  own for queries: the value inside is, at the box's path plus a `BoxKey`, seen with the
  box as its `outer`; the walks visit the box too;
- a mutable object (NNX module or variable, penzai parameter) reached again is not
  visited again; NNX's `_pytree__state` is never visited;
- `None` is a node without children; `replace` and queries skip it unless asked;
- a selector is asked about every node and a node it picks is handed over whole: the
  leaves `mask`, `labels` and `show` mark are those at or below an outermost pick, and a
  negation picks the other leaves.
"""

from __future__ import annotations

import subprocess
import sys

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st
from penzai import pz

import treewalk as tw
from treewalk.testing import pytrees, selectors, trees_equal

BOXES = (nnx.Variable, nn.Partitioned, nn.LogicallyPartitioned, pz.Parameter)
LEAF_BOXES = (pz.Parameter,)
MUTABLE = (nnx.Module, nnx.Variable, pz.Parameter)


def children(x):
    if x is None:
        return []
    if isinstance(x, jax.Array | np.ndarray | jax.ShapeDtypeStruct) or isinstance(
        x, int | float | complex | str | bool | np.generic
    ):
        return None
    if isinstance(x, LEAF_BOXES):
        return [(tw.BoxKey("value"), x.value)]
    entries, _ = jax.tree_util.tree_flatten_with_path(x, is_leaf=lambda y: y is not x)
    if len(entries) == 1 and not entries[0][0] and entries[0][1] is x:
        return None  # a leaf
    return [(p[0], c) for p, c in entries]


def reference(tree, *, walks=False):
    """`[(path, node, outer, is_leaf)]` of every visible node, in pre-order."""
    out, seen = [], set()

    def go(path, x, outer):
        # walks give fn a tied array once too (queries list every path it is at)
        tied = MUTABLE + ((jax.Array, np.ndarray) if walks else ())
        if isinstance(x, tied):
            if id(x) in seen:
                return
            seen.add(id(x))
        if isinstance(x, BOXES):
            if walks:
                out.append((path, x, None, False))
            ((entry, inner),) = children(x)
            go((*path, tw.BoxKey(entry.name)), inner, x)
            return
        kids = children(x)
        out.append((path, x, outer, kids is None))
        for entry, child in kids or ():
            if getattr(entry, "name", None) == "_pytree__state":
                continue
            go((*path, entry), child, None)

    go((), tree, None)
    return out


def node(path, x, outer):
    return tw.Node(path, x, outer, None)


def ref_select(tree, sel, outermost=False, include_none=False):
    """The reference selection: `sel` asked at every node with its ancestors as parents;
    with `outermost`, nothing below a hit is asked (or marked as met)."""
    hits, seen = [], set()

    def go(path, x, outer, parent):
        if isinstance(x, MUTABLE):
            if id(x) in seen:
                return
            seen.add(id(x))
        if isinstance(x, BOXES):
            ((entry, inner),) = children(x)
            go((*path, tw.BoxKey(entry.name)), inner, x, parent)
            return
        leaf = include_none if x is None else children(x) is None
        n = tw.Node(path, x, outer, parent, leaf)
        if (x is not None or include_none) and sel.match(n):
            hits.append((path, x))
            if outermost:
                return
        for entry, child in children(x) or ():
            if getattr(entry, "name", None) != "_pytree__state":
                go((*path, entry), child, None, n)

    go((), tree, None, None)
    return hits


def same(a, b):
    return [tw.path_str(p) for p, _ in a] == [tw.path_str(p) for p, _ in b] and all(
        x is y for (_, x), (_, y) in zip(a, b, strict=True)
    )


def snapshot(tree):
    return [
        (tw.path_str(p), type(x), np.asarray(x).copy() if tw.arrays.match(node(p, x, o)) else x)
        for p, x, o, leaf in reference(tree)
        if leaf
    ]


def unchanged(before, tree):
    after = snapshot(tree)
    return len(before) == len(after) and all(
        a[0] == b[0] and a[1] is b[1] and trees_equal(a[2], b[2])
        for a, b in zip(before, after, strict=True)
    )


@st.composite
def tree_and_selector(draw):
    tree = draw(pytrees())
    return tree, draw(selectors(tree))


@given(tree_and_selector(), st.booleans())
def test_queries_agree_with_the_reference(args, outermost):
    tree, sel = args
    before = snapshot(tree)
    expected = ref_select(tree, sel, outermost=outermost)
    assert same(tw.select(tree, sel, outermost=outermost), expected)
    assert tw.paths(tree, sel, outermost=outermost) == [p for p, _ in expected]
    top = ref_select(tree, sel, outermost=True)
    found = tw.where(tree, sel)(tree)
    assert len(found) == len(top) and all(x is y for x, (_, y) in zip(found, top, strict=True))
    assert unchanged(before, tree)


def covers(tops, s):
    """Is the leaf at path string `s` at or below one of the paths `tops`?"""
    return any(s == t or s.startswith(t + "/") or t == "" for t in tops)


@given(tree_and_selector())
def test_mask_labels_show_agree_with_the_reference(args):
    tree, sel = args
    leaves = [(p, x, o) for p, x, o, leaf in reference(tree) if leaf and x is not None]
    tops = {tw.path_str(p) for p, _ in ref_select(tree, sel, outermost=True)}
    m = tw.mask(tree, sel, strict=False)
    neg = tw.mask(tree, ~sel, strict=False)
    lab = tw.labels(tree, {"a": sel, "b": ~sel}, strict=False)
    got = {tw.path_str(p): v for p, v in tw.select(m, tw.everything) if isinstance(v, bool)}
    nots = {tw.path_str(p): v for p, v in tw.select(neg, tw.everything) if isinstance(v, bool)}
    labs = {tw.path_str(p): v for p, v in tw.select(lab, tw.everything) if v in ("a", "b")}
    # A mask of an NNX module is pure: a bool for each nnx.Param, nothing else.
    pure = isinstance(tree, nnx.Module)
    for p, _, o in leaves:  # a tie's later paths hold the first one's value: not checked
        s = tw.path_str(p)
        if pure and not isinstance(o, nnx.Param):
            assert s not in got
            continue
        assert got[s] == covers(tops, s), s  # the leaves replace would change
        assert nots[s] == (not got[s]), s  # a negation picks the other leaves
        assert labs[s] == ("a" if got[s] else "b"), s
    rows = tw.show(tree, sel, max_rows=None).rows
    assert [tw.path_str(r.path) for r in rows] == [tw.path_str(p) for p, _, _ in leaves]
    for r in rows:
        assert r.selected == covers(tops, tw.path_str(r.path)), tw.path_str(r.path)


@given(tree_and_selector())
def test_replace_agrees_with_the_reference(args):
    tree, sel = args
    before = snapshot(tree)
    calls = []

    def fn(path, x, key):
        calls.append((path, x))
        return x

    tw.replace(tree, sel, fn, strict=False)
    expected = ref_select(tree, sel, outermost=True)
    # ties: an array at several selected paths is given to fn once, at its first path
    first, seen = [], set()
    for p, x in expected:
        tie = id(x) if isinstance(x, jax.Array | np.ndarray) else None
        if tie is None or tie not in seen:
            first.append((p, x))
            seen.add(tie)
    assert [tw.path_str(p) for p, _ in calls] == [tw.path_str(p) for p, _ in first]
    for (_, got), (_, want) in zip(calls, first, strict=True):
        mutable = isinstance(want, MUTABLE) or any(
            isinstance(x, MUTABLE) or isinstance(o, MUTABLE) for _, x, o, _ in reference(want)
        )
        assert got is want or (mutable and type(got) is type(want))  # mutables: copies
    assert unchanged(before, tree)


@given(pytrees())
def test_walks_visit_what_the_reference_visits(tree):
    before = snapshot(tree)
    seen = []
    tw.prewalk(lambda p, x: seen.append(tw.path_str(p)) or x, tree)
    expected = [tw.path_str(p) for p, _, _, _ in reference(tree, walks=True)]
    assert seen == expected
    post = []
    tw.postwalk(lambda p, x: post.append(tw.path_str(p)) or x, tree)
    assert sorted(post) == sorted(expected)
    assert unchanged(before, tree)


# --- the defects issue 12 listed, on the real frameworks ------------------------------


def test_none_by_type_is_the_same_on_every_formulation():
    t = {"a": None, "b": jnp.ones(2)}
    one = tw.paths(t, tw.of_type(type(None)), include_none=True)
    two = tw.paths(t, tw.of_type(type(None)) & ~tw.inside("x"), include_none=True)
    assert one == two == [(tw.DictKey("a"),)]
    assert tw.paths(t, tw.of_type(type(None))) == tw.paths(
        t, tw.of_type(type(None)) & ~tw.inside("x")
    )


def test_nnx_bookkeeping_is_never_shown():
    m = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    shown = [tw.path_str(p) for p in tw.paths(m, tw.of_type(object))]
    assert not any("_pytree__state" in s for s in shown)
    seen = []
    tw.prewalk(lambda p, x: seen.append(tw.path_str(p)) or x, m)
    assert not any("_pytree__state" in s for s in seen)


def test_one_rule_for_subtree_identity():
    x = jnp.ones(2)
    t = {"enc": {"w": x, "bias": x + 1}, "dec": {"w": x}}
    by_glob = tw.replace(t, "enc/bias", tw.zeros)
    by_pred = tw.replace(t, tw.predicate(lambda p, v: tw.path_str(p) == "enc/bias"), tw.zeros)
    for out in (by_glob, by_pred):
        assert out["dec"] is not t["dec"]  # containers: always new
        assert out["dec"]["w"] is t["dec"]["w"]  # leaves not replaced: the input's


def test_is_leaf_errors_name_the_same_path_everywhere():
    t = {"enc": {"layers": [1]}}

    def raising(x):
        if isinstance(x, list):
            raise ValueError("no")
        return False

    msgs = set()
    for call in (
        lambda: tw.select(t, tw.of_type(dict), is_leaf=raising),
        lambda: tw.select(t, "**/layers", is_leaf=raising),
        lambda: tw.replace(t, tw.of_type(int), lambda p, x, k: x, is_leaf=raising),
        lambda: tw.mask(t, tw.everything, is_leaf=raising),
        lambda: tw.prewalk(lambda p, x: x, t, is_leaf=raising),
        lambda: tw.postwalk(lambda p, x: x, t, is_leaf=raising),
    ):
        with pytest.raises(tw.CallbackError) as info:
            call()
        msgs.add(str(info.value))
    assert msgs == {"is_leaf raised ValueError at path 'enc/layers': no"}


class Tied(nnx.Module):
    def __init__(self, rngs):
        self.emb = nnx.Linear(3, 3, rngs=rngs)
        self.head = nnx.Linear(3, 3, rngs=rngs)
        self.head.kernel = self.emb.kernel


def test_identity_fn_on_tied_nnx_layers_keeps_the_tie():
    m = Tied(nnx.Rngs(0))
    out = tw.replace(m, nnx.Linear, lambda p, layer, k: layer)
    assert out.head.kernel is out.emb.kernel
    assert out.emb.kernel is not m.emb.kernel  # a copy, never the input's
    out = tw.replace(m, "emb", lambda p, layer, k: layer)  # one side selected
    assert out.head.kernel is out.emb.kernel


def test_prewalk_cannot_edit_the_input_nnx_model():
    m = nnx.Linear(2, 3, rngs=nnx.Rngs(0))

    def edit(p, x):
        if isinstance(x, nnx.Linear):
            x.bias = nnx.Param(jnp.ones(3))
        return x

    out = tw.prewalk(edit, m)
    assert (m.bias[...] == 0).all() and (out.bias[...] == 1).all()


def test_static_nodes_keep_the_tree_structure():
    @jax.tree_util.register_static
    class StaticInt(int):
        pass

    t = [StaticInt(1), jnp.ones(2)]
    for m in (tw.mask(t, tw.inside(tw.everything)), tw.mask(t, tw.everything)):
        assert jax.tree_util.tree_structure(m) == jax.tree_util.tree_structure(t)


def test_walks_keep_array_ties():
    s = np.ones(2)
    for walk in (tw.prewalk, tw.postwalk):
        o = walk(lambda p, x: x * 2 if isinstance(x, np.ndarray) else x, [s, s])
        assert o[0] is o[1] and (o[0] == 2).all()


def deep(n):
    t = jnp.ones(2)
    for _ in range(n):
        t = {"a": t}
    return t


def test_a_900_deep_tree_works_in_every_call():
    t = deep(900)
    assert len(tw.paths(t, "**/a")) == 900
    assert len(tw.select(t, tw.arrays)) == 1
    assert tw.where(t, tw.arrays)(t)[0] is tw.select(t, tw.arrays)[0][1]
    tw.mask(t, tw.inside("a"))
    tw.labels(t, {"x": tw.arrays})
    tw.replace(t, tw.arrays, tw.zeros)
    tw.replace(t, tw.arrays, tw.zeros, key=jax.random.key(0))
    tw.show(t, tw.arrays)
    tw.prewalk(lambda p, x: x, t)
    tw.postwalk(lambda p, x: x, t)
    with pytest.raises(tw.NoMatchError):
        tw.replace(t, "**/b", tw.zeros)


DEEP_CALLS = """
import sys, jax, jax.numpy as jnp, treewalk as tw
assert sys.getrecursionlimit() == 1000
t = jnp.ones(2)
for _ in range(900):
    t = {"a": t}
tw.paths(t, "**/a"); tw.mask(t, tw.inside("a")); tw.show(t, tw.arrays)
tw.replace(t, tw.arrays, tw.zeros, key=jax.random.key(0))  # segments, parents kept
class Depth:  # an fn with context: reads the parent's segments
    def tw_call(self, n, key):
        return n.node + len(n.parent.segs)
    def __call__(self, path, node, key):
        raise NotImplementedError
x = tw.replace(t, tw.arrays, Depth())
for _ in range(900):
    x = x["a"]
assert (x == 900).all()
tw.prewalk(lambda p, x: x, t); tw.postwalk(lambda p, x: x, t)
tw.where(t, tw.arrays)(t); tw.labels(t, {"x": tw.arrays})
try:
    tw.replace(t, "**/b", tw.zeros)
except tw.NoMatchError:
    pass
print("ok")
"""


def test_a_900_deep_tree_works_with_pythons_default_recursion_limit():
    # In a fresh interpreter: hypothesis raises the limit for the tests it runs, and
    # may leave it raised for the tests after them.
    done = subprocess.run(
        [sys.executable, "-c", DEEP_CALLS], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


def test_no_call_touches_the_gc():
    import gc

    gc.disable()
    try:
        tw.replace({"a": jnp.ones(2)}, "a", tw.zeros)
        tw.select({"a": 1}, tw.everything)
        assert not gc.isenabled()
    finally:
        gc.enable()
    gc_seen = []

    def fn(p, x, k):
        gc_seen.append(gc.isenabled())
        return x

    tw.replace({"a": jnp.ones(2)}, "a", fn)
    assert gc_seen == [True]


def test_equinox_linear_without_bias_none_is_never_selected():
    lin = eqx.nn.Linear(2, 2, use_bias=False, key=jax.random.key(0))
    assert tw.paths(lin, "bias") == []
    assert tw.paths(lin, "bias", include_none=True) == [(jax.tree_util.GetAttrKey("bias"),)]
    out = tw.replace(lin, "bias", lambda p, x, k: jnp.zeros(2), include_none=True)
    assert out.bias.shape == (2,)


def test_replace_input_untouched_when_fn_raises_on_nnx():
    m = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    kernel, before = m.kernel, np.asarray(m.kernel[...]).copy()

    def boom(p, layer, k):
        layer.kernel = nnx.Param(jnp.zeros((2, 3)))
        raise ValueError("boom")

    with pytest.raises(tw.CallbackError, match="ValueError at path <root>"):
        tw.replace(m, nnx.Linear, boom)
    assert m.kernel is kernel and (np.asarray(m.kernel[...]) == before).all()


def test_walks_keep_a_tied_variable_one_object():
    p = nnx.Param(jnp.ones(2))
    for walk in (tw.prewalk, tw.postwalk):
        out = walk(lambda path, x: x, [p, p])
        assert out[0] is out[1] and out[0] is not p
        assert tw.paths(out, tw.arrays) == tw.paths([p, p], tw.arrays)


def test_postwalk_asks_is_leaf_once_per_node_and_keeps_its_leaves():
    asked = []

    def stop_at_pairs(x):
        asked.append(x)
        return isinstance(x, tuple)

    t = {"a": (1, 2), "b": [3, {"c": 4}]}
    seen = []
    out = tw.postwalk(lambda p, x: seen.append(tw.path_str(p)) or x, t, is_leaf=stop_at_pairs)
    assert out == t and seen == ["a", "b/0", "b/1/c", "b/1", "b", ""]
    # internal nodes and unknown leaves only: ints are leaves without asking
    assert [type(x) for x in asked] == [dict, tuple, list, dict]


# --- strictness against the reference --------------------------------------------------


def ref_atoms(sel):
    """The checked atoms of `sel` in order, each once (an `inside` is one atom)."""
    if sel.checked:
        return [sel]
    out = []
    for part in sel.parts:
        out += [a for a in ref_atoms(part) if a not in out]
    return out


@st.composite
def strict_cases(draw):
    tree = draw(pytrees())
    words = sorted({str(s) for p in tw.paths(tree, tw.everything) for s in tw.path_segments(p)})
    words = [w for w in words if w and "/" not in w and not any(c in w for c in "*?[]")]
    word = st.sampled_from(words or ["a"])
    typo = st.one_of(
        word.map(lambda w: tw.name(w + "x")),
        word.map(lambda w: tw.glob("**/" + w + "_")),
        word.map(lambda w: tw.regex(".*" + w + "zz")),
    )
    own = selectors(tree)
    sel = draw(
        st.one_of(
            own,
            typo,
            st.tuples(own, typo).map(lambda ab: ab[0] | ab[1]),
            st.tuples(own, typo).map(lambda ab: ab[0] & ~ab[1]),
            st.tuples(own, own).map(lambda ab: ab[0] & ab[1]),
        )
    )
    return tree, sel


@given(strict_cases())
def test_strict_calls_agree_with_the_reference(args):
    tree, sel = args
    has_leaves = any(leaf and x is not None for _, x, _, leaf in reference(tree))
    dead = [a for a in ref_atoms(sel) if not ref_select(tree, a)]
    empty = not ref_select(tree, sel, outermost=True)
    calls = [
        ("tw.mask", lambda: tw.mask(tree, sel), bool(dead)),
        ("tw.labels", lambda: tw.labels(tree, {"a": sel}, default="b"), bool(dead)),
        ("tw.replace", lambda: tw.replace(tree, sel, lambda p, x, k: x), bool(dead) or empty),
    ]
    for call, run, fails in calls:
        if has_leaves and fails:
            with pytest.raises(tw.NoMatchError) as info:
                run()
            msg = str(info.value)
            if dead:  # the first dead atom is blamed, by its repr
                assert msg.startswith(f"{call}: {dead[0]!r}"[:40]), (msg, dead)
            else:
                assert "selects nothing" in msg, msg
        else:
            run()  # no error: every atom matched, or there is no leaf to miss
