"""The benchmark's quick mode runs every case and prints a row for every tool.

Nothing about time is asserted: the quick mode only proves the harness and every
alternative it compares against still run (see bench/run.py and bench/RESULTS.md).
"""

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
    "1": ["treewalk", "tree_map_with_path identity", "floor: tree_flatten + tree_unflatten"],
    "2": ["treewalk", "tree_map_with_path + zeros_like", "eqx.tree_at", "penzai", "sepes"],
    "3": ["treewalk", "penzai", "tree_leaves(is_leaf=isinstance)"],
    "4": ["treewalk", "optax tree_random_like", "split, keys[i] per leaf"],
    "5c": ["compile: treewalk", "compile: per-leaf"],
    "5r": ["run: treewalk", "run: per-leaf"],
    "6m": ["treewalk: eqx.filter_eval_shape + replace", "construct eqx model"],
    "6t": ["treewalk: eqx.filter_eval_shape + replace", "construct eqx model"],
}


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    pytest.importorskip("sepes")
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
