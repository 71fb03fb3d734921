"""Every ```python block of docs/*.md and README.md, and every example in the public
docstrings, runs as a test, so the docs cannot rot.

A ```text block that follows a python block (with only blank lines or a line "prints"
between them) is the block's expected standard output.
"""

import contextlib
import importlib
import inspect
import io
import re
import sys
import textwrap
import types
from pathlib import Path

import pytest

import treewalk as tw

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*$")


def fenced_blocks(text: str) -> list[tuple[int, str, str, str | None]]:
    """`(line, lang, code, expected stdout or None)` for every fenced block."""
    lines = text.splitlines()
    blocks: list[tuple[int, str, str]] = []
    ends: list[int] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None or not m["lang"]:
            i += 1
            continue
        indent, start = m["indent"], i
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        body = textwrap.dedent("\n".join(lines[start + 1 : j]))
        blocks.append((start + 1, m["lang"], body))
        ends.append(j)
        i = j + 1
        del indent
    out: list[tuple[int, str, str, str | None]] = []
    for k, (line, lang, body) in enumerate(blocks):
        expected = None
        if lang == "python" and k + 1 < len(blocks) and blocks[k + 1][1] == "text":
            between = lines[ends[k] + 1 : blocks[k + 1][0] - 1]
            if all(s.strip() in ("", "prints", "prints:") for s in between):
                expected = blocks[k + 1][2]
        out.append((line, lang, body, expected))
    return out


def doc_files() -> list[Path]:
    return sorted((ROOT / "docs").rglob("*.md")) + [
        ROOT / "README.md",
        ROOT / "CHANGELOG.md",
        ROOT / "CONTRIBUTING.md",
    ]


# The widest code line that fits a code block at 1280 px without scrolling sideways.
WIDTH = 78


#: Pages whose code blocks another test runs as their readers would: docs/testing.md's
#: are test files, run by plain `pytest` without this conftest (tests/test_testing.py).
RUN_ELSEWHERE = {"docs/testing.md"}


def markdown_cases() -> list:
    cases = []
    for path in doc_files():
        if path.relative_to(ROOT).as_posix() in RUN_ELSEWHERE:
            continue
        for line, lang, code, expected in fenced_blocks(path.read_text()):
            if lang == "python":
                name = f"{path.relative_to(ROOT)}:{line}"
                cases.append(pytest.param(code, expected, id=name))
    return cases


PUBLIC_MODULES = ["treewalk", "treewalk.init", "treewalk.testing"]


def _documented(module_name: str):
    module = importlib.import_module(module_name)
    yield module_name, module
    for attr in sorted(getattr(module, "__all__", None) or dir(module)):
        if attr.startswith("_"):
            continue
        obj = getattr(module, attr)
        if inspect.ismodule(obj):
            continue
        yield f"{module_name}.{attr}", obj
        if inspect.isclass(obj):
            for meth, member in vars(obj).items():
                if not meth.startswith("_") and inspect.isfunction(member):
                    yield f"{module_name}.{attr}.{meth}", member


def docstring_cases() -> list:
    cases, seen = [], set()
    for module_name in PUBLIC_MODULES:
        for qualname, obj in _documented(module_name):
            doc = getattr(obj, "__doc__", None)
            if not isinstance(doc, str) or id(doc) in seen:
                continue
            seen.add(id(doc))
            doc = inspect.cleandoc(doc)
            for line, lang, code, expected in fenced_blocks(doc):
                if lang == "python":
                    cases.append(pytest.param(code, expected, id=f"{qualname}:{line}"))
    return cases


def run_block(code: str, expected: str | None, name: str) -> None:
    module = types.ModuleType(f"treewalk_docs_{abs(hash(name))}")
    sys.modules[module.__name__] = module
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, name, "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]
    if expected is not None:
        got = [s.rstrip() for s in out.getvalue().rstrip().splitlines()]
        want = [s.rstrip() for s in expected.rstrip().splitlines()]
        assert got == want, f"{name} printed\n{out.getvalue()}\nbut the docs show\n{expected}"


@pytest.mark.parametrize("code, expected", markdown_cases())
def test_markdown_block(code, expected, request):
    run_block(code, expected, request.node.callspec.id)


@pytest.mark.parametrize("code, expected", docstring_cases())
def test_docstring_example(code, expected, request):
    run_block(code, expected, request.node.callspec.id)


def test_harness_finds_blocks_and_outputs():
    text = "x\n```python\nprint(1)\n```\n\nprints\n\n```text\n1\n```\n"
    text += "    ```python\n    a = 2\n    ```\n"
    blocks = fenced_blocks(text)
    assert [(b[1], b[3]) for b in blocks] == [("python", "1"), ("text", None), ("python", None)]
    assert blocks[2][2] == "a = 2"
    with pytest.raises(AssertionError):
        run_block("print(2)", "1", "mismatch")


def test_every_public_function_has_a_runnable_example():
    """The public callables that do things carry an `!!! Example` that runs."""
    ids = {p.id.rsplit(":", 1)[0] for p in docstring_cases()}
    wanted = ["replace", "select", "paths", "where", "mask", "labels", "show", "glob", "name"]
    wanted += ["nnx_filter"] if hasattr(tw, "nnx_filter") else []
    missing = [n for n in wanted if f"treewalk.{n}" not in ids]
    assert not missing, f"no runnable example in the docstrings of {missing}"


def test_docs_pages_exist_and_are_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = [p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")]
    assert {"index.md", "paths.md", "replace.md", "recipes.md", "faq.md"} <= set(pages)
    assert {
        "installation.md",
        "migration.md",
        "comparison.md",
        "how-it-works.md",
        "changelog.md",
        "contributing.md",
    } <= set(pages)
    assert [p for p in pages if p not in nav] == []


def too_wide(text: str, width: int = WIDTH) -> list[tuple[int, int]]:
    """`(line number, width)` of every line of a fenced block wider than `width`."""
    bad = []
    for start, _lang, code, _expected in fenced_blocks(text):
        for k, line in enumerate(code.splitlines()):
            if len(line) > width:
                bad.append((start + k + 1, len(line)))
    return bad


def test_docs_code_fits_the_page():
    """Code blocks on the site are at most 78 columns: wider ones scroll sideways at
    1280 px. The example scripts are shown whole on the examples page."""
    bad = []
    for path in doc_files():
        bad += [f"{path.relative_to(ROOT)}:{n} ({w})" for n, w in too_wide(path.read_text())]
    for path in sorted((ROOT / "examples").glob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if len(line) > WIDTH:
                bad.append(f"{path.relative_to(ROOT)}:{n} ({len(line)})")
    assert not bad, (
        f"code lines over {WIDTH} columns: {bad}; "
        "`python scripts/fit_code_blocks.py FILE.md` fits python blocks"
    )


def test_width_check_sees_a_wide_line():
    text = "```python\nx = 1\n" + "y" * 79 + "\n```\n    ```bash\n    " + "z" * 78 + "\n    ```\n"
    assert too_wide(text) == [(3, 79)]
