"""The report's SAE-feature section: its figures draw the data, and the section renders in
headless Chromium with no network (every plotly graph drawn)."""

from __future__ import annotations

import re

import pytest
import torch
from ci_requirements import requires
from test_report import CHROMIUM, render_dom

from features.sae_testing import TINY_HOOK, needs_sae_lens
from tl_continuous.features.counting import CountFeatures, CountResiduals
from tl_continuous.features.lines import LinesOfThoughtFeatures
from tl_continuous.features.quality import SAEQuality
from tl_continuous.features.sae import random_sae_like
from tl_continuous.lines_of_thought.bases import TrajectoryBases
from tl_continuous.lines_of_thought.ensemble import LinesOfThought
from tl_continuous.reports.demo import _plotly, render_report
from tl_continuous.reports.features import SECTION_TITLE, FeatureReadings, section

pytest.importorskip("plotly")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def readings(tiny_rotary, sae) -> FeatureReadings:
    tokens = torch.randint(0, 50, (80, 6), generator=torch.Generator().manual_seed(0))
    lot = LinesOfThought.collect(tiny_rotary, tokens, progress=False)
    bases = TrajectoryBases.from_ensemble(lot)
    gen = torch.Generator().manual_seed(1)
    residuals = CountResiduals(
        values=torch.linspace(0.1, 1.0, 8, dtype=torch.float64),
        last=torch.randn(8, 64, generator=gen),
        span=torch.randn(8, 4, 64, generator=gen),
        counts=torch.arange(1, 6),
        count_last=torch.randn(5, 64, generator=gen),
        hook_name=TINY_HOOK,
        word="apple",
        n=4,
        prompt="p",
        token_span=(1, 4),
    )
    saes = {"trained": sae, "random init (seed 0)": random_sae_like(sae)}
    quality = [
        SAEQuality(explained_variance=ev, l0=8.0, dead=dead, d_sae=128, n_tokens=500, mse=0.1,
                   label=label, hook_name=TINY_HOOK)
        for (label, ev, dead) in (("trained", 0.8, 3), ("random init (seed 0)", -1.5, 40))
    ]  # fmt: skip
    return FeatureReadings(
        sae={"architecture": "topk", "d_sae": 128, "k": 8, "hook_name": TINY_HOOK},
        qualities=quality,
        counts=[CountFeatures.from_residuals(residuals, s, label=k) for k, s in saes.items()],
        lines=[
            LinesOfThoughtFeatures.from_ensemble(lot, bases, s, label=k, k=3, m=4)
            for k, s in saes.items()
        ],
    )


@needs_sae_lens
def test_the_figures_draw_the_readings(readings) -> None:
    from tl_continuous.views.features import (
        count_features_figure,
        lines_features_figure,
        nearest_count_figure,
        quality_figure,
    )

    table = quality_figure(readings.qualities).data[0]
    assert list(table.header["values"]) == ["", "trained", "random init (seed 0)"]
    assert table.cells["values"][1][0] == "0.800" and table.cells["values"][2][2].startswith("40")
    counts = count_features_figure(readings.counts, m=3)
    trained = readings.counts[0]
    f = int(trained.top_varying(1)[0])
    assert counts.data[0].name.startswith(f"trained: f{f}")
    assert counts.data[0].y == tuple(trained.last[:, f].tolist())
    assert counts.data[1].y == tuple(trained.count_last[:, f].tolist())
    nearest = nearest_count_figure(readings.counts)
    assert nearest.data[0].y == tuple(trained.residual_nearest.tolist())
    assert nearest.data[1].y == tuple(trained.nearest_count().tolist())
    lines = lines_features_figure(readings.lines)
    assert len(lines.data) == 6
    assert lines.data[0].y == tuple(readings.lines[0].explained_variance.tolist())
    assert lines.data[5].x == tuple(readings.lines[1].ks.tolist())


@needs_sae_lens
@requires(CHROMIUM is not None, "chromium")
def test_the_section_renders_in_headless_chromium(readings, tmp_path) -> None:
    plotted = [False]

    def fig_html(fig) -> str:
        body = _plotly(fig, not plotted[0])
        plotted[0] = True
        return body

    title, body, note = section(readings, fig_html)
    assert title == SECTION_TITLE and note.startswith("A topk SAE (SAELens) on blocks.1.")
    assert "random initialisation" in note
    page = tmp_path / "report.html"
    page.write_text(render_report([(title, body, note)], "features"), encoding="utf-8")
    source = page.read_text(encoding="utf-8")
    n_plots = source.count('class="plotly-graph-div"')
    assert n_plots == 5
    assert not re.search(r"<script[^>]*\bsrc=", source)  # nothing loaded from elsewhere
    dom = render_dom(page, tmp_path)
    graphs = re.findall(r'<div id="([^"]+)" class="plotly-graph-div js-plotly-plot"', dom)
    assert len(graphs) == n_plots, "a plotly graph was not drawn"
    for gid in graphs:
        chunk = dom[dom.index(f'id="{gid}"') :][:30000]
        assert "main-svg" in chunk, f"graph {gid} has no svg"
