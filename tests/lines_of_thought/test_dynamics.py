"""Extrapolation, residual statistics and the variance law, against known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tl_continuous._io import FormatError
from tl_continuous.lines_of_thought.dynamics import (
    ResidualStatistics,
    VarianceLawFit,
    extrapolate,
    residuals,
    times_from_layer_names,
    valid_pairs,
)
from tl_continuous.lines_of_thought.synthetic import linear_gaussian_ensemble

pytestmark = pytest.mark.usefixtures("one_thread")


def svd_realigned(traj: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An independent reference: per-layer uncentred SVD with signs matched layer to layer.

    The synthetic singular values are distinct and never cross, so the SVD order already
    matches across layers; only the signs need fixing.
    """
    us, ss = [], []
    for t in range(traj.shape[1]):
        u, s, _ = torch.linalg.svd(traj[:, t].T.double(), full_matrices=False)
        u, s = u[:, :rank], s[:rank]
        if us:
            sign = torch.sign((us[-1] * u).sum(0))
            u = u * sign
        us.append(u)
        ss.append(s)
    return torch.stack(us), torch.stack(ss)


def test_extrapolation_is_exact_on_noise_free_data():
    ens = linear_gaussian_ensemble(n=300, n_layers=6, d_model=10, rank=10, seed=1)
    scale = float(ens.trajectories.abs().max())
    for U, S in [(ens.U, ens.S), svd_realigned(ens.trajectories, 10)]:
        for t, tau in valid_pairs(6):
            dx = residuals(ens.trajectories, U, S, t, tau)
            assert float(dx.abs().max()) < 1e-9 * scale, (t, tau)


def test_extrapolation_matches_the_formula_on_a_random_case():
    g = torch.Generator().manual_seed(0)
    u1, _ = torch.linalg.qr(torch.randn(5, 3, generator=g, dtype=torch.float64))
    u2, _ = torch.linalg.qr(torch.randn(5, 3, generator=g, dtype=torch.float64))
    s1 = torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    s2 = torch.tensor([1.0, 5.0, 2.0], dtype=torch.float64)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64)
    expected = x @ u1 @ torch.diag(s2) @ torch.linalg.inv(torch.diag(s1)) @ u2.T
    assert torch.allclose(extrapolate(x, u1, s1, u2, s2), expected)


@pytest.mark.parametrize("estimated", [False, True])
def test_variance_law_recovers_alpha_and_lambda_within_5_percent(estimated):
    ens = linear_gaussian_ensemble(
        n=2000, n_layers=12, d_model=24, rank=8, alpha=0.05, lam=0.2, seed=3
    )
    U, S = svd_realigned(ens.trajectories, 8) if estimated else (ens.U, ens.S)
    stats = ResidualStatistics.from_tensors(ens.trajectories, U, S, progress=False)
    fit = VarianceLawFit.from_statistics(stats)
    assert abs(fit.alpha / 0.05 - 1) < 0.05
    assert abs(fit.lam / 0.2 - 1) < 0.05
    assert fit.r2 > 0.99
    assert fit.lam_ci[0] < fit.lam < fit.lam_ci[1]
    # the variance depends on t + tau only
    assert fit.eta2_sum > 0.99
    assert fit.eta2_tau < 0.5
    # Gaussian, centred, uncorrelated noise
    assert float(stats.mean_norm.max()) < 0.1
    assert float(stats.kurtosis.abs().max()) < 0.2
    assert float(stats.normal_reject.mean()) < 0.12


def test_variance_depending_on_tau_alone_is_told_apart():
    # residual variance exp(0.5 * tau) whatever t: eta2 by tau is 1, by t + tau is not
    pairs = valid_pairs(10)
    t = torch.tensor([p[0] for p in pairs])
    tau = torch.tensor([p[1] for p in pairs])
    fit = VarianceLawFit.fit((t + tau + 1).double(), torch.exp(0.5 * tau.double()), t=t, tau=tau)
    assert fit.eta2_tau == pytest.approx(1.0)
    assert fit.eta2_sum < 0.9


