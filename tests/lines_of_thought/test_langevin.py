"""The Langevin model: orthogonal interpolation, Euler-Maruyama, Fokker-Planck moments."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from tl_continuous.lines_of_thought.bases import TrajectoryBases
from tl_continuous.lines_of_thought.dynamics import VarianceLawFit, extrapolate
from tl_continuous.lines_of_thought.langevin import (
    FORMAT,
    VERSION,
    LangevinModel,
    orthogonal_path,
)
from tl_continuous.lines_of_thought.synthetic import linear_gaussian_ensemble

pytestmark = pytest.mark.usefixtures("one_thread")


def _random_rotation(d: int, scale: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d)) * scale
    return scipy.linalg.expm(a - a.T)


def test_orthogonal_path_matches_scipy_logm_and_expm():
    q = _random_rotation(6, 0.3, 0)
    path = orthogonal_path(q)
    log_q = np.real(scipy.linalg.logm(q))
    assert not path.reflected
    assert np.allclose(path.log(), log_q, atol=1e-10)
    for a in (0.0, 0.3, 0.5, 1.0):
        assert np.allclose(path.at(a), scipy.linalg.expm(a * log_q), atol=1e-10)


@pytest.mark.parametrize("angle", [math.pi - 1e-9, math.pi, -math.pi + 1e-12])
def test_near_pi_and_pi_rotations_do_not_crash(angle):
    c, s = math.cos(angle), math.sin(angle)
    base = np.eye(5)
    base[:2, :2] = [[c, -s], [s, c]]
    z = _random_rotation(5, 1.0, 1)
    q = z @ base @ z.T
    path = orthogonal_path(q)
    assert np.allclose(path.at(1.0), q, atol=1e-8)
    half = path.at(0.5)
    assert np.allclose(half @ half.T, np.eye(5), atol=1e-10)
    # half-way is a rotation by about pi/2 in the plane: q = half @ half
    assert np.allclose(half @ half, q, atol=1e-8)
    assert np.allclose(path.log(), -path.log().T)


def test_two_minus_one_eigenvalues_pair_into_a_pi_rotation():
    q = np.diag([-1.0, -1.0, 1.0, 1.0])
    path = orthogonal_path(q)
    assert not path.reflected
    assert np.allclose(path.at(1.0), q)
    assert sorted(np.abs(path.angles).round(12)) == [0.0, round(math.pi, 12)]


def test_reflection_has_no_logarithm_but_a_path_that_stays_orthogonal():
    q = _random_rotation(4, 0.3, 2) @ np.diag([1.0, -1.0, 1.0, 1.0])
    assert np.linalg.det(q) < 0
    path = orthogonal_path(q)
    assert path.reflected
    for a in (0.0, 0.5, 0.99):
        r = path.at(a)
        assert np.allclose(r @ r.T, np.eye(4), atol=1e-10)
        assert np.linalg.det(r) > 0
    # the rotation part times the reflection of the last column recovers q
    e = path.Z[:, -1:]
    assert np.allclose(path.at(1.0) @ (np.eye(4) - 2 * e @ e.T), q, atol=1e-10)
    with pytest.raises(ValueError, match="orthogonal"):
        orthogonal_path(2 * q)


def _reflected_ensemble(n: int = 40, seed: int = 0):
    """A full-rank noise-free ensemble whose bases carry one sign flip from layer 2 on, so
    that segment 1 (layer 1 to 2) has ``det(U_1^T U_2) = -1``."""
    ens = linear_gaussian_ensemble(n=n, n_layers=4, d_model=5, rank=5, rotation=0.6, seed=seed)
    U = ens.U.clone()
    U[2:, :, 3] *= -1  # a sign flip the realignment did not undo
    return ens, U


def test_reflected_segment_noise_free_endpoint_is_the_linear_extrapolation(tmp_path):
    ens, U = _reflected_ensemble()
    model = LangevinModel.from_tensors(U, ens.S, alpha=0.0, lam=0.0)
    dets = [float(torch.linalg.det(U[i].T @ U[i + 1])) for i in range(3)]
    assert [round(d) for d in dets] == [1, -1, 1]
    assert model.reflected == [1]
    assert model.reflected_columns == [-1, 3, -1]
    x = ens.trajectories
    zero = torch.zeros(5, 5, dtype=torch.float64)
    for seg in range(3):
        ext = extrapolate(x[:, seg], U[seg], ens.S[seg], U[seg + 1], ens.S[seg + 1])
        for n in range(4):
            # the Fokker-Planck mean with zero covariance is the noise-free drift's solution
            means, covs = model.moments(x[n, seg], zero, start=seg, horizon=1, dt=0.01)
            err = float((means[1] - ext[n]).norm() / ext[n].norm())
            assert err < 1e-6, (seg, n, err)
            assert float(covs[1].abs().max()) < 1e-12
        # Euler-Maruyama without noise: first-order convergence to the same endpoint
        errs = []
        for dt in (0.02, 0.01):
            sim = model.simulate(x[:, seg], start=seg, horizon=1, dt=dt, noise=False)
            errs.append(float(((sim[:, 1] - ext).norm(dim=-1) / ext.norm(dim=-1)).max()))
        assert errs[1] < 0.05
        assert 1.6 < errs[0] / errs[1] < 2.4, errs
    # the reflected segment's basis: U_1 with column 3 negated at the start, U_2 at the end
    start, end = model.rotation(2.0, 1), model.rotation(3.0, 1)
    assert torch.allclose(start[:, 3], -U[1][:, 3], atol=1e-10)
    assert torch.allclose(start[:, :3], U[1][:, :3], atol=1e-10)
    assert torch.allclose(end, U[2], atol=1e-9)
    # recorded in the saved model
    back = LangevinModel.load(model.save(tmp_path / "m.safetensors"))
    assert back.reflected == [1]
    assert back.reflected_columns == [-1, 3, -1]
    from tl_continuous._io import load_tensors

    fields, _ = load_tensors(tmp_path / "m.safetensors", FORMAT, VERSION)
    assert fields["reflected"] == [1]


def test_saved_reflections_must_match_the_bases(tmp_path):
    from tl_continuous._io import FormatError, load_tensors, save_tensors

    ens, U = _reflected_ensemble()
    path = LangevinModel.from_tensors(U, ens.S, alpha=0.0, lam=0.0).save(tmp_path / "m.st")
    fields, tensors = load_tensors(path, FORMAT, VERSION)
    save_tensors(path, FORMAT, VERSION, tensors, fields | {"reflected_columns": [-1, -1, -1]})
    with pytest.raises(FormatError, match="reflected columns"):
        LangevinModel.load(path)
    # a file written before the reflections were recorded: they are recomputed from U
    old = {k: v for k, v in fields.items() if not k.startswith("reflected")}
    save_tensors(path, FORMAT, VERSION, tensors, old)
    assert LangevinModel.load(path).reflected_columns == [-1, 3, -1]


def test_from_bases_refuses_bases_that_were_not_realigned():
    ens = linear_gaussian_ensemble(n=20, n_layers=3, d_model=4, rank=4, seed=1)
    names = [f"blocks.{i}.hook_resid_post" for i in range(3)]
    fit = VarianceLawFit.fit(
        torch.tensor([1.0, 2.0, 3.0]), 0.5 * torch.exp(0.3 * torch.tensor([1.0, 2.0, 3.0]))
    )
    raw = TrajectoryBases(U=ens.U, S=ens.S, layer_names=names, realigned=False)
    with pytest.raises(ValueError, match="bases must be realigned"):
        LangevinModel.from_bases(raw, fit)
    ok = TrajectoryBases(U=ens.U, S=ens.S, layer_names=names, realigned=True)
    model = LangevinModel.from_bases(ok, fit)
    assert model.alpha == pytest.approx(0.5) and model.lam == pytest.approx(0.3)


def test_rotation_hits_the_bases_at_layers_and_drift_matches_finite_differences():
    ens = linear_gaussian_ensemble(n=60, n_layers=5, d_model=6, rank=6, rotation=0.8, seed=4)
    model = LangevinModel.from_tensors(ens.U, ens.S, alpha=0.0, lam=0.0)
    for i in range(4):
        assert torch.allclose(model.rotation(float(model.times[i])), ens.U[i], atol=1e-10)
        assert torch.allclose(model.rotation(float(model.times[i + 1]), i), ens.U[i + 1], atol=1e-9)
    # exponential singular values: S' is the growth rate exactly
    assert torch.allclose(model.log_growth(2.37), ens.growth, atol=1e-10)
    t, h = 2.4, 1e-5
    r = model.rotation(t)
    dr = (model.rotation(t + h) - model.rotation(t - h)) / (2 * h)
    expected = dr @ r.T + r @ torch.diag(ens.growth) @ r.T
    assert torch.allclose(model.drift_matrix(t), expected, atol=1e-6)


def test_noise_free_model_reproduces_the_trajectories():
    ens = linear_gaussian_ensemble(n=30, n_layers=5, d_model=6, rank=6, rotation=0.6, seed=5)
    model = LangevinModel.from_tensors(ens.U, ens.S, alpha=0.0, lam=0.0)
    x = ens.trajectories
    for n in range(3):  # Runge-Kutta on the mean: essentially exact
        means, _ = model.moments(
            x[n, 1], torch.zeros(6, 6, dtype=torch.float64), start=1, horizon=3
        )
        assert torch.allclose(means, x[n, 1:], rtol=1e-6, atol=1e-6 * float(x.abs().max()))
    sim = model.simulate(x[:, 1], start=1, horizon=3, dt=0.01, noise=False)
    err = (sim - x[:, 1:]).norm(dim=-1) / x[:, 1:].norm(dim=-1)
    assert float(err.max()) < 0.02  # Euler's O(dt) error


def _closed_form(g, m0, c0, alpha, lam, t0, t1):
    """Moments in the eigenbasis of a constant diagonal drift g (independent coordinates)."""
    e = np.exp(g * (t1 - t0))
    mean = e * m0
    k = lam - 2 * g
    noise = alpha * lam * np.exp(2 * g * t1) * (np.exp(k * t1) - np.exp(k * t0)) / k
    return mean, np.outer(e, e) * c0 + np.diag(noise)


def test_simulation_and_moments_reproduce_the_known_mean_and_covariance():
    d, alpha, lam = 3, 0.3, 0.4
    ens = linear_gaussian_ensemble(
        n=20, n_layers=6, d_model=d, rank=d, rotation=0.0, growth=(-0.2, 0.1), seed=6
    )
    model = LangevinModel.from_tensors(ens.U, ens.S, alpha=alpha, lam=lam)
    q = ens.U[0].numpy()  # constant basis: A = Q diag(g) Q^T
    g = ens.growth.numpy()
    m0_y = np.array([1.0, -2.0, 0.5])
    c0_y = np.array([[1.0, 0.3, 0.0], [0.3, 0.5, 0.1], [0.0, 0.1, 0.8]])
    m0, c0 = torch.from_numpy(q @ m0_y), torch.from_numpy(q @ c0_y @ q.T)

    means, covs = model.moments(m0, c0, start=1, horizon=3, dt=0.1)
    for k in range(4):
        t0, t1 = float(model.times[1]), float(model.times[1 + k])
        m_y, c_y = _closed_form(g, m0_y, c0_y, alpha, lam, t0, t1)
        assert np.allclose(q.T @ means[k].numpy(), m_y, rtol=1e-7, atol=1e-9)
        assert np.allclose(q.T @ covs[k].numpy() @ q, c_y, rtol=1e-6, atol=1e-8)

    n = 40000
    gen = torch.Generator().manual_seed(0)
    chol = torch.linalg.cholesky(c0)
    x0 = m0 + torch.randn(n, d, generator=gen, dtype=torch.float64) @ chol.T
    sim = model.simulate(x0, start=1, horizon=3, dt=0.02, seed=1)
    m_y, c_y = _closed_form(g, m0_y, c0_y, alpha, lam, 2.0, 5.0)
    y = sim[:, 3].numpy() @ q
    se = np.sqrt(np.diag(c_y) / n)
    assert np.all(np.abs(y.mean(0) - m_y) < 5 * se + 0.01 * np.abs(m_y))
    assert np.allclose(np.cov(y.T), c_y, rtol=0.05, atol=0.03 * np.abs(c_y).max())


@pytest.mark.parametrize("reflected", [False, True])
def test_simulation_matches_moments_with_a_turning_basis(reflected):
    """Fokker-Planck moments (RK4) against Euler-Maruyama statistics of 30000 paths.

    Tolerances: the mean within five standard errors plus 0.5% (Euler's O(dt) bias at
    dt = 0.005), the covariance within 5% of its largest entry (sampling error of a covariance
    from 30000 paths is about 1% of it).
    """
    d = 4
    ens = linear_gaussian_ensemble(n=20, n_layers=5, d_model=d, rank=d, rotation=0.7, seed=7)
    U = ens.U.clone()
    if reflected:
        U[2:, :, 1] *= -1
    model = LangevinModel.from_tensors(U, ens.S, alpha=0.2, lam=0.3)
    assert model.reflected == ([1] if reflected else [])
    m0 = torch.tensor([1.0, 0.0, -1.0, 2.0], dtype=torch.float64)
    c0 = 0.2 * torch.eye(d, dtype=torch.float64)
    means, covs = model.moments(m0, c0, start=0, horizon=4, dt=0.05)
    # the mean follows the noise-free extrapolation from layer 0, whatever the noise
    for k in range(1, 5):
        ext = extrapolate(m0[None], U[0], ens.S[0], U[k], ens.S[k])[0]
        assert torch.allclose(means[k], ext, rtol=1e-6, atol=1e-6 * float(ext.norm()))
    gen = torch.Generator().manual_seed(3)
    x0 = m0 + c0.diag().sqrt() * torch.randn(30000, d, generator=gen, dtype=torch.float64)
    sim = model.simulate(x0, start=0, horizon=4, dt=0.005, seed=2)
    for k in (1, 2, 4):
        c = covs[k]
        se = 5 * float(c.diag().max()) ** 0.5 / 30000**0.5  # five standard errors
        assert torch.allclose(sim[:, k].mean(0), means[k], atol=se, rtol=0.005)
        assert torch.allclose(torch.cov(sim[:, k].T), c, atol=0.05 * float(c.abs().max()))


def test_truncated_bases_save_load_and_errors(tmp_path):
    ens = linear_gaussian_ensemble(n=50, n_layers=4, d_model=8, rank=3, seed=8)
    model = LangevinModel.from_tensors(ens.U, ens.S, alpha=0.05, lam=0.2)
    a = model.drift_matrix(2.5)
    assert a.shape == (8, 8)
    assert torch.linalg.matrix_rank(a) <= 3
    back = LangevinModel.load(model.save(tmp_path / "m.safetensors"))
    assert torch.equal(back.drift_matrix(2.5), a)
    x0 = ens.trajectories[:, 0]
    with pytest.raises(ValueError, match="horizon"):
        model.simulate(x0, start=1, horizon=3)
    with pytest.raises(ValueError, match="dt"):
        model.simulate(x0, start=0, horizon=1, dt=0.0)
    with pytest.raises(ValueError, match=r"x0 must be \[batch, d_model=8\]"):
        model.simulate(x0[:, :5], start=0, horizon=1)
    with pytest.raises(ValueError, match="alpha"):
        LangevinModel.from_tensors(ens.U, ens.S, alpha=0.05, lam=-0.1)
    a1 = model.simulate(x0, start=0, horizon=2, seed=3)
    a2 = model.simulate(x0, start=0, horizon=2, seed=3)
    assert torch.equal(a1, a2)
    assert not torch.equal(a1, model.simulate(x0, start=0, horizon=2, seed=4))
