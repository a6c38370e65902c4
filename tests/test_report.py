"""The main job's report: written by ``tl-continuous demo --quick`` and rendered by headless
Chromium with no network (every plotly graph drawn, the circuitsvis roots populated)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from ci_requirements import requires

from tl_continuous.cli import main
from tl_continuous.experiments.results import Sweep, SweepSet
from tl_continuous.reports.features import features_available

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def render_dom(page: Path, tmp: Path) -> str:
    """The DOM of ``page`` after its scripts ran, from headless Chromium with no network."""
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # no network: every host resolves nowhere, so a CDN script could not load
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=127.0.0.1:9",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    return out


@pytest.mark.model
@pytest.mark.slow
def test_report_is_self_contained(report_dir) -> None:
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    assert page.count('<script type="text/javascript">/**\n* plotly.js') <= 1
    assert not re.search(r"<script[^>]*\bsrc=", page)  # nothing loaded from elsewhere
    assert page.count("var CircuitsVis=") == 1  # the circuitsvis bundle inlined once
    # the demo's own files, beside the report (the bridge's: test_cli_experiments.py)
    assert Sweep.load(report_dir / "count_apple_4.json").grid.numel() == 10
    assert len(SweepSet.load(report_dir / "boolean_AND_OR.json")) == 4
    numbers = json.loads((report_dir / "report.json").read_text())
    assert {"counting", "boolean", "lines_of_thought", "variance_law", "testbed"} <= set(numbers)
    assert numbers["lines_of_thought"]["n_trajectories"] == 192
    sweep = numbers["duration_sweep"]
    assert sweep["values"] == [1.0, 0.5, 0.1]
    assert sweep["last_layer_distance"][0] < 1e-6 < sweep["last_layer_distance"][2]  # c = 1: plain
    titles = re.findall(r"<h2>(.*?)</h2>", page)
    # the SAE-feature section closes the page when SAELens and the bundled SAE are installed
    features = features_available()
    assert ("features" in numbers) == features
    last = "SAE features" if features else "Lines of thought as tokens shrink"
    assert titles[0].startswith("Counting under") and titles[-1].startswith(last)
    assert len(titles) == 10 + features


@pytest.mark.model
@pytest.mark.slow
@requires(CHROMIUM is not None, "chromium")
def test_every_plot_renders_offline(report_dir, tmp_path) -> None:
    page = report_dir / "report.html"
    source = page.read_text(encoding="utf-8")
    n_plots = source.count('class="plotly-graph-div"')
    n_vis = len(re.findall(r'<div id="circuits-vis-[^"]+"', source))
    assert n_plots >= 8 and n_vis == 2
    dom = render_dom(page, tmp_path)
    graphs = re.findall(r'<div id="([^"]+)" class="plotly-graph-div js-plotly-plot"', dom)
    assert len(graphs) == n_plots, "a plotly graph was not drawn"
    for gid in graphs:
        start = dom.index(f'id="{gid}"')
        chunk = dom[start : start + 20000]
        assert "<svg" in chunk and "main-svg" in chunk, f"graph {gid} has no svg"
    roots = re.findall(r'<div id="(circuits-vis-[^"]+)"[^>]*>(.*?)</div>', dom, re.S)
    assert len(roots) == n_vis
    for rid, inner in roots:
        assert inner.strip(), f"circuitsvis root {rid} is empty"


@requires(CHROMIUM is not None, "chromium")
def test_views_sharing_one_bundle_render_side_by_side(tmp_path) -> None:
    import torch

    from tl_continuous.continuous.durations import Durations
    from tl_continuous.tiny import tiny_model
    from tl_continuous.views.attention import duration_attention_view, durations_view
    from tl_continuous.views.html import inline_views

    text = ["The", "apple", "apple", "is", "red"]
    d = Durations(torch.tensor([1.0, 0.5, 0.5, 1.0, 2.0]))
    model = tiny_model("rotary")
    views = [
        duration_attention_view(
            model, torch.tensor([[1, 2, 3, 4, 5]]), d, layer=0, str_tokens=text
        ),
        durations_view(text, d),
    ]
    page = tmp_path / "views.html"
    page.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>"
        + "".join(inline_views(views))
        + "</body></html>",
        encoding="utf-8",
    )
    dom = render_dom(page, tmp_path)
    roots = re.findall(r'<div id="circuits-vis-[^"]+"[^>]*>(.*?)</div></div>', dom, re.S)
    assert len(roots) == 2 and all(inner.strip() for inner in roots)
