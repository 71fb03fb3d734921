"""The package as a user installs it: metadata, the wheel and the sdist, the README's
install commands, and the floor test list that .ci/run runs on the oldest versions."""

import ast
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import treewalk

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
DIST = "jax-treewalk"
URL = "https://github.com/treewalk-dev/jax-treewalk"
DOCS_URL = "https://treewalk-dev.github.io/jax-treewalk/"


def test_metadata_names_the_distribution_and_its_license():
    assert PROJECT["name"] == DIST
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    assert "Typing :: Typed" in PROJECT["classifiers"]
    assert (ROOT / "treewalk" / "py.typed").exists()
    assert PROJECT["keywords"] and PROJECT["authors"]


def test_urls_point_at_one_repository_and_one_site():
    urls = PROJECT["urls"]
    assert {"Documentation", "Source", "Issues", "Changelog"} <= set(urls)
    assert urls["Source"] == URL and urls["Issues"] == f"{URL}/issues"
    assert urls["Documentation"] == DOCS_URL
    assert urls["Changelog"].startswith(DOCS_URL)
    mkdocs = (ROOT / "mkdocs.yml").read_text()
    assert f"site_url: {DOCS_URL}\n" in mkdocs and f"repo_url: {URL}\n" in mkdocs


def test_extras_are_for_users_and_dev_tools_are_groups():
    assert set(PROJECT["optional-dependencies"]) == {"frameworks", "testing", "checkpoints"}
    groups = PYPROJECT["dependency-groups"]
    assert {"docs", "test", "bench"} <= set(groups)
    # An extra that names the project itself would pull `jax-treewalk` from the index.
    for reqs in [*PROJECT["optional-dependencies"].values(), *groups.values()]:
        for req in reqs:
            assert not (isinstance(req, str) and req.startswith(DIST)), req


def test_jax_floor_is_the_first_version_that_works():
    # `import treewalk` needs jax 0.5.3, `tw.materialize` `jax.set_mesh` (0.8.1);
    # .ci/run pins every `>=` here to `==` and runs the framework-free tests on it.
    assert "jax>=0.8.1" in PROJECT["dependencies"]


def test_installed_version_is_this_checkout():
    assert treewalk.__version__ == importlib.metadata.version(DIST) == PROJECT["version"]


