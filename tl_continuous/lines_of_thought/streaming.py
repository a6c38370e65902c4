"""Out-of-core analysis of a shard folder: bases and residual statistics, memory flat in N.

The in-memory path holds the whole ``[n, layer, d_model]`` ensemble; here the shards of a
folder (:func:`~tl_continuous.lines_of_thought.collect.iter_shards`) are read one at a time
and only accumulators whose size does not depend on the number of trajectories are kept:

* :func:`streamed_bases`: the uncentred float64 Gram matrix of every layer,
  ``G(t) = M(t) M(t)^T = sum_i x_i(t) x_i(t)^T`` (``[layer, d_model, d_model]``). Its
  eigendecomposition ``G = U diag(S^2) U^T`` gives what the SVD of the pilot matrix
  ``M(t) = U S V^T`` gives (singular values ``sqrt(eig)``, left singular vectors, the top
  ``min(n, d_model)`` kept), realigned as in
  :meth:`~tl_continuous.lines_of_thought.bases.TrajectoryBases.from_ensemble`. Singular
  vectors are defined up to sign (the in-memory SVD's signs are LAPACK's), so compare the
  subspaces as projectors.
* :func:`streamed_residual_statistics`: a second pass over the shards extrapolates every
  ``(t, tau)`` pair shard by shard and merges float64 moments of the residuals (per
  coordinate: mean and central moments 2 to 4; per pair: the ``d_model x d_model``
  co-moment matrix) with the exact pairwise update of Chan et al. / Pébay, so the variance,
  mean, isotropy, cross-correlation, bias-corrected excess kurtosis and the D'Agostino-Pearson
  test (from the skewness and kurtosis, as ``scipy.stats.normaltest``) equal the in-memory
  :class:`~tl_continuous.lines_of_thought.dynamics.ResidualStatistics`. Memory: five
  ``[pair, d_model]`` vectors and one ``[pair, d_model, d_model]`` matrix; ``pairs_per_pass``
  bounds it further at the cost of one pass over the folder per group of pairs.

Both return the in-memory result types, so every figure and fit takes them unchanged.

>>> import tempfile
>>> from tl_continuous.lines_of_thought.collect import collect_shards
>>> from tl_continuous.tiny import tiny_model
>>> with tempfile.TemporaryDirectory() as d:
...     _ = collect_shards(tiny_model(), torch.randint(0, 50, (80, 5)), d, batch_size=16,
...                        progress=False)
...     bases = streamed_bases(d, progress=False)
...     stats = streamed_residual_statistics(d, bases, progress=False)
>>> bases.S.shape, stats.variance.shape
(torch.Size([2, 64]), torch.Size([1]))
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from scipy import stats as sps
from torch import Tensor

from tl_continuous._progress import progress as progress_iter
from tl_continuous.lines_of_thought.bases import (
    RankDeficientWarning,
    TrajectoryBases,
    realign_bases,
)
from tl_continuous.lines_of_thought.collect import iter_shards, read_manifest
from tl_continuous.lines_of_thought.dynamics import (
    ResidualStatistics,
    _pair_summary,
    extrapolation_gains,
    times_from_layer_names,
    valid_pairs,
)

__all__ = [
    "gram_matrices",
    "streamed_bases",
    "streamed_residual_statistics",
]

_F64 = torch.float64


def _shards(shard_dir: str | os.PathLike[str], progress: bool, desc: str) -> Any:
    manifest = read_manifest(shard_dir)
    n_batches = int(manifest["n_batches"])
    return progress_iter(iter_shards(shard_dir), enabled=progress, total=n_batches, desc=desc)


def gram_matrices(
    shard_dir: str | os.PathLike[str], *, progress: bool = True
) -> tuple[Float[Tensor, "layer d_model d_model"], int]:
    """Uncentred float64 Gram matrix of every layer, ``sum_i x_i(t) x_i(t)^T``, and ``n``.

    Shards are read one at a time; memory is ``layer * d_model^2`` floats whatever ``n``.

    Raises:
        NotADirectoryError: ``shard_dir`` is an existing file.
        FileNotFoundError: no ``manifest.json`` in the folder.
        IncompleteShardsError: some batches are missing (listed in the message).
        CorruptShardError: a shard is unreadable or fails its checksum.
    """
    gram: Tensor | None = None
    n = 0
    for shard in _shards(shard_dir, progress, "Gram matrices"):
        xt = shard["trajectories"].to(_F64).transpose(0, 1)  # [layer, batch, d]
        part = xt.mT @ xt
        gram = part if gram is None else gram + part
        n += int(xt.shape[1])
    assert gram is not None  # a complete folder has at least one shard
    return gram, n


def streamed_bases(
    shard_dir: str | os.PathLike[str],
    *,
    realign: bool = True,
    rank: int | None = None,
    dtype: torch.dtype = torch.float64,
    progress: bool = True,
) -> TrajectoryBases:
    """Per-layer bases of a shard folder from its accumulated Gram matrices.

    The out-of-core :meth:`TrajectoryBases.from_ensemble` (same arguments, same result
    type): ``S`` are the square roots of the Gram matrix's eigenvalues, ``U`` its
    eigenvectors, computed in float64 (``dtype`` is the precision of the result).

    Args:
        shard_dir: a complete shard folder.
        realign: apply :func:`~tl_continuous.lines_of_thought.bases.realign_bases`.
        rank: keep the top ``rank`` directions per layer (default ``min(n, d_model)``).
        dtype: ``torch.float64`` (default) or ``torch.float32``.
        progress: show a progress bar over the shards.

    Raises:
        ValueError: fewer than two trajectories, or ``rank``/``dtype`` out of range.
        FileNotFoundError, IncompleteShardsError, CorruptShardError: as
            :func:`~tl_continuous.lines_of_thought.collect.load_shards`, for the folder.
    """
    if dtype not in (torch.float64, torch.float32):
        raise ValueError(f"dtype must be torch.float64 or torch.float32 (got {dtype})")
    manifest = read_manifest(shard_dir)
    n = int(manifest["n_sequences"])
    if n < 2:
        raise ValueError(
            f"shard_dir must hold at least 2 trajectories to span bases (got {n}); "
            "collect more sequences"
        )
    gram, n_seen = gram_matrices(shard_dir, progress=progress)
    d = int(gram.shape[-1])
    full = min(n_seen, d)
    keep = full if rank is None else int(rank)
    if not 1 <= keep <= full:
        raise ValueError(f"rank must be in [1, min(n_traj, d_model) = {full}] (got {rank})")
    if n_seen < d:
        warnings.warn(
            f"rank-deficient ensemble: {n_seen} trajectories < d_model={d}, so each layer has "
            f"at most {n_seen} singular directions (K is limited to {n_seen}); collect more "
            "for a full basis",
            RankDeficientWarning,
            stacklevel=2,
        )
    eig, vec = torch.linalg.eigh(gram)  # ascending
    S = eig.flip(-1)[..., :keep].clamp_min(0.0).sqrt()
    U = vec.flip(-1)[..., :keep]
    order = signs = None
    if realign:
        U, S, order, signs = realign_bases(U.contiguous(), S.contiguous())
    return TrajectoryBases(
        U=U.to(dtype).contiguous(),
        S=S.to(dtype).contiguous(),
        layer_names=list(manifest["layer_names"]),
        realigned=realign,
        order=order,
        signs=None if signs is None else signs.to(dtype),
        n_trajectories=n_seen,
        metadata={"model_name": manifest["metadata"].get("model_name")},
    )


# ------------------------------------------------------------------ moments
@dataclass
class _Moments:
    """Running float64 moments of ``[pair, d]`` samples: count, mean, central sums of powers
    2..4 per coordinate and the co-moment matrix per pair (merged exactly, batch by batch)."""

    n: int
    mean: Tensor  # [pair, d]
    m2: Tensor
    m3: Tensor
    m4: Tensor
    co: Tensor  # [pair, d, d]

    @classmethod
    def of(cls, dx: Tensor) -> _Moments:
        """The moments of one batch ``dx [pair, batch, d]``."""
        b = int(dx.shape[1])
        mean = dx.mean(dim=1)
        c = dx - mean[:, None]
        c2 = c * c
        return cls(b, mean, c2.sum(1), (c2 * c).sum(1), (c2 * c2).sum(1), c.mT @ c)

    def merge(self, other: _Moments) -> _Moments:
        """Both batches' moments (Pébay 2008, eq. 2.1 and 3.1; Chan et al. for ``co``)."""
        na, nb = float(self.n), float(other.n)
        n = na + nb
        delta = other.mean - self.mean
        d2 = delta * delta
        m2 = self.m2 + other.m2 + d2 * na * nb / n
        m3 = (
            self.m3
            + other.m3
            + d2 * delta * na * nb * (na - nb) / n**2
            + 3.0 * delta * (na * other.m2 - nb * self.m2) / n
        )
        m4 = (
            self.m4
            + other.m4
            + d2 * d2 * na * nb * (na * na - na * nb + nb * nb) / n**3
            + 6.0 * d2 * (na * na * other.m2 + nb * nb * self.m2) / n**2
            + 4.0 * delta * (na * other.m3 - nb * self.m3) / n
        )
        co = self.co + other.co + delta[:, :, None] * delta[:, None, :] * (na * nb / n)
        mean = self.mean + delta * (nb / n)
        return _Moments(int(n), mean, m2, m3, m4, co)


