"""The documentation site as a reader gets it: built once per session with
`mkdocs build --strict` (a broken link, reference or snippet fails the build), then the
built HTML is checked: every public name has an API entry, search splits dotted names,
tables show no escape characters, the sitemap lists every page, and the examples and
benchmark results are on the site."""

import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SITE_URL = "https://treewalk-dev.github.io/jax-treewalk/"
PUBLIC_MODULES = ["treewalk", "treewalk.init"]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if (
        importlib.util.find_spec("mkdocs") is None
        or importlib.util.find_spec("mkdocstrings") is None
    ):
        pytest.skip("mkdocs / mkdocstrings are not installed (pip install --group docs)")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    if proc.returncode != 0:
        pytest.fail(
            f"`mkdocs build --strict` failed:\n{proc.stdout}\n{proc.stderr}", pytrace=False
        )
    return out


def _html(site: Path) -> dict[str, str]:
    return {p.relative_to(site).as_posix(): p.read_text() for p in site.rglob("*.html")}


def public_names() -> list[str]:
    names = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        assert hasattr(module, "__all__"), f"{module_name} has no __all__"
        names += [f"{module_name}.{name}" for name in module.__all__]
    return names


def missing_anchors(names: list[str], html: dict[str, str]) -> list[str]:
    """The names with no `id="NAME"` anchor on any page (what mkdocstrings writes for
    `::: NAME`, and for each member of `::: MODULE`)."""
    ids = set()
    for text in html.values():
        ids |= set(re.findall(r'\bid="([^"]+)"', text))
    return [n for n in names if n not in ids]


def test_every_public_name_has_an_api_entry(site):
    missing = missing_anchors(public_names(), _html(site))
    assert not missing, (
        f"no API entry for {missing}: add `::: NAME` to a page in docs/api/ "
        "(names in a module's __all__ are the public API)"
    )


def test_the_coverage_check_sees_a_missing_name():
    html = {"api/x/index.html": '<h2 id="treewalk.replace">replace</h2>'}
    assert missing_anchors(["treewalk.replace", "treewalk.nope"], html) == ["treewalk.nope"]


def test_search_splits_dotted_names(site):
    index = json.loads((site / "search" / "search_index.json").read_text())
    separator = index["config"]["separator"]
    words = [w for w in re.split(separator, "treewalk.init.lecun_normal(key)") if w]
    assert "lecun_normal" in words and "init" in words, words
    assert re.split(separator, "1.5") == ["1.5"]  # numbers stay whole
    assert any(
        "lecun_normal" in doc["text"] or "lecun_normal" in doc["title"] for doc in index["docs"]
    )


def test_tables_show_no_escape_characters(site):
    bad = [page for page, text in _html(site).items() if "\\|" in text]
    assert not bad, f"a literal '\\|' shows on {bad}"


def test_sitemap_lists_every_page_under_the_site_url(site):
    locs = re.findall(r"<loc>([^<]+)</loc>", (site / "sitemap.xml").read_text())
    pages = [p for p in _html(site) if p.endswith("index.html") and p != "index.html"]
    assert locs and all(loc.startswith(SITE_URL) for loc in locs)
    assert len(locs) == len(pages) + 1


def test_examples_and_benchmark_results_are_on_the_site(site):
    html = _html(site)
    # Highlighted code is split into spans: look at the text.
    examples = re.sub(r"<[^>]+>", "", html["examples/index.html"])
    assert "jax.distributed.initialize" in examples  # the multi-process example itself
    assert "WEIGHTS" in examples  # the quickstart
    assert "Benchmark results" in html["bench/index.html"]
    assert "Against the issue" in html["bench/index.html"]


def test_pictures_are_on_their_pages(site):
    html = _html(site)
    for page, img in [
        ("paths/index.html", "img/paths.svg"),
        ("show/index.html", "img/show.png"),
        ("how-it-works/index.html", "img/outermost.svg"),
        ("sharding/index.html", "img/mesh.svg"),
    ]:
        assert img in html[page], f"{page} shows no {img}"
        assert (site / img).stat().st_size > 1000


def test_issue_references_are_links():
    """`owner#123` in the docs' prose is a link to that issue."""
    bad = []
    for path in sorted((ROOT / "docs").rglob("*.md")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            # A linked one, `[owner#123](https://github.com/...)`, follows a "[".
            for m in re.finditer(r"(?<![\w/\[])[A-Za-z][\w-]*#\d+\b", line):
                bad.append(f"{path.relative_to(ROOT)}:{n}: {m[0]}")
    assert not bad, f"issue numbers without a link: {bad}"


def test_pictures_are_drawn_from_the_current_code():
    """docs/img/*.svg are what scripts/make_pictures.py draws now (the suite runs on 8
    CPU devices, as the mesh picture needs): a change that shows in them needs a rerun."""
    spec = importlib.util.spec_from_file_location(
        "make_pictures", ROOT / "scripts" / "make_pictures.py"
    )
    assert spec is not None and spec.loader is not None
    pictures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pictures)
    stale = [
        name
        for name, draw in [
            ("paths.svg", pictures.draw_paths),
            ("outermost.svg", pictures.draw_outermost),
            ("mesh.svg", pictures.draw_mesh),
        ]
        if (ROOT / "docs" / "img" / name).read_text() != draw()
    ]
    assert not stale, f"{stale} are out of date: run `python scripts/make_pictures.py`"
