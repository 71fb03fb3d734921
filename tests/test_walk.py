import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.tree_util import GetAttrKey

import treewalk as tw
from treewalk.testing import Keyed, Pair, Unkeyed, pytrees, trees_equal

WALKS = [tw.prewalk, tw.postwalk]


def resolve(tree, path):
    """Follow a key path one JAX flatten level at a time (the child whose key entry is
    the path's next one)."""
    node = tree
    for entry in path:
        kids = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda y, n=node: y is not n)
        matches = [c for (k,), c in [(p, c) for p, c in kids[0] if len(p) == 1] if k == entry]
        if not matches and isinstance(entry, GetAttrKey):  # a penzai Parameter's value
            matches = [getattr(node, entry.name)]
        assert matches, (path, entry)
        node = matches[0]
    return node


def record(walk, tree, **kw):
    seen = []

    def fn(path, node):
        seen.append((path, node))
        return node

    out = walk(fn, tree, **kw)
    return out, seen


@pytest.mark.parametrize("walk", WALKS)
@given(tree=pytrees())
def test_identity_returns_equal_tree_with_same_treedef(walk, tree):
    out, _ = record(walk, tree)
    assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(tree)
    assert trees_equal(out, tree)


@given(tree=pytrees())
def test_visit_order(tree):
    _, pre = record(tw.prewalk, tree)
    _, post = record(tw.postwalk, tree)
    pre_paths = [p for p, _ in pre]
    post_paths = [p for p, _ in post]
    assert sorted(map(repr, pre_paths)) == sorted(map(repr, post_paths))
    assert pre_paths[0] == () and post_paths[-1] == ()
    for order, parents_first in ((pre_paths, True), (post_paths, False)):
        position = {p: i for i, p in enumerate(order)}
        for p, i in position.items():
            if p:
                parent = position[p[:-1]]
                assert (parent < i) if parents_first else (parent > i)


@given(tree=pytrees())
def test_every_visited_path_resolves_to_its_node(tree):
    _, seen = record(tw.prewalk, tree)
    for path, node in seen:
        expected = resolve(tree, path)
        # fn gets the input's own nodes, but for mutable objects (NNX variables and
        # modules), which it gets as private copies: an in-place edit cannot reach the input.
        assert expected is node or (type(expected) is type(node) and trees_equal(expected, node))


@given(tree=pytrees(), data=st.data())
def test_exclude_prunes_untouched(tree, data):
    all_paths = [p for p, _ in record(tw.prewalk, tree)[1]]
    cut = data.draw(st.sampled_from(all_paths))
    for walk in WALKS:
        out, seen = record(walk, tree, exclude=lambda p, x, cut=cut: p == cut)
        assert not any(p[: len(cut)] == cut for p, _ in seen)
        assert resolve(out, cut) is resolve(tree, cut)


def test_none_and_empty_containers_keep_their_place():
    tree = {"a": None, "b": [], "c": {}, "d": (None, 1), "e": Pair(None, [])}
    out, seen = record(tw.prewalk, tree)
    assert out == tree
    assert ("a" in [tw.path_str(p) for p, _ in seen]) and (
        "d/0" in [tw.path_str(p) for p, _ in seen]
    )
    out = tw.postwalk(lambda p, x: x + 1 if isinstance(x, int) else x, tree)
    assert out == {"a": None, "b": [], "c": {}, "d": (None, 2), "e": Pair(None, [])}


def test_prewalk_descends_into_what_fn_returned():
    def fn(path, node):
        if isinstance(node, int):
            return {"was": node + 10, "twice": 2 * node + 10} if node < 10 else node
        return node

    assert tw.prewalk(fn, [1, 2]) == [{"was": 11, "twice": 12}, {"was": 12, "twice": 14}]
    seen = []
    tw.prewalk(lambda p, x: seen.append(tw.path_str(p)) or fn(p, x), [3])
    assert seen == ["", "0", "0/twice", "0/was"]  # JAX visits dict keys sorted


def test_postwalk_sees_rebuilt_children():
    tree = {"a": [1, 2], "b": Keyed(3, Unkeyed(4, 5))}
    out = tw.postwalk(lambda p, x: x * 10 if isinstance(x, int) else x, tree)
    assert out == {"a": [10, 20], "b": Keyed(30, Unkeyed(40, 50))}
    sizes = tw.postwalk(lambda p, x: sum(x) if isinstance(x, list) else x, [[1, 2], [3]])
    assert sizes == 6


def test_is_leaf_stops_flattening():
    tree = {"a": (1, 2), "b": [(3, 4)]}
    out, seen = record(tw.prewalk, tree, is_leaf=lambda x: isinstance(x, tuple))
    assert [tw.path_str(p) for p, _ in seen] == ["", "a", "b", "b/0"]
    assert out == tree


def test_custom_nodes_rebuild():
    tree = Pair(Keyed(jnp.ones(2), None), Unkeyed(1, [2]))
    out = tw.postwalk(lambda p, x: x + 1 if isinstance(x, int) else x, tree)
    assert (
        isinstance(out, Pair) and isinstance(out.first, Keyed) and isinstance(out.second, Unkeyed)
    )
    assert out.second.items == (2, [3])


def test_containers_are_new_and_leaves_shared():
    tree = {"a": {"x": jnp.ones(2)}, "b": {"y": 1}}
    for walk in WALKS:
        out = walk(lambda p, x: 2 if isinstance(x, int) and x == 1 else x, tree)
        assert out is not tree and out["a"] is not tree["a"] and out["b"] == {"y": 2}
        assert out["a"]["x"] is tree["a"]["x"]


def test_fn_that_raises_names_the_path_and_leaves_input_untouched():
    tree = {"a": {"b": np.ones(2)}, "c": [1, 2]}
    before = copy.deepcopy(tree)

    def fn(path, node):
        if tw.path_str(path) == "c/1":
            raise ValueError("boom")
        return node * 2 if isinstance(node, np.ndarray | int) else node

    for walk in WALKS:
        with pytest.raises(tw.CallbackError, match=r"ValueError at path 'c/1': boom") as info:
            walk(fn, tree)
        assert isinstance(info.value.__cause__, ValueError)
        assert trees_equal(tree, before)


@pytest.mark.parametrize("walk", WALKS)
def test_bad_arguments(walk):
    with pytest.raises(tw.ArgumentError, match="`fn` must be callable"):
        walk(3, {"a": 1})
    with pytest.raises(tw.ArgumentError, match="`exclude` must be callable"):
        walk(lambda p, x: x, {"a": 1}, exclude="a")
    with pytest.raises(tw.ArgumentError, match="`is_leaf` must be callable"):
        walk(lambda p, x: x, {"a": 1}, is_leaf=1)
    with pytest.raises(tw.TreewalkError, match=r"is_leaf raised ZeroDivisionError at path <root>"):
        walk(lambda p, x: x, {"a": 1}, is_leaf=lambda x: 1 / 0)
    with pytest.raises(tw.CallbackError, match=r"exclude raised KeyError at path 'a'"):
        walk(lambda p, x: x, {"a": 1}, exclude=lambda p, x: {}[p] if p else False)
