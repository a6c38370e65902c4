"""Ensemble comparisons: classifier accuracy and Wasserstein distances against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm

from tl_continuous.lines_of_thought.compare import (
    EnsembleComparison,
    classifier_accuracy,
    gaussian_wasserstein,
    sliced_wasserstein,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _gauss(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_same_distribution_is_at_chance():
    acc = classifier_accuracy(_gauss(1500, 10, 0), _gauss(1500, 10, 1))
    assert abs(acc - 0.5) < 0.04


def test_accuracy_approaches_the_bayes_rate_of_two_gaussians():
    # identity covariances, Mahalanobis distance 1 between the means: Bayes accuracy Phi(1/2)
    shift = torch.zeros(8, dtype=torch.float64)
    shift[:4] = 0.5
    acc = classifier_accuracy(_gauss(4000, 8, 2), _gauss(4000, 8, 3) + shift)
    assert acc == pytest.approx(norm.cdf(0.5), abs=0.025)


def test_projection_basis_restricts_what_the_classifier_sees():
    a, b = _gauss(800, 5, 4), _gauss(800, 5, 5)
    b[:, 4] += 3.0  # separable only along the last axis
    basis = torch.eye(5, dtype=torch.float64)[:, :4]
    assert classifier_accuracy(a, b) > 0.9
    assert abs(classifier_accuracy(a, b, basis=basis) - 0.5) < 0.06


def test_gaussian_w2_matches_the_closed_form():
    n = 20000
    a = _gauss(n, 2, 6) * torch.tensor([1.0, 2.0], dtype=torch.float64)
    m = torch.tensor([1.0, -1.0], dtype=torch.float64)
    b = _gauss(n, 2, 7) * torch.tensor([2.0, 1.0], dtype=torch.float64) + m
    # diagonal covariances: W2^2 = |m|^2 + sum (sqrt a_i - sqrt b_i)^2 = 2 + 1 + 1
    assert gaussian_wasserstein(a, b) == pytest.approx(2.0, rel=0.02)


def test_sliced_w2_of_a_shift_is_its_norm_over_root_d():
    d = 4
    a = _gauss(1000, d, 8)
    m = torch.tensor([2.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    # the quantile functions differ by m . theta exactly; E[(m . theta)^2] = |m|^2 / d
    got = sliced_wasserstein(a, a + m, n_projections=1000)
    assert got == pytest.approx(2.0 / math.sqrt(d), rel=0.05)
    assert sliced_wasserstein(a, a) == 0.0


def test_comparison_floor_scale_and_round_trip():
    a, b = _gauss(1000, 6, 9), _gauss(1000, 6, 10)
    basis = torch.eye(6, dtype=torch.float64)[:, :3]
    same = EnsembleComparison.from_tensors(a, b, basis=basis)
    assert same.k == 3
    assert same.scale == pytest.approx(math.sqrt(3), rel=0.1)
    assert same.gaussian_w2 < 0.2 and same.floor_gaussian_w2 < 0.2
    far = EnsembleComparison.from_tensors(a + 1.0, b, basis=basis)
    assert far.gaussian_w2 == pytest.approx(math.sqrt(3), rel=0.1)
    assert far.accuracy > 0.75
    assert EnsembleComparison.from_dict(far.to_dict()) == far


def test_errors():
    with pytest.raises((ValueError, TypeError)):
        classifier_accuracy(_gauss(50, 3, 0), _gauss(50, 4, 0))
    with pytest.raises(ValueError, match="n_folds"):
        classifier_accuracy(_gauss(50, 3, 0), _gauss(50, 3, 1), n_folds=1)
    with pytest.raises(ValueError, match="at least"):
        classifier_accuracy(_gauss(5, 3, 0), _gauss(5, 3, 1))
