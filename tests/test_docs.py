"""The documentation site (mkdocs.yml): it builds in strict mode, every public name has a
rendered entry, and no internal link or anchor dangles.

The site is built once into a temporary folder (the same command as ``make docs``, with the
executed notebooks of ``build/notebooks/`` reused when present: ``make docs`` runs before
pytest in ``make test``). The checkers are tested on small hand-made sites first, so that a
broken link or a missing entry is known to fail.
"""

from __future__ import annotations

import doctest
import importlib.util
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from ci_requirements import requires

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "tools"))
DOCS = all(importlib.util.find_spec(m) for m in ("mkdocs", "mkdocstrings", "griffe", "material"))
needs_docs = requires(DOCS, "the docs extra (pip install -e '.[docs]')")


class _Page(HTMLParser):
    """The ids of a page, the ids of its API headings, and the URLs it refers to."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.headings: set[str] = set()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        for key in ("id", "name") if tag == "a" else ("id",):
            if a.get(key):
                self.ids.add(a[key])
        if "doc-heading" in a.get("class", "").split() and a.get("id"):
            self.headings.add(a["id"])
        for key in {"a": ("href",), "img": ("src",), "script": ("src",), "link": ("href",)}.get(
            tag, ()
        ):
            if a.get(key):
                self.refs.append(a[key])


def parse_page(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def parse_site(site: Path) -> dict[Path, _Page]:
    """Every HTML page of ``site``, by resolved path."""
    return {path.resolve(): parse_page(path) for path in sorted(site.rglob("*.html"))}


def dangling_links(site: Path) -> list[str]:
    """``page: href`` for every relative link to a missing file or to a missing anchor."""
    root = site.resolve()
    pages = parse_site(site)
    bad = []
    for path, page in pages.items():
        for ref in page.refs:
            url = urlsplit(ref)
            if url.scheme or url.netloc or ref.startswith(("mailto:", "javascript:")):
                continue
            base = root if url.path.startswith("/") else path.parent  # 404.html: from the root
            target = (base / unquote(url.path).lstrip("/")).resolve() if url.path else path
            if target.is_dir():
                target = target / "index.html"
            where = f"{path.relative_to(root)}: {ref}"
            if not target.is_relative_to(root):
                bad.append(f"{where} (outside the site)")
            elif not target.is_file():
                bad.append(f"{where} (no such file)")
            elif (
                url.fragment and target in pages and unquote(url.fragment) not in pages[target].ids
            ):
                bad.append(f"{where} (no such anchor)")
    return bad


def missing_entries(site: Path, names: dict[str, str]) -> list[str]:
    """The public names whose object has no API heading (``id`` = its path) in the site."""
    headings: set[str] = set()
    for page in parse_site(site / "api").values():
        headings |= page.headings
    return sorted(name for name, target in names.items() if target not in headings)


# ----------------------------------------------------------------- the checkers can fail


def test_dangling_links_are_found(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "index.html").write_text(
        '<a href="sub/page.html#here">ok</a> <a href="sub/page.html#gone">anchor</a>'
        '<a href="missing.html">file</a> <a href="https://example.org/x">external</a>'
        '<img src="img/none.png"> <a href="#top" id="top">self</a>'
    )
    page = (
        '<h2 id="here">x</h2><a href="../index.html">up</a><a href="/sub/page.html#here">root</a>'
    )
    page += '<a href="/nowhere.html">root, missing</a><a href="../../out.html">outside</a>'
    (tmp_path / "sub" / "page.html").write_text(page)
    assert dangling_links(tmp_path) == [
        "index.html: sub/page.html#gone (no such anchor)",
        "index.html: missing.html (no such file)",
        "index.html: img/none.png (no such file)",
        "sub/page.html: /nowhere.html (no such file)",
        "sub/page.html: ../../out.html (outside the site)",
    ]


def test_missing_entries_are_found(tmp_path):
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "a.html").write_text(
        '<h2 id="pkg.mod.f" class="doc doc-heading">f</h2><p id="pkg.mod.g">not a heading</p>'
    )
    names = {"pkg.f": "pkg.mod.f", "pkg.g": "pkg.mod.g"}
    assert missing_entries(tmp_path, names) == ["pkg.g"]


@needs_docs
def test_public_names_cover_every_all():
    from apiref import load_package, public_names

    import tl_continuous

    names = public_names(load_package())
    assert {f"tl_continuous.{n}" for n in tl_continuous.__all__} <= set(names)
    assert "tl_continuous.lines_of_thought.TrajectoryBases" in names
    assert names["tl_continuous.Durations"] == "tl_continuous.continuous.durations.Durations"
    assert names["tl_continuous.testbed.VOCAB"] == "tl_continuous.testbed.task.VOCAB"


@needs_docs
def test_doctest_blocks_become_fenced():
    from griffe_docstrings import fence_doctests

    text = "Intro.\n>>> f(1)\n2\n\nAfter.\n\n    >>> g()\n    ...     h\n"
    assert fence_doctests(text) == (
        "Intro.\n\n```pycon\n>>> f(1)\n2\n```\n\nAfter.\n\n"
        "    ```pycon\n    >>> g()\n    ...     h\n    ```\n"
    )


def test_notebook_outputs_become_markdown():
    from notebooks import to_markdown

    png = "iVBORw0KGgo="  # the PNG signature, base64
    nb = {
        "cells": [
            {"cell_type": "markdown", "source": "# Title"},
            {
                "cell_type": "code",
                "source": "print(1)\nfig",
                "outputs": [
                    {"output_type": "stream", "name": "stdout", "text": ["1\n"]},
                    {
                        "output_type": "execute_result",
                        "data": {"application/vnd.plotly.v1+json": {"data": [], "layout": {}}},
                    },
                    {"output_type": "display_data", "data": {"image/png": png}},
                    {"output_type": "execute_result", "data": {"text/plain": "'x'"}},
                ],
            },
        ]
    }
    page, images = to_markdown(nb, "demo")
    assert '<script src="../assets/plotly.min.js"></script>' in page
    assert '<div id="demo-figure-1"' in page and "Plotly.newPlot" in page
    assert "```text\n1\n```" in page and "```text\n'x'\n```" in page
    assert "![output 1](demo/output-1.png)" in page
    assert images == {"demo/output-1.png": b"\x89PNG\r\n\x1a\n"}
    nb["cells"][1]["outputs"] = [{"output_type": "error", "ename": "ValueError"}]
    with pytest.raises(RuntimeError, match=r"demo\.ipynb: a cell failed: ValueError"):
        to_markdown(nb, "demo")


def test_getting_started_examples_run():
    text = (ROOT / "docs" / "getting_started.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```pycon\n(.*?)```", text, flags=re.S)
    assert blocks
    test = doctest.DocTestParser().get_doctest("\n".join(blocks), {}, "getting_started", None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


# ----------------------------------------------------------------------- the built site


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built in strict mode (a warning fails) into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    tools = ROOT / "docs" / "tools"
    subprocess.run([sys.executable, str(tools / "notebooks.py"), "--reuse"], cwd=ROOT, check=True)
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert build.returncode == 0, build.stderr[-6000:]
    return out


@needs_docs
def test_every_public_name_has_a_rendered_entry(site):
    from apiref import load_package, public_names

    names = public_names(load_package())
    assert len(names) > 300
    assert missing_entries(site, names) == []


@needs_docs
def test_no_internal_link_dangles(site):
    assert len(parse_site(site)) > 20
    assert dangling_links(site) == []


@needs_docs
def test_the_pages_are_there(site):
    for page in [
        "getting_started.html",
        "guide_continuous_tokens.html",
        "guide_lines_of_thought.html",
        "notebooks/continuous_tokens.html",
        "notebooks/lines_of_thought.html",
        "results_continuous.html",
        "benchmarks.html",
        "api/index.html",
        "search/search_index.json",
        "assets/plotly.min.js",
    ]:
        assert (site / page).is_file(), page
    benchmarks = (site / "benchmarks.html").read_text(encoding="utf-8")
    assert "python -m benchmarks.bridge" in benchmarks  # included from benchmarks/README.md
    notebook = (site / "notebooks" / "continuous_tokens.html").read_text(encoding="utf-8")
    assert "Plotly.newPlot" in notebook  # the outputs, not only the code
