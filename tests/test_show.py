"""tw.show: the table of leaves, the selection marks and the totals."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import treewalk as tw


def _mlp():
    return eqx.nn.MLP(2, 2, 4, 1, key=jax.random.key(0))


def test_rows_and_totals_plain_dict():
    params = {"dense": {"kernel": jnp.ones((4, 8)), "bias": jnp.zeros(8)}, "step": 3}
    table = tw.show(params)
    assert [tw.path_str(r.path) for r in table.rows] == ["dense/bias", "dense/kernel", "step"]
    assert [r.size for r in table.rows] == [8, 32, 0]
    assert table.total == 40 and table.selected == 0
    text = str(table)
    assert text.splitlines()[0].split() == ["path", "type", "shape", "dtype", "params"]
    assert "dense/kernel" in text and "(4, 8)" in text and "float32" in text
    assert text.splitlines()[-1] == "3 leaves, 40 parameters"


def test_selector_marks_and_percentage():
    params = {"dense": {"kernel": jnp.ones((4, 8)), "bias": jnp.zeros(8)}}
    table = tw.show(params, "**/bias")
    assert [r.selected for r in table.rows] == [True, False]
    assert (table.selected, table.total) == (8, 40)
    lines = str(table).splitlines()
    assert lines[0].split()[-1] == "sel"
    assert lines[1].endswith("*") and not lines[2].endswith("*")
    assert lines[-1] == "selector glob('**/bias'): 1 of 2 leaves, 8 of 40 parameters (20.0%)"


def test_layer_selection_marks_leaves_inside():
    mlp = _mlp()
    table = tw.show(mlp, tw.of_type(eqx.nn.Linear))
    by_path = {tw.path_str(r.path): r for r in table.rows}
    assert by_path["layers/0/weight"].selected and by_path["layers/1/bias"].selected
    assert not by_path["activation"].selected
    assert by_path["activation"].type == "function" and by_path["activation"].shape is None
    assert table.selected == table.total == 22


def test_nnx_boxes_are_one_row_typed_by_box():
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    table = tw.show(model, "**/kernel")
    assert [(tw.path_str(r.path), r.type, r.shape) for r in table.rows] == [
        ("bias", "Param", (3,)),
        ("kernel", "Param", (2, 3)),
    ]
    assert isinstance(table.rows[0].path[-1], tw.BoxKey)
    assert table.selected == 6


def test_abstract_tree_and_none():
    tree = {"w": jax.ShapeDtypeStruct((3, 5), jnp.bfloat16), "b": None, "x": np.zeros(2)}
    table = tw.show(tree)
    assert [(tw.path_str(r.path), r.type, r.dtype) for r in table.rows] == [
        ("w", "ShapeDtypeStruct", "bfloat16"),
        ("x", "ndarray", "float64"),
    ]
    assert table.total == 17


def test_max_rows_truncates_display_not_totals():
    tree = [jnp.ones(2)] * 20
    text = str(tw.show(tree, max_rows=4))
    assert "... 16 more rows ..." in text
    assert text.count("Array") == 4
    assert text.splitlines()[-1] == "20 leaves, 40 parameters"
    assert str(tw.show(tree, max_rows=None)).count("Array") == 20


def test_html_repr_escapes_and_marks():
    tree = {"<b>": jnp.ones(2), "bias": jnp.ones(3)}
    out = tw.show(tree, "bias")._repr_html_()
    assert out.startswith("<table") and "&lt;b&gt;" in out and "<b>" not in out
    assert out.count("&#10003;") == 1
    assert "selector glob(&#x27;bias&#x27;)" in out


def test_empty_selection_and_bad_selector():
    table = tw.show({"a": jnp.ones(2)}, "**/nothing")
    assert table.selected == 0 and str(table).endswith("0 of 1 leaf, 0 of 2 parameters (0.0%)")
    with pytest.raises(tw.SelectorError):
        tw.show({"a": 1}, 3)


def test_linen_partitioned_box_is_named():
    import flax.linen as nn

    params = {"kernel": nn.Partitioned(jnp.ones((2, 4)), names=(None, "model"))}
    [row] = tw.show(params, "kernel").rows
    assert (row.type, row.shape, row.selected) == ("Partitioned", (2, 4), True)