def _normaltest_pvalues(b1: np.ndarray, b2: np.ndarray, n: int) -> np.ndarray:
    """D'Agostino-Pearson p-values from the biased skewness ``b1 = m3 / m2^1.5`` and kurtosis
    ``b2 = m4 / m2^2`` of samples of size ``n`` (``scipy.stats.normaltest``'s formulas)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        y = b1 * math.sqrt(((n + 1) * (n + 3)) / (6.0 * (n - 2)))
        beta2 = (
            3.0
            * (n**2 + 27 * n - 70)
            * (n + 1)
            * (n + 3)
            / ((n - 2.0) * (n + 5) * (n + 7) * (n + 9))
        )
        w2 = -1 + math.sqrt(2 * (beta2 - 1))
        delta = 1 / math.sqrt(0.5 * math.log(w2))
        alpha = math.sqrt(2.0 / (w2 - 1))
        y = np.where(y == 0, 1.0, y)
        z_skew = delta * np.log(y / alpha + np.sqrt((y / alpha) ** 2 + 1))

        e = 3.0 * (n - 1) / (n + 1)
        varb2 = 24.0 * n * (n - 2) * (n - 3) / ((n + 1) * (n + 1.0) * (n + 3) * (n + 5))
        x = (b2 - e) / varb2**0.5
        sqrtbeta1 = (
            6.0 * (n * n - 5 * n + 2) / ((n + 7) * (n + 9))
            * ((6.0 * (n + 3) * (n + 5)) / (n * (n - 2) * (n - 3))) ** 0.5
        )  # fmt: skip
        a = 6.0 + 8.0 / sqrtbeta1 * (2.0 / sqrtbeta1 + (1 + 4.0 / (sqrtbeta1**2)) ** 0.5)
        term1 = 1 - 2 / (9.0 * a)
        denom = 1 + x * (2 / (a - 4.0)) ** 0.5
        term2 = np.sign(denom) * np.where(
            denom == 0.0, np.nan, ((1 - 2.0 / a) / np.abs(denom)) ** (1 / 3)
        )
        z_kurt = (term1 - term2) / (2 / (9.0 * a)) ** 0.5
    return sps.chi2.sf(z_skew * z_skew + z_kurt * z_kurt, 2)


def _summaries(m: _Moments, p: int, level: float) -> dict[str, Any]:
    """Pair ``p``'s summaries, as :func:`~tl_continuous.lines_of_thought.dynamics._summaries`
    computes them from the residual matrix itself."""
    n = m.n
    mu, m2 = m.mean[p], m.m2[p]
    var = m2 / (n - 1)
    live = var > 1e-14 * var.max().clamp_min(1e-300)
    cov = m.co[p] / (n - 1)
    tr_c2 = (cov**2).sum()
    cz = cov[live][:, live] / (var[live].sqrt()[:, None] * var[live].sqrt()[None, :])
    corr2 = (cz**2).sum()
    d_live = int(live.sum())
    c2 = m2[live] / n  # biased central moments of the live coordinates
    c3, c4 = m.m3[p][live] / n, m.m4[p][live] / n
    if n >= 4:
        g2 = c4 / c2**2 - 3.0
        kurt = ((n + 1) * g2 + 6.0) * (n - 1) / ((n - 2) * (n - 3))
    else:
        kurt = torch.full((d_live,), math.nan, dtype=_F64)
    pvals = None
    if n >= 20 and d_live > 0:
        pvals = _normaltest_pvalues((c3 / c2**1.5).numpy(), (c4 / c2**2).numpy(), n)
    return _pair_summary(mu, var, tr_c2, corr2, d_live, kurt, pvals, level)


def streamed_residual_statistics(
    shard_dir: str | os.PathLike[str],
    bases: TrajectoryBases,
    *,
    times: Float[Tensor, " layer"] | None = None,
    n_blocks: int | None = None,
    max_tau: int | None = None,
    layers: tuple[int, int] | None = None,
    level: float = 0.05,
    pairs_per_pass: int | None = None,
    progress: bool = True,
) -> ResidualStatistics:
    """Extrapolation-residual statistics of a shard folder from streamed float64 moments.

    The out-of-core :meth:`ResidualStatistics.from_lines` (same arguments, same result): the
    layer times default to :func:`~tl_continuous.lines_of_thought.dynamics.times_from_layer_names`
    of the folder's layer names, with ``n_blocks`` from its recorded model config.

    Args:
        shard_dir: a complete shard folder.
        bases: its bases (:func:`streamed_bases`, or in-memory ones of the same ensemble).
        times: layer times (default from the layer names).
        n_blocks: the model's block count (default: the manifest's ``model_config``).
        max_tau: largest ``tau`` (default all).
        layers: ``(start, stop)`` layer indices both ends must lie in (default all).
        level: significance level of the Gaussianity test.
        pairs_per_pass: pairs accumulated per pass over the folder (default all in one pass);
            memory holds ``pairs_per_pass * d_model^2`` float64 for the co-moment matrices.
        progress: show a progress bar over the shards.

    Raises:
        ValueError: fewer than 3 trajectories, bases of other layers or width, bad options.
        FileNotFoundError, IncompleteShardsError, CorruptShardError: as
            :func:`~tl_continuous.lines_of_thought.collect.load_shards`, for the folder.
    """
    manifest = read_manifest(shard_dir)
    names = list(manifest["layer_names"])
    n = int(manifest["n_sequences"])
    if list(bases.layer_names) != names:
        raise ValueError(
            "bases were not built from this shard folder's layers (layer_names differ)"
        )
    if n < 3:
        raise ValueError(f"shard_dir must hold at least 3 trajectories (got {n})")
    if pairs_per_pass is not None and pairs_per_pass < 1:
        raise ValueError(
            f"pairs_per_pass must be a positive integer or None (got {pairs_per_pass})"
        )
    n_layers, d = len(names), bases.d_model
    if times is None:
        if n_blocks is None:
            n_blocks = (manifest["metadata"].get("model_config") or {}).get("n_layers")
        times = times_from_layer_names(names, None if n_blocks is None else int(n_blocks))
    times = times.to(_F64)
    if times.shape != (n_layers,):
        raise ValueError(f"times must have shape ({n_layers},) (got {tuple(times.shape)})")
    pairs = valid_pairs(n_layers, max_tau=max_tau, layers=layers)
    Uf, Sf = bases.U.detach().to(_F64), bases.S.detach().to(_F64)
    step = len(pairs) if pairs_per_pass is None else pairs_per_pass
    rows: dict[str, list[Any]] = {k: [] for k in (*ResidualStatistics._PER_PAIR, "coord_variance")}
    with torch.no_grad():
        for first in range(0, len(pairs), max(step, 1)):
            group = pairs[first : first + step]
            src = torch.tensor([t for t, _ in group])
            dst = torch.tensor([t + tau for t, tau in group])
            gains = torch.stack([extrapolation_gains(Sf[t], Sf[t + tau]) for t, tau in group])
            moments: _Moments | None = None
            desc = f"residual moments (pairs {first + 1}-{first + len(group)} of {len(pairs)})"
            for shard in _shards(shard_dir, progress, desc):
                x = shard["trajectories"].to(_F64)
                if x.shape[2] != d:
                    raise ValueError(
                        f"bases were not built from this shard folder (bases d_model={d}, "
                        f"trajectories d_model={x.shape[2]})"
                    )
                coords = torch.einsum("nld,ldr->lnr", x, Uf)  # [layer, batch, rank]
                pred = (coords[src] * gains[:, None, :]) @ Uf[dst].mT  # [pair, batch, d]
                batch = _Moments.of(x.transpose(0, 1)[dst] - pred)
                moments = batch if moments is None else moments.merge(batch)
            assert moments is not None
            for p in range(len(group)):
                for k, v in _summaries(moments, p, level).items():
                    rows[k].append(v)
    return ResidualStatistics._from_rows(pairs, rows, times, n, d, level)