def test_fit_confidence_interval_covers_truth_and_r2_matches_numpy():
    rng = np.random.default_rng(0)
    s = torch.arange(2.0, 30.0, dtype=torch.float64).repeat(3)
    noise = torch.from_numpy(rng.normal(0, 0.1, s.shape[0]))
    v = 0.64 * torch.exp(0.18 * s + noise)
    fit = VarianceLawFit.fit(s, v, confidence=0.99)
    slope, intercept = np.polyfit(s.numpy(), np.log(v.numpy()), 1)
    assert fit.lam == pytest.approx(slope)
    assert fit.log_alpha == pytest.approx(intercept)
    r2 = np.corrcoef(s.numpy(), np.log(v.numpy()))[0, 1] ** 2
    assert fit.r2 == pytest.approx(r2)
    assert fit.lam_ci[0] < 0.18 < fit.lam_ci[1]
    assert fit.alpha_ci[0] < 0.64 < fit.alpha_ci[1]
    back = VarianceLawFit.from_dict(json.loads(json.dumps(fit.to_dict())))
    assert json.dumps(back.to_dict()) == json.dumps(fit.to_dict())
    assert back.alpha_ci == fit.alpha_ci


def _stats_of(noise: torch.Tensor) -> ResidualStatistics:
    """Statistics of a residual equal to ``noise``: the source layer is zero."""
    n, d = noise.shape
    traj = torch.stack([torch.zeros(n, d, dtype=torch.float64), noise], dim=1)
    U = torch.eye(d, dtype=torch.float64).expand(2, d, d)
    S = torch.ones(2, d, dtype=torch.float64)
    return ResidualStatistics.from_tensors(traj, U, S, progress=False)


def test_statistics_of_an_isotropic_gaussian_hit_their_null_values():
    g = torch.Generator().manual_seed(0)
    s = _stats_of(2.0 * torch.randn(4000, 20, generator=g, dtype=torch.float64))
    assert float(s.variance[0]) == pytest.approx(4.0, rel=0.03)
    assert float(s.isotropy[0]) == pytest.approx(s.isotropy_null, rel=0.02)
    assert float(s.cross_correlation[0]) == pytest.approx(s.cross_correlation_null, rel=0.1)
    assert abs(float(s.kurtosis[0])) < 0.05
    assert float(s.normal_reject[0]) <= 0.25
    assert float(s.mean_norm[0]) < 0.02


def test_statistics_see_heavy_tails_correlation_anisotropy_and_a_mean():
    g = torch.Generator().manual_seed(1)
    n, d = 4000, 10
    lap = torch.distributions.Laplace(0.0, 1.0).sample((n, d)).double()
    heavy = _stats_of(lap)
    assert float(heavy.kurtosis[0]) == pytest.approx(3.0, abs=0.6)  # Laplace: 3
    assert float(heavy.normal_reject[0]) > 0.9

    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    shared = torch.randn(n, 1, generator=g, dtype=torch.float64)
    corr = _stats_of(z + shared)  # correlation 1/2 between every pair
    assert float(corr.cross_correlation[0]) == pytest.approx(0.5, abs=0.03)

    scales = torch.arange(1, d + 1, dtype=torch.float64)
    aniso = _stats_of(z * scales.sqrt())
    expected = float(scales.sum() ** 2 / (scales**2).sum() / d)
    assert float(aniso.isotropy[0]) == pytest.approx(expected, rel=0.05)

    shifted = _stats_of(z + 3.0)
    assert float(shifted.mean_norm[0]) == pytest.approx(3.0 * math.sqrt(d) / math.sqrt(d), rel=0.05)


