"""Per-layer trajectory bases: uncentred SVD of the pilots, realigned from layer to layer.

For each layer ``t`` the ``d_model x n_trajectories`` matrix of pilots ``M(t) = [x_1(t) ...]``
is decomposed without centring, ``M(t) = U(t) S(t) V(t)^T`` (``V`` is not kept). The SVD is
computed in float64 (or float32 on request) whatever the dtype of the model or ensemble.

Singular vectors come out of each SVD in their own order and with arbitrary signs. Realignment
(:func:`realign_bases`) makes index ``i`` mean "the same direction" across layers: going up
from layer 1, each ``u_i(t)`` is matched to the ``u_j(t-1)`` with the largest
``|<u_j(t-1), u_i(t)>|``, greedily, largest overlap first; the columns of ``U(t)`` and the
entries of ``S(t)`` are permuted accordingly and each ``u(t)`` is flipped so that its inner
product with its match is positive. Layer 0 (the first layer of the ensemble) keeps its SVD
order and signs. Extrapolation between layers (``U(t+tau) S(t+tau) S(t)^-1 U(t)^T x(t)``)
relies on this.

>>> from tl_continuous.lines_of_thought.ensemble import LinesOfThought
>>> lot = LinesOfThought(torch.randn(40, 3, 8), [f"blocks.{i}.hook_resid_post" for i in range(3)])
>>> bases = TrajectoryBases.from_ensemble(lot)
>>> bases.U.shape, bases.S.shape, bases.U.dtype
(torch.Size([3, 8, 8]), torch.Size([3, 8]), torch.float64)
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_continuous._io import load_tensors, reading, save_tensors

if TYPE_CHECKING:
    from tl_continuous.lines_of_thought.ensemble import LinesOfThought

__all__ = [
    "FORMAT",
    "VERSION",
    "RankDeficientWarning",
    "TrajectoryBases",
    "greedy_match",
    "realign_bases",
    "svd_bases",
]

FORMAT = "tl_continuous.lines_of_thought.bases"
VERSION = 1


class RankDeficientWarning(UserWarning):
    """An ensemble has fewer trajectories than ``d_model``: its bases cannot span the space."""


def svd_bases(
    trajectories: Float[Tensor, "n_traj n_layers d_model"],
    *,
    rank: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[Float[Tensor, "n_layers d_model rank"], Float[Tensor, "n_layers rank"]]:
    """Uncentred thin SVD of each layer's pilot matrix (no realignment).

    Args:
        trajectories: the ensemble.
        rank: keep the top ``rank`` directions (default ``min(d_model, n_traj)``).
        dtype: ``torch.float64`` (default) or ``torch.float32``.

    Returns:
        ``U`` with orthonormal columns, ``S`` in decreasing order, per layer.
    """
    if dtype not in (torch.float64, torch.float32):
        raise ValueError(f"dtype must be torch.float64 or torch.float32 (got {dtype})")
    n, _, d = trajectories.shape
    full = min(n, d)
    rank = full if rank is None else int(rank)
    if not 1 <= rank <= full:
        raise ValueError(f"rank must be in [1, min(n_traj, d_model) = {full}] (got {rank})")
    if n < d:
        warnings.warn(
            f"rank-deficient ensemble: {n} trajectories < d_model={d}, so each layer has at "
            f"most {n} singular directions (K is limited to {n}); collect more for a full basis",
            RankDeficientWarning,
            stacklevel=2,
        )
    m = trajectories.detach().to("cpu", dtype).permute(1, 2, 0)  # [layer, d_model, n_traj]
    u, s, _ = torch.linalg.svd(m, full_matrices=False)
    return u[..., :rank].contiguous(), s[..., :rank].contiguous()


def greedy_match(overlap: Float[Tensor, "prev cur"]) -> Int[Tensor, " cur"]:
    """Greedy matching by largest ``|overlap|`` first.

    Returns ``order`` such that current vector ``order[j]`` is matched to previous vector
    ``j`` (a permutation of ``range(n)`` for a square matrix).

    >>> greedy_match(torch.tensor([[0.1, 0.9], [0.8, 0.2]])).tolist()
    [1, 0]
    """
    a = np.abs(overlap.detach().cpu().numpy())
    n_prev, n_cur = a.shape
    flat = np.argsort(-a, axis=None, kind="stable")
    rows, cols = np.unravel_index(flat, a.shape)
    order = np.full(n_prev, -1, dtype=np.int64)
    used = np.zeros(n_cur, dtype=bool)
    left = min(n_prev, n_cur)
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        if order[r] < 0 and not used[c]:
            order[r] = c
            used[c] = True
            left -= 1
            if left == 0:
                break
    return torch.from_numpy(order)


def realign_bases(
    U: Float[Tensor, "n_layers d_model rank"], S: Float[Tensor, "n_layers rank"]
) -> tuple[
    Float[Tensor, "n_layers d_model rank"],
    Float[Tensor, "n_layers rank"],
    Int[Tensor, "n_layers rank"],
    Float[Tensor, "n_layers rank"],
]:
    """Realign singular vectors layer to layer (greedy matching, then sign flips).

    Returns:
        ``(U, S, order, signs)``: realigned bases; ``order[t, i]`` is the index, in layer
        ``t``'s own SVD order, of the vector now at position ``i``; ``signs[t, i]`` is the
        flip applied to it (``U_new[t][:, i] = signs[t, i] * U_old[t][:, order[t, i]]``).

    >>> q = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64)).Q
    >>> U = torch.stack([q, -q[:, [2, 0, 1, 3]]])
    >>> S = torch.tensor([[4.0, 3, 2, 1], [5, 6, 7, 8]], dtype=torch.float64)
    >>> U2, S2, order, signs = realign_bases(U, S)
    >>> order[1].tolist(), S2[1].tolist(), bool(torch.allclose(U2[1], q))
    ([1, 2, 0, 3], [6.0, 7.0, 5.0, 8.0], True)
    """
    if U.ndim != 3 or S.ndim != 2 or U.shape[0] != S.shape[0] or U.shape[2] != S.shape[1]:
        raise ValueError(
            f"U must be [layer, d_model, rank] and S [layer, rank] (got {tuple(U.shape)}, "
            f"{tuple(S.shape)})"
        )
    n_layers, _, rank = U.shape
    U_out, S_out = U.clone(), S.clone()
    order = torch.arange(rank).repeat(n_layers, 1)
    signs = torch.ones(n_layers, rank, dtype=U.dtype)
    for t in range(1, n_layers):
        overlap = U_out[t - 1].T @ U[t]  # [prev, cur]
        perm = greedy_match(overlap)
        matched = U[t][:, perm]
        sign = torch.sign((U_out[t - 1] * matched).sum(dim=0))
        sign[sign == 0] = 1.0
        U_out[t] = matched * sign
        S_out[t] = S[t][perm]
        order[t] = perm
        signs[t] = sign
    return U_out, S_out, order, signs


@dataclass
class TrajectoryBases:
    """Per-layer bases of an ensemble.

    Attributes:
        U: ``[n_layers, d_model, rank]`` orthonormal columns (``U[t][:, i]`` is ``u_i(t)``).
        S: ``[n_layers, rank]`` singular values (decreasing per layer unless realigned).
        layer_names: hook name of each layer (as in the ensemble).
        realigned: whether :func:`realign_bases` was applied.
        order: ``[n_layers, rank]`` SVD index of the vector at each position (identity when
            not realigned).
        signs: ``[n_layers, rank]`` sign flips applied by realignment.
        n_trajectories: how many pilots the SVD saw.
    """

    U: Float[Tensor, "n_layers d_model rank"]
    S: Float[Tensor, "n_layers rank"]
    layer_names: list[str]
    realigned: bool = False
    order: Int[Tensor, "n_layers rank"] | None = None
    signs: Float[Tensor, "n_layers rank"] | None = None
    n_trajectories: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.U.ndim != 3 or self.S.ndim != 2:
            raise ValueError("U must be [n_layers, d_model, rank] and S [n_layers, rank]")
        if self.U.shape[0] != self.S.shape[0] or self.U.shape[2] != self.S.shape[1]:
            raise ValueError(
                f"U {tuple(self.U.shape)} and S {tuple(self.S.shape)} disagree on layers/rank"
            )
        if len(self.layer_names) != self.U.shape[0]:
            raise ValueError("layer_names must name every layer of U")
        if self.order is None:
            self.order = torch.arange(self.rank).repeat(self.n_layers, 1)
        if self.signs is None:
            self.signs = torch.ones(self.n_layers, self.rank, dtype=self.U.dtype)

    @property
    def n_layers(self) -> int:
        return int(self.U.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.U.shape[1])

    @property
    def rank(self) -> int:
        return int(self.U.shape[2])

    @classmethod
    def from_ensemble(
        cls,
        lot: LinesOfThought,
        *,
        realign: bool = True,
        rank: int | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> TrajectoryBases:
        """Bases of every layer of an ensemble.

        Args:
            lot: the ensemble (``ln_final.hook_normalized``, if present, is a layer here too).
            realign: apply :func:`realign_bases`.
            rank: keep the top ``rank`` directions per layer (default all).
            dtype: SVD precision, ``torch.float64`` (default) or ``torch.float32``.

        Raises:
            ValueError: ``lot`` holds fewer than two trajectories, or ``rank``/``dtype``
                are out of range.
        """
        if lot.n_trajectories < 2:
            raise ValueError(
                f"lot must hold at least 2 trajectories to span bases (got {lot.n_trajectories}):"
                " one pilot spans a single direction per layer, leaving no basis to truncate "
                "or realign; collect more sequences"
            )
        U, S = svd_bases(lot.trajectories, rank=rank, dtype=dtype)
        order = signs = None
        if realign:
            U, S, order, signs = realign_bases(U, S)
        return cls(
            U=U,
            S=S,
            layer_names=list(lot.layer_names),
            realigned=realign,
            order=order,
            signs=signs,
            n_trajectories=lot.n_trajectories,
            metadata={"model_name": lot.metadata.get("model_name")},
        )

    # ------------------------------------------------------------- readouts
    def spectra(self, normalize: bool = False) -> Float[Tensor, "n_layers rank"]:
        """Singular values per layer, sorted decreasing (``normalize``: divided by the largest)."""
        s = self.S.sort(dim=1, descending=True).values
        return s / s[:, :1] if normalize else s

    def explained_fraction(self, k: int) -> Float[Tensor, " n_layers"]:
        """Fraction of each layer's squared norm captured by its top-``k`` directions."""
        s2 = self.spectra() ** 2
        return s2[:, :k].sum(dim=1) / s2.sum(dim=1)

    def top(self, layer: int, k: int) -> Float[Tensor, "d_model k"]:
        """The ``k`` directions of ``layer`` with the largest singular values."""
        if not 1 <= k <= self.rank:
            raise ValueError(f"k must be in [1, rank={self.rank}] (got {k})")
        if not -self.n_layers <= layer < self.n_layers:
            raise ValueError(f"layer must be in [0, n_layers={self.n_layers}) (got {layer})")
        idx = self.S[layer].argsort(descending=True)[:k]
        return self.U[layer][:, idx]

    def project(
        self, x: Float[Tensor, "*batch d_model"], layer: int, k: int
    ) -> Float[Tensor, "*batch d_model"]:
        """``U_K U_K^T x`` with layer ``layer``'s top-``k`` directions, in ``x``'s dtype.

        The product is computed in the bases' dtype.
        """
        u = self.top(layer, k).to(x.device)
        xs = x.to(u.dtype)
        return ((xs @ u) @ u.T).to(x.dtype)

    def rotation_angles(self, k: int | None = None) -> Float[Tensor, "n_layers_minus_1 k"]:
        """Angle (radians) between ``u_i(t-1)`` and ``u_i(t)`` for the first ``k`` indices.

        Meaningful after realignment (index ``i`` then follows one direction). Row ``t - 1``
        compares layers ``t - 1`` and ``t``.
        """
        k = self.rank if k is None else k
        cos = (self.U[:-1, :, :k] * self.U[1:, :, :k]).sum(dim=1).abs().clamp(max=1.0)
        return torch.arccos(cos)

    def subspace_angles(self, k: int) -> Float[Tensor, "n_layers_minus_1 k"]:
        """Principal angles (radians, increasing) between consecutive top-``k`` subspaces."""
        tops = torch.stack([self.top(t, k) for t in range(self.n_layers)])
        cos = torch.linalg.svdvals(tops[:-1].transpose(1, 2) @ tops[1:]).clamp(max=1.0)
        return torch.arccos(cos)

    # ------------------------------------------------------------- save/load
    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tensors kept); inverse of :meth:`from_dict`."""
        return {
            "U": self.U,
            "S": self.S,
            "layer_names": list(self.layer_names),
            "realigned": self.realigned,
            "order": self.order,
            "signs": self.signs,
            "n_trajectories": self.n_trajectories,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrajectoryBases:
        return cls(**data)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """One safetensors file with a JSON header; returns the path."""
        assert self.order is not None and self.signs is not None
        tensors = {"U": self.U, "S": self.S, "order": self.order, "signs": self.signs}
        fields = {
            "layer_names": self.layer_names,
            "realigned": self.realigned,
            "n_trajectories": self.n_trajectories,
            "metadata": self.metadata,
        }
        return save_tensors(path, FORMAT, VERSION, tensors, fields)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrajectoryBases:
        """Read a file written by :meth:`save`."""
        h, t = load_tensors(path, FORMAT, VERSION, "TrajectoryBases")
        with reading(path, "TrajectoryBases"):
            return cls(
                U=t["U"],
                S=t["S"],
                layer_names=h["layer_names"],
                realigned=h["realigned"],
                order=t["order"],
                signs=t["signs"],
                n_trajectories=int(h["n_trajectories"]),
                metadata=h["metadata"],
            )
