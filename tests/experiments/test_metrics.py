"""Metrics on hand-made distributions with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from tl_continuous.experiments import metrics


def staircase(grid: torch.Tensor, steps: list[tuple[float, int]], n_labels: int = 10):
    """One-hot-ish rows whose argmax is the label of the last step at or below each c."""
    probs = torch.full((len(grid), n_labels), 0.05)
    for i, c in enumerate(grid.tolist()):
        label = [lab for at, lab in steps if c >= at - 1e-9][-1]
        probs[i, label] = 0.6
    return probs / probs.sum(-1, keepdim=True)


def test_argmax_transitions_match_the_staircase():
    grid = torch.linspace(0.1, 1.0, 100, dtype=torch.float64)
    # argmax 1 from the start, 2 from grid[26], 3 from grid[70], 4 from grid[82]
    steps = [(float(grid[0]), 1), (float(grid[26]), 2), (float(grid[70]), 3), (float(grid[82]), 4)]
    probs = staircase(grid, steps)
    assert metrics.argmax_transitions(probs, grid) == [
        (float(grid[26]), 1, 2),
        (float(grid[70]), 2, 3),
        (float(grid[82]), 3, 4),
    ]
    first = metrics.first_argmax(probs, grid)
    assert first == {1: float(grid[0]), 2: float(grid[26]), 3: float(grid[70]), 4: float(grid[82])}
    assert metrics.peak_fraction(first, [1, 2, 3, 4]) == 1.0


def test_peak_fraction_counts_only_expected_counts_that_peak():
    grid = torch.linspace(0, 1, 5)
    probs = staircase(grid, [(0.0, 1), (0.5, 4), (1.0, 7)])
    first = metrics.first_argmax(probs, grid)
    assert metrics.peaked_counts(first, [1, 2, 3, 4]) == [1, 4]
    assert metrics.peak_fraction(first, [1, 2, 3, 4]) == 0.5
    with pytest.raises(ValueError, match="expected"):
        metrics.peak_fraction(first, [])


def test_a_label_that_returns_is_not_a_new_first_argmax():
    grid = torch.arange(4.0)
    probs = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.9, 0.1], [0.2, 0.8]])
    assert metrics.first_argmax(probs, grid) == {0: 0.0, 1: 1.0}
    assert len(metrics.argmax_transitions(probs, grid)) == 3


@pytest.mark.parametrize("slope", [0.0, 0.3, -0.7])
def test_lipschitz_of_a_line_is_its_slope_times_the_range(slope):
    grid = torch.linspace(-1.0, 3.0, 41, dtype=torch.float64)
    values = 0.5 + slope * grid / 10
    got = metrics.normalised_lipschitz(values, grid).item()
    assert got == pytest.approx(abs(slope) / 10 * 4.0, abs=1e-12)


def test_lipschitz_of_a_sine_approaches_its_largest_derivative():
    grid = torch.linspace(0, 1, 2001, dtype=torch.float64)
    values = 0.5 + 0.1 * torch.sin(2 * math.pi * grid)
    # max |d/dx| = 0.1 * 2 pi, range 1
    assert metrics.normalised_lipschitz(values, grid).item() == pytest.approx(
        0.2 * math.pi, rel=1e-4
    )


def test_lipschitz_of_a_jump_is_height_times_intervals():
    grid = torch.linspace(0, 1, 11)
    values = torch.where(grid < 0.55, 0.1, 0.7)
    assert metrics.normalised_lipschitz(values, grid).item() == pytest.approx(0.6 * 10, rel=1e-5)


def test_lipschitz_per_label_and_uneven_grid():
    grid = torch.tensor([0.0, 0.1, 1.0], dtype=torch.float64)
    values = torch.tensor([[0.0, 1.0], [0.05, 0.9], [0.5, 0.0]], dtype=torch.float64)
    # label 0 slopes: 0.5, 0.5 -> 0.5; label 1 slopes: 1.0, 1.0 -> 1.0
    assert metrics.normalised_lipschitz(values, grid).tolist() == pytest.approx([0.5, 1.0])


def test_excursion_known_values_and_flag():
    monotone = torch.linspace(0.2, 0.8, 7)
    assert metrics.excursion(monotone).item() == 0.0
    bump = torch.tensor([0.3, 0.36, 0.31, 0.3])
    assert metrics.excursion(bump).item() == pytest.approx(0.06, abs=1e-6)
    assert metrics.excursion(bump).item() >= metrics.EXCURSION_FLAG
    dip = torch.tensor([[0.5, 0.5], [0.46, 0.52], [0.9, 0.1]])
    assert metrics.excursion(dip).tolist() == pytest.approx([0.04, 0.02], abs=1e-6)


def test_blend_distance_is_zero_for_linear_paths_and_tv_otherwise():
    torch.manual_seed(0)
    start = torch.rand(20, dtype=torch.float64).softmax(-1)
    end = torch.rand(20, dtype=torch.float64).softmax(-1)
    lam = torch.linspace(0, 1, 9, dtype=torch.float64)
    linear = (1 - lam[:, None]) * start + lam[:, None] * end
    assert metrics.blend_distance(linear, lam, start, end).abs().max().item() < 1e-12
    other = torch.rand(9, 20, dtype=torch.float64).softmax(-1)
    expected = 0.5 * (other - linear).abs().sum(-1)
    assert torch.allclose(metrics.blend_distance(other, lam, start, end), expected)


def test_total_variation_bounds():
    p = torch.tensor([1.0, 0.0, 0.0])
    q = torch.tensor([0.0, 0.0, 1.0])
    assert metrics.total_variation(p, q).item() == 1.0
    assert metrics.total_variation(p, p).item() == 0.0


def test_grid_errors_name_the_argument():
    probs = torch.rand(3, 2)
    # shape mismatches: jaxtyping under pytest, our ValueError otherwise; both name "grid"
    with pytest.raises((ValueError, TypeError), match="grid"):
        metrics.argmax_transitions(probs, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="increasing"):
        metrics.first_argmax(probs, torch.tensor([0.0, 2.0, 1.0]))
    with pytest.raises((ValueError, TypeError), match="lambdas"):
        metrics.blend_distance(probs, torch.rand(2), probs[0], probs[1])
