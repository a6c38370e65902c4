"""Figures draw what the results hold."""

from __future__ import annotations

import math

import pytest
import torch

from tl_continuous.lines_of_thought.controls import LayerDiagnostics
from tl_continuous.lines_of_thought.dynamics import ResidualStatistics, VarianceLawFit
from tl_continuous.lines_of_thought.synthetic import linear_gaussian_ensemble
from tl_continuous.views.lines_of_thought_dynamics import (
    layer_diagnostics_figure,
    projection_figure,
    variance_law_figure,
)

pytest.importorskip("plotly")


def test_variance_figure_holds_the_log_variances_and_the_fit_line():
    ens = linear_gaussian_ensemble(n=200, n_layers=5, d_model=8, rank=3, seed=0)
    stats = ResidualStatistics.from_tensors(ens.trajectories, ens.U, ens.S, progress=False)
    fit = VarianceLawFit.from_statistics(stats, layers=(1, 5))
    heat, points, line = variance_law_figure(stats, fit).data
    z = heat.z
    assert z[0][0] is None  # no pair (0, 0)
    assert z[1][3] == pytest.approx(math.log(float(stats.table()[1, 3])))
    assert list(points.y) == pytest.approx(torch.log(stats.variance).tolist())
    assert line.y[1] == pytest.approx(fit.log_alpha + fit.lam * line.x[1])


def test_diagnostics_figure_colours_flagged_layers():
    d = LayerDiagnostics(
        [1.0, 2.0, 3.0], [0.1, 0.1, 2.0], [0.0] * 3, [0.1] * 3, [0.0, 0.0, 9.0], [2], 3.5, 1
    )
    bars = layer_diagnostics_figure(d).data[0]
    assert list(bars.marker.color) == ["steelblue", "steelblue", "crimson"]


def test_projection_figure_checks_dims():
    with pytest.raises(ValueError, match="dims"):
        projection_figure(torch.randn(5, 3), {}, torch.eye(3)[:, :2])
