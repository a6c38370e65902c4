"""Figures build from hand-made results and save as standalone HTML."""

from __future__ import annotations

import torch

from tl_continuous.experiments.results import Sweep, SweepSet
from tl_continuous.views.experiments import (
    boolean_figure,
    peak_figure,
    save_figure,
    sweep_figure,
)


def boolean_set():
    lam = torch.linspace(0, 1, 4, dtype=torch.float64)
    sweeps = []
    for op_a, op_b in (("AND", "OR"), ("OR", "XOR")):
        for a in (0, 1):
            for b in (0, 1):
                p1 = torch.linspace(0.2, 0.8, 4, dtype=torch.float64)
                sweeps.append(
                    Sweep(
                        "boolean",
                        "m",
                        "x",
                        "lambda",
                        lam,
                        ("0", "1"),
                        {"exact": torch.stack([1 - p1, p1], -1)},
                        prompt_b="y",
                        distance=torch.zeros(4, dtype=torch.float64),
                        meta={"op_a": op_a, "op_b": op_b, "a": a, "b": b},
                    )
                )
    return SweepSet("boolean", sweeps)


def test_boolean_figure_has_one_line_per_curve(tmp_path):
    fig = boolean_figure(boolean_set())
    assert len(fig.data) == 8
    assert [a.text for a in fig.layout.annotations] == ["AND → OR", "OR → XOR"]
    path = save_figure(fig, tmp_path / "b.html")
    assert "plotly" in path.read_text()[:5000].lower()


def test_sweep_and_peak_figures():
    grid = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    probs = torch.tensor([[0.1, 0.7, 0.2], [0.1, 0.2, 0.7], [0.6, 0.2, 0.2]], dtype=torch.float64)
    s = Sweep("counting", "m", "p", "c", grid, ("0", "1", "2"), {"exact": probs}, expected=2)
    fig = sweep_figure(s)
    assert len(fig.data) == 3 and fig.data[2].line.width == 4
    assert len(fig.layout.shapes) == 2  # two argmax transitions
    peak = peak_figure(SweepSet("counting", [s]))
    assert list(peak.data[0].y) == [1.0]  # counts 1 and 2 both become the argmax
    assert list(peak.data[1].y) == [1 / 2]  # baseline 1/n