def _readme_block(name: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- ci:{name} -->\n```bash\n(.*?)```\n<!-- /ci:{name} -->", text, re.S)
    assert m is not None, f"README.md has no ci:{name} block"
    return m[1].strip().splitlines()


def test_readme_installs_from_the_index_and_ci_blocks_use_the_groups():
    readme = (ROOT / "README.md").read_text()
    assert f"pip install {DIST}\n" in readme and DOCS_URL in readme
    assert _readme_block("quickstart") == [
        'pip install -e ".[frameworks]" && python examples/quickstart.py'
    ]
    test = _readme_block("test")
    assert test[0].startswith("pip install --group test -e ")
    assert test[-1] == "python -m pytest -q"


def test_no_page_tells_people_to_install_the_other_treewalk():
    """`treewalk` on the index is an unrelated project: every install hint names
    `jax-treewalk`."""
    files = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md"]
    files += sorted((ROOT / "docs").rglob("*.md")) + sorted((ROOT / "examples").glob("*.py"))
    files += sorted((ROOT / "treewalk").rglob("*.py"))  # error messages and docstrings
    bad = []
    for path in files:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            args = [m[1] for m in re.finditer(r"pip install ([^`\n&;#]*)", line)]
            names = [a.strip("\"'").split("[")[0] for arg in args for a in arg.split()]
            warning = "Not `pip install treewalk`" in line  # installation.md says why not
            if ("treewalk" in names and not warning) or re.search(r"(?<![\w-])treewalk\[", line):
                bad.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bad, "install hints for the wrong distribution:\n" + "\n".join(bad)


@pytest.fixture(scope="module")
def dist_dir(tmp_path_factory):
    if importlib.util.find_spec("build") is None or importlib.util.find_spec("hatchling") is None:
        pytest.skip("build / hatchling are not installed (pip install --group test)")
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        pytest.fail(f"python -m build failed:\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    return out


def test_wheel_holds_the_package_license_and_metadata(dist_dir):
    (wheel,) = dist_dir.glob("jax_treewalk-*-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = z.read(info).decode()
    assert "treewalk/__init__.py" in names and "treewalk/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not [n for n in names if n.startswith(("tests/", "docs/", "bench/", "examples/"))]
    lines = metadata.splitlines()
    assert f"Name: {DIST}" in lines
    assert "License-Expression: Apache-2.0" in lines
    assert "Requires-Dist: jax>=0.8.1" in lines
    for extra in ("frameworks", "testing", "checkpoints"):
        assert f"Provides-Extra: {extra}" in lines
    assert f"Project-URL: Source, {URL}" in lines
    assert "Classifier: Typing :: Typed" in lines


def test_sdist_holds_the_sources_and_the_license(dist_dir):
    import tarfile

    (sdist,) = dist_dir.glob("jax_treewalk-*.tar.gz")
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    assert {"LICENSE", "README.md", "pyproject.toml", "treewalk/__init__.py"} <= names


def test_the_wheel_imports_on_its_own(dist_dir, tmp_path):
    (wheel,) = dist_dir.glob("jax_treewalk-*-py3-none-any.whl")
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:  # what `pip install --no-deps` lays out
        z.extractall(target)
    code = "import treewalk; print(treewalk.__file__, treewalk.__version__)"
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    file, version = proc.stdout.split()
    assert Path(file).is_relative_to(target) and version == PROJECT["version"]


# The floor step of .ci/run: its test files must run without any framework installed.
FLOOR_OK = {"jax", "jaxlib", "numpy", "pytest", "hypothesis", "treewalk", "jaxtyping"}
# Test files that import no framework themselves but need one (or dev tools) to pass.
NOT_ON_THE_FLOOR = {
    "test_docs.py",  # the docs' code blocks use the frameworks
    "test_bench_smoke.py",  # the benchmark compares against the frameworks
    "test_multiprocess.py",  # the example it runs builds an Equinox model
    "test_multiprocess_load.py",  # its workers load into Equinox and NNX models
    "test_tooling.py",  # ruff, pyright
    "test_site.py",  # mkdocs
    "test_packaging.py",  # build, hatchling
    "test_typing.py",  # pyright
    # Three tests draw pytrees of every kind (NNX, linen, penzai) and import flax and
    # penzai inside; back to FLOOR_TESTS once they `pytest.importorskip` them.
    "test_testing.py",
}


def _floor_tests() -> list[str]:
    m = re.search(r"^FLOOR_TESTS=\((.*?)^\)", (ROOT / ".ci" / "run").read_text(), re.S | re.M)
    assert m is not None, ".ci/run has no FLOOR_TESTS=(...) list"
    return m[1].split()


def _module_level(tree: ast.Module):
    """The statements that run at import: the module's own, and those inside its
    top-level `if`/`try`/`with` blocks (not those inside functions or classes)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            todo += [c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt)]
            todo += [h for h in getattr(node, "handlers", [])]


def _imports(path: Path, seen: set[Path] | None = None) -> set[str]:
    """Top-level modules `path` imports when it is imported (so when pytest collects
    it), following the tests' own helper modules. An import inside a test function is
    the floor run's to catch."""
    seen = set() if seen is None else seen
    seen.add(path)
    found = set()
    for node in _module_level(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    for name in list(found):
        helper = path.parent / f"{name}.py"
        if helper.exists() and helper not in seen:
            found.discard(name)
            found |= _imports(helper, seen)
    return found


def _floor_ok(path: Path) -> set[str]:
    """What `path` imports beyond the floor install (the stdlib is always there)."""
    return {m for m in _imports(path) if m not in FLOOR_OK | set(sys.stdlib_module_names)}


def test_floor_tests_import_no_framework():
    files = _floor_tests()
    assert len(files) >= 3
    for name in files:
        path = ROOT / name
        assert path.exists(), f".ci/run's FLOOR_TESTS names {name}, which does not exist"
        extra = _floor_ok(path)
        assert not extra, f"{name} is in FLOOR_TESTS but imports {sorted(extra)}"


def test_every_framework_free_test_file_runs_on_the_floor():
    listed = {Path(n).name for n in _floor_tests()}
    unlisted = [
        p.name
        for p in sorted((ROOT / "tests").glob("test_*.py"))
        if not _floor_ok(p) and p.name not in listed | NOT_ON_THE_FLOOR
    ]
    assert not unlisted, (
        f"{unlisted} import no framework: add them to FLOOR_TESTS in .ci/run (or, if "
        "they need one indirectly, to NOT_ON_THE_FLOOR in tests/test_packaging.py)"
    )


def test_floor_import_check_sees_frameworks(tmp_path):
    (tmp_path / "helper.py").write_text("import equinox\n")
    (tmp_path / "test_x.py").write_text("import os\nimport jax\nfrom helper import thing\n")
    assert _floor_ok(tmp_path / "test_x.py") == {"equinox"}
    (tmp_path / "test_y.py").write_text(
        "try:\n    import optax\nexcept ImportError:\n    pass\ndef test():\n    import flax\n"
    )
    assert _floor_ok(tmp_path / "test_y.py") == {"optax"}
