"""Ensemble comparisons: classifier accuracy and Wasserstein distances against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm

from tl_continuous.lines_of_thought.compare import (
    EnsembleComparison,
    classifier_accuracy,
    classifier_test,
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
    with pytest.raises((ValueError, TypeError), match=r"parameter 'b'|a and b must be \[n, dim\]"):
        classifier_accuracy(_gauss(50, 3, 0), _gauss(50, 4, 0))
    with pytest.raises(ValueError, match="n_folds"):
        classifier_accuracy(_gauss(50, 3, 0), _gauss(50, 3, 1), n_folds=1)
    with pytest.raises(ValueError, match="at least"):
        classifier_accuracy(_gauss(5, 3, 0), _gauss(5, 3, 1))


# --- below-chance artefact of dependent ensembles, and the permutation null ---------------------
# Self-contained on purpose (no shared fixtures): one thread is set by the autouse fixture above.


def _extrapolated_pilots(n: int, d: int, seed: int, fit_rows: slice | None = None):
    """True pilots x1 = 0.7 x0 + noise (large common mean, like the residual stream) and the
    noise-free extrapolation of x0 through uncentred SVDs, as in ``dynamics.extrapolate``.

    With ``fit_rows=None`` the bases are fitted on the very pilots that are compared (what
    the dynamics report did); otherwise on ``fit_rows`` and only the other rows are returned.
    """
    from tl_continuous.lines_of_thought.dynamics import extrapolate

    g = torch.Generator().manual_seed(seed)
    mean = 10.0 * torch.randn(d, generator=g, dtype=torch.float64) / math.sqrt(d)
    x0 = mean + torch.randn(n, d, generator=g, dtype=torch.float64)
    x1 = 0.7 * x0 + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64)
    rows = torch.ones(n, dtype=torch.bool)
    if fit_rows is not None:
        rows[fit_rows] = False
    fit = ~rows if fit_rows is not None else rows
    (_, sf, vf), (_, st, vt) = (torch.linalg.svd(x[fit], full_matrices=False) for x in (x0, x1))
    uf, ut = vf.T, vt.T
    ut = ut * torch.sign((uf * ut).sum(0))  # realign signs target -> source
    return extrapolate(x0[rows], uf, sf, ut, st), x1[rows]


def test_in_sample_extrapolation_is_below_chance_but_not_significant():
    pred, true = _extrapolated_pilots(1000, 100, 0)
    # the mechanism: the bases were fitted on these pilots, so the two full-sample means agree
    # far more closely than two independent samples would (Mahalanobis ~ sqrt(2 d / n) = 0.45;
    # 0.055 measured here)
    diff = pred.mean(0) - true.mean(0)
    pooled = torch.cov(torch.cat([pred - pred.mean(0), true - true.mean(0)]).T)
    assert float(diff @ torch.linalg.solve(pooled, diff)) ** 0.5 < 0.15
    old = classifier_accuracy(pred, true)
    # the training folds' mean difference is minus the held-out folds' one: anti-learning.
    # Phi(-sqrt(d (1 - rho) / (2 n_test))) predicts ~0.33 here; 0.36 measured (seed 0); the
    # null's SD is ~0.017, so 0.42 is > 4 SD below chance.
    assert old < 0.42
    r = classifier_test(pred, true, n_permutations=19)
    assert r.accuracy == old  # same folds, same classifier: the old number is kept
    assert abs(r.null_accuracy - 0.5) < 0.03  # mean of 19 nulls: SD ~0.004
    assert r.p_value > 0.5  # no evidence of a separation
    assert r.p_below == pytest.approx(1 / 20)  # below every null: flag, do not read accuracy
    assert r.excess < -0.1


def test_extrapolation_from_disjoint_pilots_is_not_below_chance():
    # the fix at the source: bases fitted on the other half, so no mean is matched by construction
    pred, true = _extrapolated_pilots(2000, 100, 0, fit_rows=slice(0, 1000))
    r = classifier_test(pred, true, n_permutations=19)
    assert r.accuracy > 0.5 - 3 * r.null_sd
    assert r.p_below > 0.5


def test_classifier_test_detects_a_real_linear_separation():
    a = _gauss(1000, 100, 11)
    b = _gauss(1000, 100, 12)
    b[:, 0] += 3.0  # Bayes accuracy Phi(1.5) = 0.93
    r = classifier_test(a, b, n_permutations=19)
    assert r.accuracy > 0.88  # 100 dims of noise at n = 800 per class cost a few points
    assert r.p_value == pytest.approx(1 / 20)  # the smallest possible with 19 permutations
    assert r.p_below == 1.0
    assert abs(r.null_accuracy - 0.5) < 0.03


def test_classifier_test_on_two_iid_samples_is_at_chance():
    r = classifier_test(_gauss(1000, 100, 13), _gauss(1000, 100, 14), n_permutations=19)
    # held-out accuracy SD ~0.015 at n = 1000 (the null's SD): 0.05 is > 3 SD
    assert abs(r.accuracy - 0.5) < 0.05
    assert abs(r.null_accuracy - 0.5) < 0.03
    assert abs(r.excess) < 3 * r.null_sd
    assert r.p_value > 0.05 and r.p_below > 0.05  # seed fixed; uniform under the null


def test_comparison_null_fields_and_old_dicts():
    a, b = _gauss(400, 6, 15), _gauss(400, 6, 16)
    cmp = EnsembleComparison.from_tensors(a + 1.0, b, n_permutations=4)
    assert cmp.p_value == pytest.approx(1 / 5) and cmp.null_accuracy is not None
    assert cmp.accuracy == EnsembleComparison.from_tensors(a + 1.0, b).accuracy
    assert EnsembleComparison.from_dict(cmp.to_dict()) == cmp
    old = {
        k: v for k, v in cmp.to_dict().items() if k not in ("null_accuracy", "p_value", "p_below")
    }
    assert EnsembleComparison.from_dict(old).p_value is None
    with pytest.raises(ValueError, match="n_permutations"):
        classifier_test(a, b, n_permutations=0)
