"""The benchmark's quick mode runs every case and prints a row for every tool.

Nothing about time is asserted: the quick mode only proves the harness and every
alternative it compares against still run (see bench/run.py and bench/RESULTS.md).
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "run.py"

# (case, tree prefix, tool) rows the quick mode must produce.
EXPECTED = {
    "1": [
        "treewalk replace(tw.arrays, identity)",
        "treewalk replace(tw.arrays, new leaf)",
        "tree_map_with_path identity",
        "tree_map_with_path new leaf",
        "floor: tree_flatten + tree_unflatten",
        "floor with paths",
    ],
    "2": [
        "treewalk",
        "tree_map_with_path + zeros_like",
        "eqx.tree_at(where",
        "eqx.tree_at(tw.where",
        "penzai",
        "nnx.split",
    ],
    "3": ["treewalk", "penzai", "tree_leaves(is_leaf=isinstance)"],
    "4": ["treewalk", "optax tree_random_like", "split, keys[i] per leaf"],
    "5c": ["compile: treewalk", "compile: per-leaf"],
    "5r": ["run: treewalk", "run: per-leaf"],
    "6m": ["treewalk: eqx.filter_eval_shape + replace", "construct eqx model"],
    "6t": ["treewalk: eqx.filter_eval_shape + replace", "construct eqx model"],
    "10t": ["treewalk: tw.load, 1 process", "treewalk: tw.load, 2 processes"],
    "10r": ["read / share, 1 process", "read / share, 2 processes x 2 devices, process 1"],
    "10m": ["peak / share, 1 process", "peak / share, 2 processes x 2 devices, process 1"],
    "10e": ["treewalk: tw.export, 1 process", "treewalk: tw.export, 2 processes"],
    "10x": ["export peak / largest array, 1 process", "export peak / largest array, 2 proc"],
}


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("bench") / "rows.json"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--repeats", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| case | tree | tool | median | ratio to treewalk |" in proc.stdout
    return json.loads(out.read_text())


if importlib.util.find_spec("sepes") is not None:  # the `bench` extra
    EXPECTED["2"].append("sepes")


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_every_case_has_its_rows(rows: list[dict], case: str) -> None:
    tools = [r["tool"] for r in rows if r["case"] == case]
    for want in EXPECTED[case]:
        assert any(t.startswith(want) for t in tools), (case, want, tools)


def test_every_row_has_a_number(rows: list[dict]) -> None:
    assert rows
    for r in rows:
        assert isinstance(r["value"], float) and r["value"] == r["value"], r  # not NaN
        assert r["value"] > 0, r


def test_big_leaves_are_drawn_one_by_one() -> None:
    # Found by case 6: stacking big leaves doubled the peak memory of a materialisation.
    import jax
    import jax.numpy as jnp

    import treewalk as tw

    calls = []

    class Normal(tw.initializer):
        def tw_batched(self, nodes, keys, signature):  # type: ignore[no-untyped-def]
            calls.append(signature)
            return super().tw_batched(nodes, keys, signature)

    init = Normal(jax.nn.initializers.normal(1.0))

    def big() -> jax.ShapeDtypeStruct:  # above tw's stacking limit; distinct (not tied)
        return jax.ShapeDtypeStruct((257, 256), jnp.float32)

    tree = {"a": big(), "b": big(), "c": jnp.zeros(3), "d": jnp.zeros(3)}
    key = jax.random.key(0)
    out = tw.replace(tree, tw.arrays, init, key=key)
    assert [s[:2] for s in calls] == [((3,), jnp.float32)]  # only the small leaves stacked
    for name in "ab":
        want = jax.random.normal(tw.key_for_path(key, (name,)), (257, 256))
        assert jnp.array_equal(out[name], want)
