"""The project's tools, as tests: ruff (lint and format) and pyright on the package
(`mkdocs build --strict` is in tests/test_site.py). A tool that is not installed is
skipped; a tool that fails shows its output."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _tool(name: str) -> str | None:
    exe = BIN / name
    return str(exe) if exe.exists() else shutil.which(name)


def _run(cmd: list[str], timeout: int = 300) -> None:
    env = {
        **os.environ,
        "NO_MKDOCS_2_WARNING": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        pytest.fail(
            f"`{' '.join(cmd)}` exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}",
            pytrace=False,
        )


def test_ruff_check():
    ruff = _tool("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    _run([ruff, "check", "."])


def test_ruff_format():
    # The Python code base; Markdown code blocks are laid out by hand for reading.
    ruff = _tool("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    _run([ruff, "format", "--check", "treewalk", "tests"])


def test_pyright_on_the_package():
    pyright = _tool("pyright")
    if pyright is None:
        pytest.skip("pyright is not installed")
    _run([pyright, "--pythonpath", sys.executable, "treewalk"], timeout=600)


def test_public_functions_are_annotated():
    """Every public function (and class constructor) of treewalk has annotated arguments
    and, for functions, a return annotation: what pyright checks is the whole API."""
    import inspect

    import treewalk
    import treewalk.init
    import treewalk.testing

    missing = []
    for module in (treewalk, treewalk.init, treewalk.testing):
        for name in getattr(module, "__all__", None) or dir(module):
            obj = getattr(module, name)
            if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if not getattr(obj, "__module__", "").startswith("treewalk"):
                continue
            if getattr(obj, "_is_protocol", False):
                continue  # a Protocol (tw.ReplaceFn) is a type, never constructed
            f = obj.__dict__.get("__init__") if inspect.isclass(obj) else obj
            if f is None or not inspect.isfunction(f):
                continue
            sig = inspect.signature(f)
            args = [
                p.name
                for p in sig.parameters.values()
                if p.annotation is p.empty and p.name not in ("self", "cls")
            ]
            if args or (inspect.isfunction(obj) and sig.return_annotation is sig.empty):
                missing.append(f"{module.__name__}.{name}({', '.join(args)})")
    assert not missing, f"unannotated public API: {missing}"