def test_table_dict_round_trip_and_select():
    ens = linear_gaussian_ensemble(n=100, n_layers=5, d_model=8, rank=3, seed=0)
    stats = ResidualStatistics.from_tensors(ens.trajectories, ens.U, ens.S, progress=False)
    assert stats.t.shape == (10,)
    back = ResidualStatistics.from_dict(json.loads(json.dumps(stats.to_dict())))
    for k in ("t", "tau", "variance", "coord_variance", "kurtosis", "normal_pvalue"):
        assert torch.equal(getattr(back, k), getattr(stats, k)), k
    table = stats.table("variance")
    assert float(table[1, 3]) == float(stats.variance[(stats.t == 1) & (stats.tau == 2)][0])
    one = stats.select(stats.tau == 1)
    assert one.tau.tolist() == [1, 1, 1, 1]
    limited = ResidualStatistics.from_tensors(
        ens.trajectories, ens.U, ens.S, max_tau=1, layers=(1, 4), progress=False
    )
    assert list(zip(limited.t.tolist(), limited.tau.tolist(), strict=True)) == [(1, 1), (2, 1)]


def test_times_from_layer_names():
    names = [f"blocks.{i}.hook_resid_post" for i in (0, 1, 5)] + ["ln_final.hook_normalized"]
    assert times_from_layer_names(names, n_blocks=6).tolist() == [1.0, 2.0, 6.0, 7.0]
    assert times_from_layer_names(["blocks.3.hook_resid_pre"]).tolist() == [3.0]
    with pytest.raises(ValueError, match="layer_names"):
        times_from_layer_names(["embed.hook_embed"])


def test_bad_inputs_raise_value_errors():
    ens = linear_gaussian_ensemble(n=30, n_layers=3, d_model=4, rank=2)
    # wrong shapes: jaxtyping's TypeCheckError (a TypeError) under the test hook, our
    # ValueError without it
    with pytest.raises((ValueError, TypeError), match="U"):
        ResidualStatistics.from_tensors(ens.trajectories, ens.U[:2], ens.S, progress=False)
    with pytest.raises((ValueError, TypeError), match="S"):
        ResidualStatistics.from_tensors(ens.trajectories, ens.U, ens.S[:, :1], progress=False)
    with pytest.raises(ValueError, match="t \\+ tau"):
        residuals(ens.trajectories, ens.U, ens.S, 1, 2)
    with pytest.raises(ValueError, match="positive"):
        VarianceLawFit.fit(torch.arange(3.0).double(), torch.tensor([1.0, 0.0, 2.0]).double())
    with pytest.raises(ValueError, match="layers"):
        valid_pairs(3, layers=(2, 5))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_low_precision_inputs_are_analysed_in_float64(dtype):
    ens = linear_gaussian_ensemble(n=400, n_layers=6, d_model=12, rank=4, seed=5)
    ref = ResidualStatistics.from_tensors(ens.trajectories, ens.U, ens.S, progress=False)
    low = ResidualStatistics.from_tensors(
        ens.trajectories.to(dtype), ens.U.to(dtype), ens.S.to(dtype), progress=False
    )
    assert low.variance.dtype == torch.float64
    tol = 0.2 if dtype == torch.bfloat16 else 1e-3
    fit_ref, fit_low = VarianceLawFit.from_statistics(ref), VarianceLawFit.from_statistics(low)
    assert fit_low.lam == pytest.approx(fit_ref.lam, rel=tol)


def test_excess_kurtosis_is_the_bias_corrected_one_of_scipy():
    from scipy import stats as sps

    from tl_continuous.lines_of_thought.dynamics import excess_kurtosis

    known = torch.tensor([0.0, 1.0, 1.5, 2.0, 3.0, 3.5, 7.0, 10.0, -4.0], dtype=torch.float64)
    got = float(excess_kurtosis(known[:, None])[0])
    assert abs(got - float(sps.kurtosis(known.numpy(), bias=False))) < 1e-12
    # the biased value differs: the test can tell the two conventions apart
    assert abs(got - float(sps.kurtosis(known.numpy(), bias=True))) > 0.1
    with pytest.raises(ValueError, match="at least 4 samples"):
        excess_kurtosis(known[:3, None])
    # ResidualStatistics: mean over coordinates of scipy's bias-corrected kurtosis of dx
    gen = torch.Generator().manual_seed(0)
    ens = linear_gaussian_ensemble(n=60, n_layers=3, d_model=6, rank=2, seed=3)
    traj = ens.trajectories + 0.1 * torch.randn(ens.trajectories.shape, generator=gen).double()
    s = ResidualStatistics.from_tensors(traj, ens.U, ens.S, progress=False)
    for j in range(len(s.t)):
        t, tau = int(s.t[j]), int(s.tau[j])
        dx = residuals(traj, ens.U, ens.S, t, tau).numpy()
        expected = float(np.mean(sps.kurtosis(dx, axis=0, bias=False)))
        assert abs(float(s.kurtosis[j]) - expected) < 1e-12


