"""plotly figures of lines of thought: what each draws, checked against the data (tiny model)."""

from __future__ import annotations

import math

import pytest
import torch

from tl_continuous.lines_of_thought.bases import TrajectoryBases
from tl_continuous.lines_of_thought.ensemble import LinesOfThought
from tl_continuous.lines_of_thought.truncation import truncation_kl_last_layer
from tl_continuous.tiny import tiny_model
from tl_continuous.views.lines_of_thought import kl_figure, spectra_figure, trajectory_figure

pytest.importorskip("plotly")


@pytest.fixture(scope="module")
def ensemble():
    model = tiny_model("rotary")
    tokens = torch.randint(0, 50, (80, 6), generator=torch.Generator().manual_seed(0))
    lot = LinesOfThought.collect(model, tokens, progress=False)
    return model, lot, TrajectoryBases.from_ensemble(lot)


def test_trajectory_figure_in_two_and_three_dimensions(ensemble) -> None:
    _, lot, bases = ensemble
    flat = trajectory_figure(lot.trajectories, bases, n_lines=5)
    assert [t.type for t in flat.data] == ["scattergl"] + ["scatter"] * 5
    u = bases.top(-1, 3)  # the last layer's three largest singular directions
    want = lot.trajectories[3].double() @ u  # line 3 through every layer, on u1..u3
    assert torch.allclose(torch.tensor(flat.data[4].x, dtype=torch.float64), want[:, 0])
    assert torch.allclose(torch.tensor(flat.data[4].y, dtype=torch.float64), want[:, 1])
    cube = trajectory_figure(lot.trajectories, bases, dims=(0, 1, 2), n_lines=5,
                             extra={"mean": lot.trajectories.mean(0, keepdim=True)})  # fmt: skip
    assert [t.type for t in cube.data] == ["scatter3d"] * 7
    assert torch.allclose(torch.tensor(cube.data[4].z, dtype=torch.float64), want[:, 2])
    assert cube.layout.scene.zaxis.title.text.startswith("u3(t=2), σ=")
    assert cube.data[-1].name == "mean"
    # the suite's jaxtyping+beartype checking rejects the length first; both name dims
    with pytest.raises((ValueError, TypeError), match=r"dims must be two or three|'dims'"):
        trajectory_figure(lot.trajectories, bases, dims=(0,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rank"):
        trajectory_figure(lot.trajectories, bases, dims=(0, 1, 10_000))


def test_trajectory_figure_draws_the_top_singular_directions_not_the_realigned_columns(
    ensemble,
) -> None:
    _, lot, bases = ensemble
    # realignment put another direction at column 1 of the last layer: the figure must not
    # draw it as u2
    top = bases.top(-1, 2)
    assert not torch.allclose(bases.U[-1][:, 1], top[:, 1])
    fig = trajectory_figure(lot.trajectories, bases, layer=-1, dims=(0, 1), n_lines=1)
    cloud = torch.tensor([fig.data[0].x, fig.data[0].y], dtype=torch.float64).T
    torch.testing.assert_close(cloud, lot.trajectories[:, -1].double() @ top)
    sigma = bases.S[-1].sort(descending=True).values
    assert fig.layout.xaxis.title.text == f"u1(t=2), σ={float(sigma[0]):.3g}"
    assert fig.layout.yaxis.title.text == f"u2(t=2), σ={float(sigma[1]):.3g}"
    assert "t=2's top singular directions" in fig.layout.title.text
    # another layer, another rank: the plane of layer 0's 2nd and 4th largest directions
    fig0 = trajectory_figure(lot.trajectories, bases, layer=0, dims=(1, 3), n_lines=1)
    want = lot.trajectories[:, 0].double() @ bases.top(0, 4)[:, [1, 3]]
    got = torch.tensor([fig0.data[0].x, fig0.data[0].y], dtype=torch.float64).T
    torch.testing.assert_close(got, want)
    assert fig0.layout.xaxis.title.text.startswith("u2(t=1)")


def test_spectra_figure_is_the_normalised_log_spectrum(ensemble) -> None:
    _, _, bases = ensemble
    fig = spectra_figure(bases, max_rank=10)
    z = torch.tensor(fig.data[0].z, dtype=torch.float64)
    assert z.shape == (bases.n_layers, 10)
    assert torch.allclose(
        z[:, 0], torch.zeros(bases.n_layers, dtype=torch.float64), atol=1e-12
    )  # sigma_1/sigma_1
    assert bool((z[:, 1:] <= 1e-12).all())  # sorted spectra: every ratio <= 1


def test_kl_figure_marks_the_knee_and_the_baseline(ensemble) -> None:
    model, lot, bases = ensemble
    curve = truncation_kl_last_layer(model, lot, bases, [1, 4, 16, 64], progress=False)
    fig = kl_figure([curve])
    assert list(fig.data[0].x) == [1, 4, 16, 64]
    assert torch.allclose(
        torch.tensor(fig.data[0].y[:3], dtype=torch.float64), curve.kl_mean[:3].double()
    )
    shapes = [(s.type, s.x0, s.y0) for s in fig.layout.shapes]
    assert ("line", curve.knee_k, 0) in shapes  # the knee's vertical line
    baseline = fig.data[-1]
    assert baseline.name.startswith("consecutive sentences") and baseline.line.dash == "dash"
    assert list(baseline.y) == [curve.baseline, curve.baseline]


def test_kl_figure_y_range_is_the_positive_data_and_says_what_is_left_out(ensemble) -> None:
    model, lot, bases = ensemble
    d = model.cfg.d_model
    curve = truncation_kl_last_layer(model, lot, bases, [1, 4, 16, d], progress=False)
    assert float(curve.kl_mean[-1]) <= 0.0  # K = d_model is the pilot itself: KL = 0
    fig = kl_figure([curve])
    assert fig.layout.yaxis.type == "log"
    # K = d_model is left out (not -inf on the log axis) and the figure says so
    assert fig.data[0].y[-1] is None and fig.data[1].y[-1] is None
    drawn = [y for trace in fig.data for y in trace.y if y is not None]
    assert all(math.isfinite(y) and y > 0 for y in drawn)
    notes = [a.text for a in fig.layout.annotations if "not drawn" in (a.text or "")]
    assert len(notes) == 1 and f"last_layer K={d}" in notes[0]
    # the range (log10 units) covers the positive data and the baseline, and no more than a
    # decade beyond: no 1e8 from an annotation read as an exponent
    positive = [float(v) for v in torch.cat([curve.kl_mean, curve.kl_median]) if v > 0]
    top = max([*positive, curve.baseline])
    low, high = fig.layout.yaxis.range
    assert 10**low <= min(positive) and top <= 10**high
    assert 10**high < 10 * top
    assert 10**low > min(positive) / 10
    assert not any(a.yref == "y" for a in fig.layout.annotations)
