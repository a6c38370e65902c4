"""Synthetic lines of thought drawn from a known linear-Gaussian model.

The generator exists so that the dynamics code can be checked against known answers (tests)
and shown without a model (demos). Trajectory ``n`` at layer index ``t`` is

    x_n(t) = U(t) S(t) v_n + eps_n(t)

* ``Q(t)`` is a ``d_model x d_model`` orthogonal frame that turns by a fixed rotation between
  consecutive layers, ``Q(t+1) = Q(t) expm(K_t)`` with ``K_t`` skew-symmetric; the signal
  basis is its first ``rank`` columns, ``U(t) = Q(t)[:, :rank]``.
* ``S(t) = diag(s_i exp(g_i t))``: singular values that grow or shrink exponentially, so that
  ``log S`` is linear in ``t``.
* ``v_n`` are the rows of an ``n x rank`` matrix with orthonormal columns (fixed across layers),
  so ``U(t) S(t) V^T`` is exactly the SVD of the signal part and linear extrapolation with the
  true bases reproduces it exactly.
* ``eps_n(t)`` is Gaussian noise confined to the complement ``Q(t)[:, rank:]`` and independent
  across layers, scaled so that the variance per coordinate (averaged over all ``d_model``
  coordinates) is ``alpha * exp(lam * time(t))``. Extrapolating with the true bases leaves
  exactly ``eps(t + tau)`` as the residual, so the variance law holds by construction.

With ``rank == d_model`` there is no room for noise: the ensemble is noise-free and follows
the continuous-time model of :mod:`tl_continuous.lines_of_thought.langevin` exactly (rotation
along the geodesic between layers, exponential singular values).

>>> ens = linear_gaussian_ensemble(n=200, n_layers=5, d_model=8, rank=3, seed=0)
>>> tuple(ens.trajectories.shape), tuple(ens.U.shape), tuple(ens.S.shape)
((200, 5, 8), (5, 8, 3), (5, 3))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["SyntheticEnsemble", "linear_gaussian_ensemble"]


@dataclass
class SyntheticEnsemble:
    """Trajectories from :func:`linear_gaussian_ensemble` and the truth they were drawn from.

    Attributes:
        trajectories: ``[n, layer, d_model]`` float64.
        U: true signal bases ``[layer, d_model, rank]`` (orthonormal columns).
        S: true singular values of the signal ``[layer, rank]``.
        generators: skew-symmetric ``K_t`` with ``Q(t+1) = Q(t) expm(K_t)``,
            ``[layer - 1, d_model, d_model]``.
        growth: exponential rates ``g_i`` of the singular values, ``[rank]``.
        times: time of each layer in the variance law, ``[layer]``.
        alpha: variance-law prefactor of the noise.
        lam: variance-law rate of the noise.
    """

    trajectories: Float[Tensor, "n layer d_model"]
    U: Float[Tensor, "layer d_model rank"]
    S: Float[Tensor, "layer rank"]
    generators: Float[Tensor, "segment d_model d_model"]
    growth: Float[Tensor, " rank"]
    times: Float[Tensor, " layer"]
    alpha: float
    lam: float


def _random_skew(d: int, scale: float, gen: torch.Generator) -> Tensor:
    a = torch.randn(d, d, generator=gen, dtype=torch.float64) * scale / d**0.5
    return (a - a.T) / 2**0.5


def linear_gaussian_ensemble(
    n: int = 1000,
    n_layers: int = 12,
    d_model: int = 16,
    rank: int = 8,
    *,
    alpha: float = 0.05,
    lam: float = 0.2,
    rotation: float = 0.3,
    growth: tuple[float, float] = (-0.05, 0.15),
    signal_scale: float = 3.0,
    times: Float[Tensor, " layer"] | None = None,
    seed: int = 0,
) -> SyntheticEnsemble:
    """Draw trajectories from the linear-Gaussian model described in the module docstring.

    Args:
        n: number of trajectories (at least ``rank``).
        n_layers: number of layers.
        d_model: dimension of the residual stream.
        rank: dimension of the signal; the noise lives in the other ``d_model - rank``
            dimensions. ``rank == d_model`` gives noise-free trajectories.
        alpha: prefactor of the per-coordinate noise variance ``alpha * exp(lam * time)``.
        lam: rate of the noise variance.
        rotation: typical rotation angle (radians) of the frame between layers.
        growth: range of the exponential rates of the singular values (spread linearly).
        signal_scale: typical size of a signal coordinate of one trajectory.
        times: time of each layer (default ``1..n_layers``, the block numbers).
        seed: random seed.

    Returns:
        A :class:`SyntheticEnsemble`.

    Raises:
        ValueError: if the sizes are inconsistent.
    """
    if not 1 <= rank <= d_model:
        raise ValueError(f"rank must be in 1..d_model={d_model} (got {rank})")
    if n < rank:
        raise ValueError(f"n must be at least rank={rank} (got {n})")
    if n_layers < 2:
        raise ValueError(f"n_layers must be at least 2 (got {n_layers})")
    if alpha < 0:
        raise ValueError(f"alpha must be non-negative (got {alpha})")
    if times is None:
        times = torch.arange(1, n_layers + 1, dtype=torch.float64)
    times = times.to(torch.float64)
    if times.shape != (n_layers,):
        raise ValueError(f"times must have shape ({n_layers},) (got {tuple(times.shape)})")
    gen = torch.Generator().manual_seed(seed)

    q0, _ = torch.linalg.qr(torch.randn(d_model, d_model, generator=gen, dtype=torch.float64))
    generators = torch.stack([_random_skew(d_model, rotation, gen) for _ in range(n_layers - 1)])
    frames = [q0]
    for k in generators:
        frames.append(frames[-1] @ torch.linalg.matrix_exp(k))
    q = torch.stack(frames)  # [layer, d, d]

    rates = torch.linspace(growth[1], growth[0], rank, dtype=torch.float64)
    # distinct, decreasing singular values so that the SVD order is the index order
    base = signal_scale * n**0.5 * torch.linspace(2.0, 1.0, rank, dtype=torch.float64)
    steps = torch.arange(n_layers, dtype=torch.float64)
    S = base * torch.exp(rates[None, :] * steps[:, None])
    if rank > 1 and not bool((S[:, :-1] > S[:, 1:]).all()):
        raise ValueError("growth is too spread: singular values would cross; narrow it")

    v, _ = torch.linalg.qr(torch.randn(n, rank, generator=gen, dtype=torch.float64))
    U = q[:, :, :rank]
    signal = torch.einsum("ldr,lr,nr->nld", U, S, v)

    noise = torch.zeros_like(signal)
    if rank < d_model and alpha > 0:
        var = alpha * torch.exp(lam * times) * d_model / (d_model - rank)
        w = torch.randn(n, n_layers, d_model - rank, generator=gen, dtype=torch.float64)
        noise = torch.einsum("ldk,nlk->nld", q[:, :, rank:], w * var.sqrt()[None, :, None])
    return SyntheticEnsemble(
        trajectories=signal + noise,
        U=U,
        S=S,
        generators=generators,
        growth=rates,
        times=times,
        alpha=float(alpha),
        lam=float(lam),
    )
