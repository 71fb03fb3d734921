"""treewalk's types, as a user's type checker sees them: pyright's `--verifytypes`
completeness of the public API, and a user script in strict mode that calls the whole API
with no error. pyright is in the `test` dependency group; without it these are skipped."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

#: The share of public symbols whose types pyright knows, at least.
COMPLETENESS = 0.95

#: A user's script: strict mode, every front-end, and no `Unknown` reaches it.
SNIPPET = '''\
# pyright: strict
"""A user's script, checked in strict mode: treewalk's API must be fully typed."""

from typing import Any

import jax
import numpy as np

import treewalk as tw

key = jax.random.key(0)
# (jax.numpy's own `ones`/`zeros` are not strict-clean in JAX's stubs: jax.random is.)
params: dict[str, Any] = {
    "encoder": {"w": jax.random.normal(key, (4, 8)), "bias": np.zeros(8, np.float32)},
    "head": {"w": jax.random.normal(key, (8, 2)), "bias": np.zeros(2, np.float32)},
}


def halve(path: tuple[Any, ...], x: Any, key: Any) -> Any:
    return x / 2


sel: tw.Selector = tw.glob("**/w") & ~tw.name("bias") | tw.regex(r"head/.*")
sel2 = tw.arrays & tw.inside(tw.of_type(dict)) & tw.predicate(lambda p, x: np.ndim(x) == 2)

out = tw.replace(params, "**/w", halve)
out = tw.replace(params, sel, tw.init.he_normal(), key=key)
out = tw.replace(out, "**/bias", tw.zeros)
out = tw.replace(out, "**/bias", tw.constant(0.5))
out = tw.replace(out, sel2, tw.initializer(jax.nn.initializers.lecun_normal()), key=key)
for path, leaf in tw.select(out, sel):
    assert tw.path_str(path) and tw.path_segments(path) and leaf.shape
found: list[tuple[Any, ...]] = tw.paths(out, "**/w")
assert [tw.path_str(p) for p in found] == ["encoder/w", "head/w"]
decay = tw.mask(out, ~tw.name("bias"))
groups = tw.labels(out, {"no_decay": "**/bias"}, default="decay")
ws = tw.where(out, tw.name("w"))(out)
table = tw.show(out, sel)
assert table.selected <= table.total and str(table)
assert decay["head"]["bias"] is False and groups["head"]["w"] == "decay" and len(ws) == 2


def same(path: tuple[Any, ...], node: Any) -> Any:
    return node


out = tw.prewalk(same, out)
out = tw.postwalk(lambda path, node: node, out)
state = tw.export(out, convention="torch")
arrays: dict[str, np.ndarray[Any, Any]] = state
loaded = tw.load(out, arrays, convention="torch")
plan = tw.load_plan(out, state, convention="torch")
assert not plan.problems() and plan.steps[0].status == "load" and loaded
init = tw.init.variance_scaling(2.0, "fan_in", "normal")
assert init.scale == 2.0 and tw.init.orthogonal().layout is None
assert tw.key_for_path(key, found[0]) is not None
n: tw.Node = tw.Node((), params, None, None)
assert n.segs == () and n.last is None and n.parent is None and n.outer is None
assert tw.BoxKey("value").name == "value"
'''


def _pyright(args: list[str], cwd: Path) -> dict[str, Any]:
    """Run pyright with `--outputjson` (which also keeps it from asking PyPI for a newer
    version: it works offline) and return its report."""
    exe = BIN / "pyright"
    pyright = str(exe) if exe.exists() else shutil.which("pyright")
    if pyright is None:
        pytest.skip("pyright is not installed")
    cmd = [pyright, "--outputjson", "--pythonpath", sys.executable, *args]
    # This checkout's treewalk, whatever the environment has installed.
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "PYRIGHT_PYTHON_IGNORE_WARNINGS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"`{' '.join(cmd)}` gave no report:\n{proc.stdout}\n{proc.stderr}")


def _problems(report: dict[str, Any]) -> str:
    lines = []
    for d in report.get("generalDiagnostics", []):
        line = d.get("range", {}).get("start", {}).get("line", -1) + 1
        lines.append(f"{Path(d.get('file', '?')).name}:{line}: {d['severity']}: {d['message']}")
    return "\n".join(lines)


def test_public_api_types_are_complete():
    report = _pyright(["--verifytypes", "treewalk", "--ignoreexternal"], cwd=ROOT)
    tc = report["typeCompleteness"]
    score = tc["completenessScore"]
    if score < COMPLETENESS:
        unknown = [
            f"{s['name']}: {d['message'].splitlines()[0]}"
            for s in tc["symbols"]
            if s["isExported"] or not s["isTypeKnown"]
            for d in s["diagnostics"]
            if d["severity"] == "error"
        ]
        pytest.fail(
            f"pyright --verifytypes: {score:.1%} of treewalk's public symbols have known "
            f"types (at least {COMPLETENESS:.0%} wanted). Annotate these:\n" + "\n".join(unknown),
            pytrace=False,
        )


def test_strict_user_script_type_checks(tmp_path: Path):
    (tmp_path / "user_script.py").write_text(SNIPPET)
    config = {"typeCheckingMode": "strict", "pythonVersion": "3.11", "extraPaths": [str(ROOT)]}
    (tmp_path / "pyrightconfig.json").write_text(json.dumps(config))
    report = _pyright(["--project", str(tmp_path), str(tmp_path / "user_script.py")], tmp_path)
    summary = report["summary"]
    assert summary["filesAnalyzed"] == 1
    if summary["errorCount"]:
        pytest.fail(
            f"pyright strict on a user script: {summary['errorCount']} errors:\n"
            + _problems(report),
            pytrace=False,
        )
