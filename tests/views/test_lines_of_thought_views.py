"""plotly figures of lines of thought: what each draws, checked against the data (tiny model)."""

from __future__ import annotations

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
    u = bases.U[-1][:, :3].double()
    want = lot.trajectories[3].double() @ u  # line 3 through every layer, on u1..u3
    assert torch.allclose(torch.tensor(flat.data[4].x, dtype=torch.float64), want[:, 0])
    assert torch.allclose(torch.tensor(flat.data[4].y, dtype=torch.float64), want[:, 1])
    cube = trajectory_figure(lot.trajectories, bases, dims=(0, 1, 2), n_lines=5,
                             extra={"mean": lot.trajectories.mean(0, keepdim=True)})  # fmt: skip
    assert [t.type for t in cube.data] == ["scatter3d"] * 7
    assert torch.allclose(torch.tensor(cube.data[4].z, dtype=torch.float64), want[:, 2])
    assert cube.layout.scene.zaxis.title.text == "u3" and cube.data[-1].name == "mean"
    # the suite's jaxtyping+beartype checking rejects the length first; both name dims
    with pytest.raises((ValueError, TypeError), match=r"dims must be two or three|'dims'"):
        trajectory_figure(lot.trajectories, bases, dims=(0,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rank"):
        trajectory_figure(lot.trajectories, bases, dims=(0, 1, 10_000))


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
    assert torch.allclose(torch.tensor(fig.data[0].y, dtype=torch.float64), curve.kl_mean.double())
    shapes = [(s.type, s.x0, s.y0) for s in fig.layout.shapes]
    assert ("line", curve.knee_k, 0) in shapes  # the knee's vertical line
    assert any(s.y0 == curve.baseline for s in fig.layout.shapes)
