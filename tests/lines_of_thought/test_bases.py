"""Trajectory bases: SVD against numpy, planted permutations and signs, angles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tl_continuous.lines_of_thought.bases import TrajectoryBases, greedy_match, realign_bases
from tl_continuous.lines_of_thought.ensemble import LinesOfThought


def _names(n: int) -> list[str]:
    return [f"blocks.{i}.hook_resid_post" for i in range(n)]


def _small_rotation(d: int, eps: float, gen: torch.Generator) -> torch.Tensor:
    a = torch.randn(d, d, generator=gen, dtype=torch.float64) * eps
    return torch.linalg.matrix_exp(a - a.T)


def test_svd_matches_numpy_uncentred() -> None:
    x = torch.randn(30, 2, 6) + 3.0  # an offset: centring would change the answer
    bases = TrajectoryBases.from_ensemble(LinesOfThought(x, _names(2)), realign=False)
    for t in range(2):
        s_np = np.linalg.svd(x[:, t].double().numpy().T, compute_uv=False)
        np.testing.assert_allclose(bases.S[t].numpy(), s_np, rtol=1e-10)
        recon = (
            bases.U[t]
            @ torch.diag(bases.S[t])
            @ torch.linalg.pinv(bases.U[t] @ torch.diag(bases.S[t]))
            @ x[:, t].double().T
        )
        torch.testing.assert_close(recon, x[:, t].double().T)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_realignment_recovers_planted_permutation_and_signs(seed) -> None:
    gen = torch.Generator().manual_seed(seed)
    d, n_layers = 12, 5
    q0 = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64)).Q
    truth = [q0]
    for _ in range(1, n_layers):  # the "true" aligned bases drift slowly
        truth.append(_small_rotation(d, 0.02, gen) @ truth[-1])
    s_true = torch.linspace(10, 1, d, dtype=torch.float64).repeat(n_layers, 1)
    perms = [torch.arange(d)] + [torch.randperm(d, generator=gen) for _ in range(1, n_layers)]
    flips = [torch.ones(d, dtype=torch.float64)] + [
        torch.randint(0, 2, (d,), generator=gen).double() * 2 - 1 for _ in range(1, n_layers)
    ]
    # scrambled[t][:, perm[i]] = flip[i] * truth[t][:, i]
    U = torch.stack([torch.empty(d, d, dtype=torch.float64) for _ in range(n_layers)])
    S = torch.empty(n_layers, d, dtype=torch.float64)
    for t in range(n_layers):
        U[t][:, perms[t]] = truth[t] * flips[t]
        S[t][perms[t]] = s_true[t]
    U2, S2, order, signs = realign_bases(U, S)
    for t in range(n_layers):
        torch.testing.assert_close(U2[t], truth[t])
        torch.testing.assert_close(S2[t], s_true[t])
        assert order[t].tolist() == perms[t].tolist()
        assert signs[t].tolist() == flips[t].tolist()


def test_greedy_takes_the_largest_overlap_first() -> None:
    # Optimal assignment would be (0->1, 1->0) with total 1.5; greedy takes 0.9 first.
    overlap = torch.tensor([[0.9, 0.8], [0.7, -0.1]])
    assert greedy_match(overlap).tolist() == [0, 1]
    assert greedy_match(torch.tensor([[0.1, -0.95], [0.9, 0.2]])).tolist() == [1, 0]


def test_from_ensemble_realigned_bases_are_orthonormal_and_signs_positive() -> None:
    base = torch.randn(60, 1, 8) * torch.linspace(5, 1, 8)
    x = torch.cat([base, base + 0.05 * torch.randn(60, 1, 8)], dim=1)
    bases = TrajectoryBases.from_ensemble(LinesOfThought(x.float(), _names(2)))
    eye = torch.eye(8, dtype=torch.float64)
    for t in range(2):
        torch.testing.assert_close(bases.U[t].T @ bases.U[t], eye)
    assert ((bases.U[0] * bases.U[1]).sum(0) > 0).all()
    angles = bases.rotation_angles(3)
    assert angles.shape == (1, 3) and float(angles.max()) < 0.2
    sub = bases.subspace_angles(8)
    assert float(sub.max()) < 1e-6  # full space vs full space
    assert math.isclose(float(bases.explained_fraction(8)[0]), 1.0)


def test_project_and_round_trip(tmp_path) -> None:
    x = torch.randn(20, 2, 5)
    bases = TrajectoryBases.from_ensemble(LinesOfThought(x, _names(2)), dtype=torch.float32)
    assert bases.U.dtype == torch.float32
    torch.testing.assert_close(bases.project(x[:, 1], 1, 5), x[:, 1], atol=1e-5, rtol=0)
    back = TrajectoryBases.load(bases.save(tmp_path / "b.safetensors"))
    assert torch.equal(back.U, bases.U) and back.layer_names == bases.layer_names
    with pytest.raises(ValueError, match="k must be"):
        bases.top(0, 6)
    with pytest.raises(ValueError, match="dtype"):
        TrajectoryBases.from_ensemble(LinesOfThought(x, _names(2)), dtype=torch.float16)