def test_from_lines_takes_times_from_layer_names_and_the_model_config():
    from tl_continuous.lines_of_thought.bases import TrajectoryBases
    from tl_continuous.lines_of_thought.ensemble import LinesOfThought

    ens = linear_gaussian_ensemble(n=40, n_layers=4, d_model=5, rank=2, seed=2)
    names = [f"blocks.{i}.hook_resid_post" for i in (0, 1, 2)] + ["ln_final.hook_normalized"]
    lot = LinesOfThought(
        trajectories=ens.trajectories.float(),
        layer_names=names,
        metadata={"model_config": {"n_layers": 6}},  # what collect_shards records
    )
    bases = TrajectoryBases.from_ensemble(lot)
    s = ResidualStatistics.from_lines(lot, bases, progress=False)
    assert s.times.tolist() == [1.0, 2.0, 3.0, 7.0]  # the final norm after block 6
    direct = ResidualStatistics.from_tensors(
        lot.trajectories, bases.U, bases.S, times=s.times, progress=False
    )
    assert torch.equal(s.variance, direct.variance) and torch.equal(s.kurtosis, direct.kurtosis)
    assert ResidualStatistics.from_lines(lot, bases, n_blocks=3, progress=False).times[
        -1
    ] == pytest.approx(4.0)
    lot.metadata = {}
    assert ResidualStatistics.from_lines(lot, bases, progress=False).times[-1] == 4.0
    times = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    assert torch.equal(
        ResidualStatistics.from_lines(lot, bases, times=times, progress=False).times, times
    )


def test_statistics_files_of_the_biased_convention_are_converted_when_read(tmp_path):
    from scipy import stats as sps

    from tl_continuous._io import load_tensors, save_tensors
    from tl_continuous.lines_of_thought.dynamics import STATISTICS_FORMAT, VERSION

    ens = linear_gaussian_ensemble(n=30, n_layers=3, d_model=4, rank=2, seed=1)
    stats = ResidualStatistics.from_tensors(ens.trajectories, ens.U, ens.S, progress=False)
    path = stats.save(tmp_path / "s.st")
    fields, tensors = load_tensors(path, STATISTICS_FORMAT, VERSION)
    assert fields["kurtosis"] == "bias-corrected"
    assert torch.equal(ResidualStatistics.load(path).kurtosis, stats.kurtosis)
    # a file from before: biased g2, no convention in the header
    dx = residuals(ens.trajectories, ens.U, ens.S, 0, 1).numpy()
    g2 = float(np.mean(sps.kurtosis(dx, axis=0, bias=True)))
    old = tensors | {"kurtosis": torch.full_like(tensors["kurtosis"], g2)}
    del fields["kurtosis"]
    save_tensors(path, STATISTICS_FORMAT, VERSION, old, fields)
    expected = float(np.mean(sps.kurtosis(dx, axis=0, bias=False)))
    assert float(ResidualStatistics.load(path).kurtosis[0]) == pytest.approx(expected, abs=1e-12)
    save_tensors(path, STATISTICS_FORMAT, VERSION, old, fields | {"kurtosis": "other"})
    with pytest.raises(FormatError, match="unknown kurtosis convention 'other'"):
        ResidualStatistics.load(path)
