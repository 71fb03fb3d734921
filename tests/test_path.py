import jax
import jax.numpy as jnp
import pytest
from jax.tree_util import DictKey, FlattenedIndexKey, GetAttrKey, SequenceKey

import treewalk as tw


@pytest.mark.parametrize(
    "path, segments, text",
    [
        ((), (), ""),
        (
            (DictKey("encoder"), SequenceKey(0), GetAttrKey("bias")),
            ("encoder", 0, "bias"),
            "encoder/0/bias",
        ),
        ((DictKey(3),), (3,), "3"),
        ((DictKey((1, 2)),), ("(1, 2)",), "(1, 2)"),
        ((FlattenedIndexKey(2),), (2,), "2"),
        ((DictKey("mlp/~/linear_0"), DictKey("w")), ("mlp/~/linear_0", "w"), "mlp/~/linear_0/w"),
        ((GetAttrKey("l1"), GetAttrKey("bias"), tw.BoxKey("value")), ("l1", "bias"), "l1/bias"),
        # A plain GetAttrKey('value') (an Equinox field called `value`) is a real segment.
        ((GetAttrKey("scale"), GetAttrKey("value")), ("scale", "value"), "scale/value"),
    ],
)
def test_segments_and_str(path, segments, text):
    assert tw.path_segments(path) == segments
    assert tw.path_str(path) == text


def test_box_key_is_a_getattr_key():
    k = tw.BoxKey("value")
    assert isinstance(k, GetAttrKey)
    assert k == GetAttrKey("value")
    assert jax.tree_util.keystr((DictKey("a"), k)) == "['a'].value"


def test_paths_from_jax_render_like_treewalk_paths():
    tree = {"a": [1, {"b": 2}], "c": (3,)}
    for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        assert tw.path_str(path) == jax.tree_util.keystr(path, simple=True, separator="/")


def test_namedtuple_paths_name_every_field():
    # jax.tree_util.flatten_one_level_with_keys names every namedtuple field after the first.
    from treewalk.testing import Pair

    assert [tw.path_str(p) for p in tw.paths(Pair(1, 2), tw.everything)] == ["", "first", "second"]


def test_unkeyed_custom_node_gets_flattened_index_keys():
    from treewalk.testing import Unkeyed

    ps = tw.paths(Unkeyed(1, 2), tw.everything)
    assert ps[1:] == [(FlattenedIndexKey(0),), (FlattenedIndexKey(1),)]
    assert [tw.path_str(p) for p in ps] == ["", "0", "1"]


def test_long_paths_in_errors_show_both_ends():
    deep: object = jnp.ones(2)
    for i in range(900):
        deep = {f"k{i % 7}": deep}
    with pytest.raises(tw.CallbackError) as e:
        tw.replace(deep, tw.arrays, lambda p, x, k: 1 / 0)
    msg = str(e.value)
    assert len(msg) < 400, msg
    path = tw.path_str(tw.paths(deep, tw.arrays)[0])
    assert len(path) > 1000 and path[:60] in msg and path[-60:] in msg
    assert "900 entries, the middle cut" in msg
