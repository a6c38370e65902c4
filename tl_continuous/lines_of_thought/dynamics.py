"""Linear extrapolation between layers, statistics of its residuals, and the variance law.

Between layer indices ``t`` and ``t + tau`` a line of thought is extrapolated with the per-layer
bases (uncentred SVD of the pilots, realigned across layers):

    x~(t, tau) = U(t + tau) L(t, tau) U(t)^T x(t),    L(t, tau) = S(t + tau) S(t)^-1

and the residual is ``dx = x(t + tau) - x~(t, tau)``. :class:`ResidualStatistics` summarises
``dx`` over the ensemble for every valid ``(t, tau)``; :class:`VarianceLawFit` fits

    var(dx) ~ alpha * exp(lam * (t + tau))

by least squares on the **natural** logarithm of the variance per coordinate.

Conventions: ``t`` and ``tau`` are layer *indices* into the ensemble (0-based); ``times[t]``
is the time of layer ``t`` in the variance law, by default ``t + 1`` (the block number, as the
paper counts layers). ``alpha`` depends on that origin, ``lam`` does not.

The maths takes plain tensors: trajectories ``[n, layer, d_model]``, bases ``U [layer, d_model,
rank]`` and ``S [layer, rank]``; it runs in float64.

>>> from tl_continuous.lines_of_thought.synthetic import linear_gaussian_ensemble
>>> ens = linear_gaussian_ensemble(n=400, n_layers=6, d_model=12, rank=4, seed=0)
>>> stats = ResidualStatistics.from_tensors(ens.trajectories, ens.U, ens.S, progress=False)
>>> fit = VarianceLawFit.from_statistics(stats)
>>> round(fit.lam, 1), fit.r2 > 0.95
(0.2, True)
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from scipy import stats as sps
from torch import Tensor

from tl_continuous._io import load_json, load_tensors, reading, save_json, save_tensors
from tl_continuous._progress import progress as progress_iter
from tl_continuous.lines_of_thought.hooks import BLOCK_HOOK_NAME, FINAL_NORM_HOOK

__all__ = [
    "FIT_FORMAT",
    "STATISTICS_FORMAT",
    "VERSION",
    "ResidualStatistics",
    "VarianceLawFit",
    "default_times",
    "excess_kurtosis",
    "extrapolate",
    "extrapolation_gains",
    "residuals",
    "times_from_layer_names",
    "valid_pairs",
]

STATISTICS_FORMAT = "tl_continuous.lines_of_thought.residual_statistics"
FIT_FORMAT = "tl_continuous.lines_of_thought.variance_law_fit"
VERSION = 1
KURTOSIS_CONVENTION = "bias-corrected"
"""Header value of a :class:`ResidualStatistics` file whose kurtosis is bias-corrected; files
without it (written before) hold the biased one and are converted exactly when read."""

_F64 = torch.float64


def default_times(n_layers: int) -> Float[Tensor, " layer"]:
    """Times of the layers in the variance law: the block numbers ``1..n_layers``.

    >>> default_times(3)
    tensor([1., 2., 3.], dtype=torch.float64)
    """
    return torch.arange(1, n_layers + 1, dtype=_F64)


_OFFSET = {"resid_pre": 0.0, "resid_mid": 0.5, "resid_post": 1.0}


def times_from_layer_names(
    layer_names: list[str], n_blocks: int | None = None
) -> Float[Tensor, " layer"]:
    """Layer times from hook names: block ``i``'s ``resid_post`` is ``i + 1`` (the paper's ``t``),
    ``resid_mid`` ``i + 0.5``, ``resid_pre`` ``i``; the final norm comes one after the last
    block (``n_blocks + 1``, or one after the previous name if ``n_blocks`` is not given).

    Raises:
        ValueError: for a name that is not one of these.

    >>> times_from_layer_names(["blocks.0.hook_resid_post", "blocks.4.hook_resid_post"])
    tensor([1., 5.], dtype=torch.float64)
    """
    out: list[float] = []
    for name in layer_names:
        match = BLOCK_HOOK_NAME.fullmatch(name)
        if match:
            out.append(int(match.group(1)) + _OFFSET[match.group(2)])
        elif name == FINAL_NORM_HOOK and (n_blocks is not None or out):
            out.append(float(n_blocks) + 1.0 if n_blocks is not None else out[-1] + 1.0)
        else:
            raise ValueError(
                "layer_names must be blocks.{i}.hook_resid_{pre,mid,post} or "
                f"{FINAL_NORM_HOOK} after a block (got {name!r}); pass times explicitly"
            )
    return torch.tensor(out, dtype=_F64)


def _check_bases(trajectories: Tensor, U: Tensor, S: Tensor) -> tuple[int, int, int, int]:
    if trajectories.ndim != 3:
        raise ValueError(
            f"trajectories must be [n, layer, d_model] (got shape {tuple(trajectories.shape)})"
        )
    n, n_layers, d = trajectories.shape
    if U.ndim != 3 or U.shape[0] != n_layers or U.shape[1] != d:
        raise ValueError(
            f"U must be [layer={n_layers}, d_model={d}, rank] (got shape {tuple(U.shape)})"
        )
    if S.shape != (n_layers, U.shape[2]):
        raise ValueError(
            f"S must be [layer={n_layers}, rank={U.shape[2]}] (got shape {tuple(S.shape)})"
        )
    return n, n_layers, d, U.shape[2]


def extrapolation_gains(
    S_from: Float[Tensor, " rank"], S_to: Float[Tensor, " rank"], *, rtol: float = 1e-10
) -> Float[Tensor, " rank"]:
    """Diagonal of ``L = S_to S_from^-1``, with zero gain where ``S_from`` is numerically zero.

    >>> extrapolation_gains(torch.tensor([2.0, 0.0]), torch.tensor([4.0, 1.0]))
    tensor([2., 0.], dtype=torch.float64)
    """
    s_from = S_from.to(_F64)
    keep = s_from > rtol * s_from.abs().max().clamp_min(torch.finfo(_F64).tiny)
    return torch.where(keep, S_to.to(_F64) / torch.where(keep, s_from, 1.0), 0.0)


def extrapolate(
    x: Float[Tensor, "n d_model"],
    U_from: Float[Tensor, "d_model rank"],
    S_from: Float[Tensor, " rank"],
    U_to: Float[Tensor, "d_model rank"],
    S_to: Float[Tensor, " rank"],
) -> Float[Tensor, "n d_model"]:
    """Linear extrapolation ``U_to diag(S_to / S_from) U_from^T x`` in float64.

    >>> U = torch.eye(2, dtype=torch.float64)
    >>> extrapolate(torch.tensor([[1.0, 1.0]]), U, torch.tensor([1.0, 2.0]), U,
    ...             torch.tensor([3.0, 2.0]))
    tensor([[3., 1.]], dtype=torch.float64)
    """
    gains = extrapolation_gains(S_from, S_to)
    coords = x.to(_F64) @ U_from.to(_F64)
    return (coords * gains) @ U_to.to(_F64).T


def residuals(
    trajectories: Float[Tensor, "n layer d_model"],
    U: Float[Tensor, "layer d_model rank"],
    S: Float[Tensor, "layer rank"],
    t: int,
    tau: int,
) -> Float[Tensor, "n d_model"]:
    """Residual ``x(t + tau) - x~(t, tau)`` of every trajectory (float64).

    Args:
        trajectories: ensemble ``[n, layer, d_model]``.
        U: realigned left singular vectors per layer.
        S: singular values per layer.
        t: source layer index.
        tau: number of layers ahead (>= 1).

    >>> from tl_continuous.lines_of_thought.synthetic import linear_gaussian_ensemble
    >>> ens = linear_gaussian_ensemble(n=50, n_layers=4, d_model=6, rank=6, seed=0)
    >>> float(residuals(ens.trajectories, ens.U, ens.S, 0, 3).abs().max()) < 1e-9
    True
    """
    _, n_layers, _, _ = _check_bases(trajectories, U, S)
    if not (t >= 0 and tau >= 1 and t + tau < n_layers):
        raise ValueError(
            f"need 0 <= t and tau >= 1 and t + tau < {n_layers} (got t={t}, tau={tau})"
        )
    pred = extrapolate(trajectories[:, t], U[t], S[t], U[t + tau], S[t + tau])
    return trajectories[:, t + tau].to(_F64) - pred


def valid_pairs(
    n_layers: int, *, max_tau: int | None = None, layers: tuple[int, int] | None = None
) -> list[tuple[int, int]]:
    """All ``(t, tau)`` with ``tau >= 1`` and both ends inside ``range(*layers)``.

    >>> valid_pairs(3)
    [(0, 1), (0, 2), (1, 1)]
    """
    lo, hi = layers if layers is not None else (0, n_layers)
    if not 0 <= lo < hi <= n_layers:
        raise ValueError(f"layers must be (start, stop) inside 0..{n_layers} (got {layers})")
    top = hi - lo - 1 if max_tau is None else max_tau
    return [(t, tau) for t in range(lo, hi) for tau in range(1, top + 1) if t + tau < hi]


def excess_kurtosis(x: Float[Tensor, "n d"]) -> Float[Tensor, " d"]:
    """Bias-corrected excess kurtosis of each column of ``x`` (over dimension 0).

    The paper's convention (MATLAB ``kurtosis(x, 0) - 3``, ``scipy.stats.kurtosis(x,
    bias=False)``): from the biased ``g2 = m4 / m2^2 - 3`` (central moments with ``1/n``),
    ``G2 = ((n + 1) g2 + 6) (n - 1) / ((n - 2) (n - 3))``, unbiased for a normal sample.

    Raises:
        ValueError: with fewer than 4 samples (the correction is undefined).

    >>> x = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]], dtype=torch.float64)
    >>> from scipy import stats
    >>> abs(float(excess_kurtosis(x)[0]) - float(stats.kurtosis(x[:, 0], bias=False))) < 1e-12
    True
    """
    n = x.shape[0]
    if n < 4:
        raise ValueError(f"x must hold at least 4 samples for the bias correction (got {n})")
    c = x.to(_F64) - x.to(_F64).mean(0)
    m2 = (c**2).mean(0)
    g2 = (c**4).mean(0) / m2**2 - 3.0
    return ((n + 1) * g2 + 6.0) * (n - 1) / ((n - 2) * (n - 3))


def _summaries(dx: Tensor, level: float) -> dict[str, Any]:
    """Per-pair summaries of a residual matrix ``dx [n, d]`` (float64)."""
    n, d = dx.shape
    mu = dx.mean(0)
    c = dx - mu
    var = (c * c).sum(0) / (n - 1)
    live = var > 1e-14 * var.max().clamp_min(1e-300)
    # tr(C^2) and sum of squared correlations, via whichever Gram matrix is smaller
    cz = c[:, live] / var[live].sqrt()
    if n < d:
        tr_c2 = ((c @ c.T) ** 2).sum() / (n - 1) ** 2
        corr2 = ((cz @ cz.T) ** 2).sum() / (n - 1) ** 2
    else:
        tr_c2 = ((c.T @ c) ** 2).sum() / (n - 1) ** 2
        corr2 = ((cz.T @ cz) ** 2).sum() / (n - 1) ** 2
    d_live = int(live.sum())
    kurt = excess_kurtosis(c[:, live]) if n >= 4 else torch.full((d_live,), math.nan)
    pvals = sps.normaltest(cz.numpy(), axis=0).pvalue if n >= 20 and d_live > 0 else None
    return _pair_summary(mu, var, tr_c2, corr2, d_live, kurt, pvals, level)


def _pair_summary(
    mu: Tensor,
    var: Tensor,
    tr_c2: Tensor,
    corr2: Tensor,
    d_live: int,
    kurt: Tensor,
    pvals: np.ndarray | None,
    level: float,
) -> dict[str, Any]:
    """One pair's summary fields from its moments (shared by the in-memory and streamed paths).

    ``var`` is the per-coordinate variance, ``tr_c2`` the trace of the squared covariance,
    ``corr2`` the sum of squared correlations over the ``d_live`` coordinates that vary,
    ``kurt`` their excess kurtosis and ``pvals`` their normality p-values (None: too few).
    """
    d = int(var.shape[0])
    total = var.sum()
    off = max(d_live * (d_live - 1), 1)
    cross = math.sqrt(max(float(corr2) - d_live, 0.0) / off)
    if pvals is None:
        reject, p_median = math.nan, math.nan
    else:
        reject, p_median = float(np.mean(pvals < level)), float(np.median(pvals))
    return {
        "mean_norm": float(mu.norm() / total.sqrt().clamp_min(1e-300)),
        "variance": float(total / d),
        "coord_variance": var,
        "isotropy": float(total**2 / tr_c2.clamp_min(1e-300) / d),
        "cross_correlation": cross,
        "kurtosis": float(kurt.mean()) if d_live else math.nan,
        "normal_reject": reject,
        "normal_pvalue": p_median,
    }


@dataclass
class ResidualStatistics:
    """Statistics of the extrapolation residuals, one entry per ``(t, tau)`` pair.

    Attributes:
        t: source layer index of each pair.
        tau: layers ahead of each pair.
        times: time of every layer in the variance law.
        n_samples: number of trajectories.
        mean_norm: ``|mean(dx)| / sqrt(tr Cov(dx))``: 0 for a centred residual.
        variance: variance per coordinate, ``tr Cov(dx) / d_model``; the variance law's ``var``.
        coord_variance: variance of every coordinate, ``[pair, d_model]``.
        isotropy: participation ratio of the covariance's eigenvalues over ``d_model``,
            ``(tr C)^2 / tr(C^2) / d``: 1 when all eigenvalues are equal. With finite samples an
            isotropic Gaussian gives about :attr:`isotropy_null`.
        cross_correlation: root mean square of the off-diagonal correlation coefficients;
            independent coordinates give about :attr:`cross_correlation_null`.
        kurtosis: excess kurtosis of each coordinate, averaged over coordinates (0: Gaussian).
            Bias-corrected, the paper's convention (MATLAB ``kurtosis(x, 0) - 3``,
            ``scipy.stats.kurtosis(x, bias=False)``; :func:`excess_kurtosis`); NaN with fewer
            than 4 trajectories.
        normal_reject: fraction of coordinates whose D'Agostino-Pearson test
            (``scipy.stats.normaltest``) rejects normality at ``level`` (about ``level`` if
            Gaussian).
        normal_pvalue: median p-value of those tests.
        level: significance level of the Gaussianity test.
    """

    t: Int[Tensor, " pair"]
    tau: Int[Tensor, " pair"]
    times: Float[Tensor, " layer"]
    n_samples: int
    mean_norm: Float[Tensor, " pair"]
    variance: Float[Tensor, " pair"]
    coord_variance: Float[Tensor, "pair d_model"]
    isotropy: Float[Tensor, " pair"]
    cross_correlation: Float[Tensor, " pair"]
    kurtosis: Float[Tensor, " pair"]
    normal_reject: Float[Tensor, " pair"]
    normal_pvalue: Float[Tensor, " pair"]
    level: float = 0.05

    _PER_PAIR = (
        "mean_norm",
        "variance",
        "isotropy",
        "cross_correlation",
        "kurtosis",
        "normal_reject",
        "normal_pvalue",
    )

    def __post_init__(self) -> None:
        p = self.t.shape[0]
        for name in ("tau", *self._PER_PAIR):
            if getattr(self, name).shape != (p,):
                raise ValueError(f"{name} must have shape ({p},)")
        if self.coord_variance.shape[0] != p:
            raise ValueError(f"coord_variance must have {p} rows")
        if p and int((self.t + self.tau).max()) >= self.times.shape[0]:
            raise ValueError("a pair reaches beyond the last layer of times")

    @property
    def n_layers(self) -> int:
        """Number of layers of the ensemble."""
        return int(self.times.shape[0])

    @property
    def d_model(self) -> int:
        """Dimension of the residual stream."""
        return int(self.coord_variance.shape[1])

    @property
    def isotropy_null(self) -> float:
        """Expected :attr:`isotropy` of an isotropic Gaussian sample, ``(n - 1) / (n + d)``."""
        return (self.n_samples - 1) / (self.n_samples + self.d_model)

    @property
    def cross_correlation_null(self) -> float:
        """Expected :attr:`cross_correlation` of independent coordinates, ``1 / sqrt(n - 1)``."""
        return 1.0 / math.sqrt(self.n_samples - 1)

    @classmethod
    def from_tensors(
        cls,
        trajectories: Float[Tensor, "n layer d_model"],
        U: Float[Tensor, "layer d_model rank"],
        S: Float[Tensor, "layer rank"],
        *,
        times: Float[Tensor, " layer"] | None = None,
        max_tau: int | None = None,
        layers: tuple[int, int] | None = None,
        level: float = 0.05,
        progress: bool = True,
    ) -> ResidualStatistics:
        """Residual statistics for every valid ``(t, tau)``.

        Args:
            trajectories: ensemble ``[n, layer, d_model]``.
            U: realigned bases ``[layer, d_model, rank]``.
            S: singular values ``[layer, rank]``.
            times: layer times for the variance law (default ``1..layer``).
            max_tau: largest ``tau`` (default: all).
            layers: ``(start, stop)`` layer indices both ends must lie in (default: all).
            level: significance level of the Gaussianity test.
            progress: show a progress bar.

        Raises:
            ValueError: on inconsistent shapes or fewer than 3 trajectories.
        """
        n, n_layers, d, _ = _check_bases(trajectories, U, S)
        if n < 3:
            raise ValueError(f"trajectories must hold at least 3 trajectories (got {n})")
        times = default_times(n_layers) if times is None else times.to(_F64)
        if times.shape != (n_layers,):
            raise ValueError(f"times must have shape ({n_layers},) (got {tuple(times.shape)})")
        pairs = valid_pairs(n_layers, max_tau=max_tau, layers=layers)
        x = trajectories.detach().to(_F64)
        Uf, Sf = U.detach().to(_F64), S.detach().to(_F64)
        coords = torch.einsum("nld,ldr->nlr", x, Uf)
        rows: dict[str, list[Any]] = {k: [] for k in (*cls._PER_PAIR, "coord_variance")}
        with torch.no_grad():
            for t, tau in progress_iter(pairs, enabled=progress, desc="residual statistics"):
                pred = (coords[:, t] * extrapolation_gains(Sf[t], Sf[t + tau])) @ Uf[t + tau].T
                summary = _summaries(x[:, t + tau] - pred, level)
                for k, v in summary.items():
                    rows[k].append(v)
        return cls._from_rows(pairs, rows, times, n, d, level)

    @classmethod
    def _from_rows(
        cls,
        pairs: list[tuple[int, int]],
        rows: dict[str, list[Any]],
        times: Tensor,
        n: int,
        d: int,
        level: float,
    ) -> ResidualStatistics:
        """The result from one summary row per pair (in-memory and streamed paths)."""
        per_pair = {k: torch.tensor(rows[k], dtype=_F64) for k in cls._PER_PAIR}
        return cls(
            t=torch.tensor([p[0] for p in pairs], dtype=torch.long),
            tau=torch.tensor([p[1] for p in pairs], dtype=torch.long),
            times=times,
            n_samples=n,
            coord_variance=torch.stack(rows["coord_variance"])
            if pairs
            else torch.zeros(0, d, dtype=_F64),
            level=level,
            **per_pair,
        )

    @classmethod
    def from_lines(
        cls, lines: Any, bases: Any, *, n_blocks: int | None = None, **kwargs: Any
    ) -> ResidualStatistics:
        """Adapter for a ``LinesOfThought`` ensemble and its ``TrajectoryBases``.

        Reads ``lines.trajectories``, ``bases.U`` and ``bases.S``; the layer times default to
        :func:`times_from_layer_names` of ``lines.layer_names`` (block ``i`` -> ``i + 1``).

        Args:
            lines: the ensemble.
            bases: its bases (``bases.U``, ``bases.S``).
            n_blocks: the model's block count, which places a final-norm layer at
                ``n_blocks + 1``; default: ``lines.metadata["model_config"]["n_layers"]`` (what
                :func:`~tl_continuous.lines_of_thought.collect.collect_shards` records), else
                one after the layer before it.
            **kwargs: passed to :meth:`from_tensors` (``times`` overrides the layer names).

        >>> from tl_continuous.lines_of_thought import LinesOfThought, TrajectoryBases
        >>> from tl_continuous.lines_of_thought.synthetic import linear_gaussian_ensemble
        >>> ens = linear_gaussian_ensemble(n=30, n_layers=3, d_model=4, rank=4, seed=0)
        >>> names = [f"blocks.{i}.hook_resid_post" for i in (0, 2, 4)]
        >>> lot = LinesOfThought(trajectories=ens.trajectories.float(), layer_names=names)
        >>> bases = TrajectoryBases.from_ensemble(lot)
        >>> ResidualStatistics.from_lines(lot, bases, progress=False).times
        tensor([1., 3., 5.], dtype=torch.float64)
        """
        if "times" not in kwargs:
            if n_blocks is None:
                config = getattr(lines, "metadata", {}).get("model_config") or {}
                n_blocks = config.get("n_layers")
            names = list(lines.layer_names)
            kwargs["times"] = times_from_layer_names(
                names, None if n_blocks is None else int(n_blocks)
            )
        return cls.from_tensors(lines.trajectories, bases.U, bases.S, **kwargs)

    def table(self, name: str = "variance") -> Float[Tensor, "layer layer"]:
        """A per-pair statistic on the ``(t, t + tau)`` grid, NaN where there is no pair.

        >>> from tl_continuous.lines_of_thought.synthetic import linear_gaussian_ensemble
        >>> ens = linear_gaussian_ensemble(n=100, n_layers=3, d_model=6, rank=2)
        >>> s = ResidualStatistics.from_tensors(ens.trajectories, ens.U, ens.S, progress=False)
        >>> s.table().isnan().tolist()
        [[True, False, False], [True, True, False], [True, True, True]]
        """
        if name not in self._PER_PAIR:
            raise ValueError(f"name must be one of {self._PER_PAIR} (got {name!r})")
        out = torch.full((self.n_layers, self.n_layers), math.nan, dtype=_F64)
        out[self.t, self.t + self.tau] = getattr(self, name).to(_F64)
        return out

    def select(self, mask: Tensor) -> ResidualStatistics:
        """The statistics of the pairs where ``mask`` is true."""
        kw = {k: getattr(self, k)[mask] for k in ("t", "tau", "coord_variance", *self._PER_PAIR)}
        return ResidualStatistics(
            times=self.times, n_samples=self.n_samples, level=self.level, **kw
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain Python (lists and numbers), JSON-serialisable."""
        out: dict[str, Any] = {"n_samples": self.n_samples, "level": self.level}
        for k in ("t", "tau", "times", "coord_variance", *self._PER_PAIR):
            out[k] = getattr(self, k).tolist()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResidualStatistics:
        """Inverse of :meth:`to_dict`."""
        kw: dict[str, Any] = {
            k: torch.tensor(data[k], dtype=_F64)
            for k in ("times", "coord_variance", *cls._PER_PAIR)
        }
        if len(data["t"]) == 0:
            kw["coord_variance"] = kw["coord_variance"].reshape(0, 0)
        return cls(
            t=torch.tensor(data["t"], dtype=torch.long),
            tau=torch.tensor(data["tau"], dtype=torch.long),
            n_samples=int(data["n_samples"]),
            level=float(data["level"]),
            **kw,
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write one safetensors file (every tensor field) whose header carries ``n_samples``,
        ``level`` and the kurtosis convention (``"kurtosis": "bias-corrected"``); returns the
        path. The write is atomic.
        """
        names = ("t", "tau", "times", "coord_variance", *self._PER_PAIR)
        tensors = {k: getattr(self, k) for k in names}
        fields = {
            "n_samples": self.n_samples,
            "level": self.level,
            "kurtosis": KURTOSIS_CONVENTION,
        }
        return save_tensors(path, STATISTICS_FORMAT, VERSION, tensors, fields)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ResidualStatistics:
        """Read a file written by :meth:`save`.

        A file without the ``kurtosis`` header field was written with the biased excess
        kurtosis ``g2``; it is converted exactly to the bias-corrected one,
        ``G2 = ((n + 1) g2 + 6) (n - 1) / ((n - 2) (n - 3))`` (affine in ``g2`` at fixed ``n``,
        so it commutes with the mean over coordinates).

        Raises:
            FileNotFoundError: no file at ``path``.
            FormatError: the file is damaged or holds another result type or version.
        """
        fields, tensors = load_tensors(path, STATISTICS_FORMAT, VERSION, "ResidualStatistics")
        names = ("t", "tau", "times", "coord_variance", *cls._PER_PAIR)
        with reading(path, "ResidualStatistics"):
            n = int(fields["n_samples"])
            kw = {k: tensors[k] for k in names}
            convention = fields.get("kurtosis", "biased")
            if convention == "biased":
                g2 = kw["kurtosis"].to(_F64)
                kw["kurtosis"] = ((n + 1) * g2 + 6.0) * (n - 1) / ((n - 2) * (n - 3))
            elif convention != KURTOSIS_CONVENTION:
                raise ValueError(f"unknown kurtosis convention {convention!r}")
            return cls(n_samples=n, level=float(fields["level"]), **kw)


def _eta_squared(y: np.ndarray, groups: np.ndarray) -> float:
    """Fraction of the variation of ``y`` explained by its group means (one-way ANOVA)."""
    total = float(((y - y.mean()) ** 2).sum())
    if total == 0.0:
        return 1.0
    within = 0.0
    for g in np.unique(groups):
        yg = y[groups == g]
        within += float(((yg - yg.mean()) ** 2).sum())
    return 1.0 - within / total


@dataclass
class VarianceLawFit:
    """Least-squares fit of ``ln var = ln alpha + lam * (t + tau)`` (natural logarithm).

    ``t + tau`` is the time of the target layer (``times[t + tau]``). Confidence intervals are
    the ordinary least-squares ones (Student t); the ``(t, tau)`` points share trajectories and
    are not independent, so read them as a lower bound on the uncertainty.

    Attributes:
        log_alpha: natural log of ``alpha``.
        lam: growth rate per layer.
        r2: coefficient of determination of the fit on ``ln var``.
        log_alpha_ci: confidence interval of ``log_alpha``.
        lam_ci: confidence interval of ``lam``.
        confidence: level of the intervals.
        n_points: number of ``(t, tau)`` pairs in the fit.
        layers: ``(start, stop)`` layer indices of the pairs used.
        residual_std: standard deviation of the fit's residuals on ``ln var``.
        eta2_sum: fraction of the variation of ``ln var`` explained by ``t + tau`` alone
            (between-group share, grouping pairs by their target layer); 1 means the variance
            depends on ``t + tau`` only.
        eta2_t: the same, grouping by ``t`` alone.
        eta2_tau: the same, grouping by ``tau`` alone.
    """

    log_alpha: float
    lam: float
    r2: float
    log_alpha_ci: tuple[float, float]
    lam_ci: tuple[float, float]
    confidence: float
    n_points: int
    layers: tuple[int, int]
    residual_std: float
    eta2_sum: float
    eta2_t: float
    eta2_tau: float
    log_base: str = field(default="e")

    @property
    def alpha(self) -> float:
        """The prefactor ``alpha = exp(log_alpha)``."""
        return math.exp(self.log_alpha)

    @property
    def alpha_ci(self) -> tuple[float, float]:
        """Confidence interval of ``alpha``."""
        return (math.exp(self.log_alpha_ci[0]), math.exp(self.log_alpha_ci[1]))

    def predict(self, time: Float[Tensor, "*shape"] | float) -> Float[Tensor, "*shape"]:
        """Variance per coordinate the law predicts at target time ``t + tau``."""
        return self.alpha * torch.exp(self.lam * torch.as_tensor(time, dtype=_F64))

    @classmethod
    def fit(
        cls,
        target_time: Float[Tensor, " point"],
        variance: Float[Tensor, " point"],
        *,
        t: Int[Tensor, " point"] | None = None,
        tau: Int[Tensor, " point"] | None = None,
        confidence: float = 0.95,
        layers: tuple[int, int] = (0, 0),
    ) -> VarianceLawFit:
        """Fit the law to variances at given target times (the tensor-level core).

        Args:
            target_time: ``times[t + tau]`` of each point.
            variance: variance per coordinate of each point (positive).
            t: source index of each point, for :attr:`eta2_t` (NaN if omitted).
            tau: ``tau`` of each point, for :attr:`eta2_tau` (NaN if omitted).
            confidence: level of the confidence intervals.
            layers: recorded as :attr:`layers`.

        Raises:
            ValueError: with fewer than 3 points, non-positive variances, or a single time.

        >>> s = torch.tensor([1.0, 2.0, 3.0, 4.0])
        >>> f = VarianceLawFit.fit(s, 0.5 * torch.exp(0.3 * s))
        >>> round(f.alpha, 6), round(f.lam, 6), round(f.r2, 6)
        (0.5, 0.3, 1.0)
        """
        x = target_time.to(_F64).numpy()
        v = variance.to(_F64).numpy()
        if x.shape != v.shape or x.ndim != 1:
            raise ValueError("target_time and variance must be 1-D and of equal length")
        if len(x) < 3:
            raise ValueError(f"the fit needs at least 3 points (got {len(x)})")
        if not np.all(v > 0) or not np.all(np.isfinite(v)):
            raise ValueError("variance must be positive and finite to take its logarithm")
        if np.ptp(x) == 0:
            raise ValueError("target_time must take at least two values")
        y = np.log(v)
        n = len(x)
        xm, ym = x.mean(), y.mean()
        sxx = float(((x - xm) ** 2).sum())
        lam = float(((x - xm) * (y - ym)).sum() / sxx)
        intercept = float(ym - lam * xm)
        res = y - (intercept + lam * x)
        ss_res, ss_tot = float((res**2).sum()), float(((y - ym) ** 2).sum())
        r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
        s2 = ss_res / (n - 2)
        se_lam = math.sqrt(s2 / sxx)
        se_int = math.sqrt(s2 * (1.0 / n + xm**2 / sxx))
        q = float(sps.t.ppf(0.5 + confidence / 2, n - 2))

        def eta(groups: Tensor | None) -> float:
            return math.nan if groups is None else _eta_squared(y, groups.numpy())

        return cls(
            log_alpha=intercept,
            lam=lam,
            r2=r2,
            log_alpha_ci=(intercept - q * se_int, intercept + q * se_int),
            lam_ci=(lam - q * se_lam, lam + q * se_lam),
            confidence=confidence,
            n_points=n,
            layers=layers,
            residual_std=math.sqrt(ss_res / n),
            eta2_sum=_eta_squared(y, x),
            eta2_t=eta(t),
            eta2_tau=eta(tau),
        )

    @classmethod
    def from_statistics(
        cls,
        stats: ResidualStatistics,
        *,
        layers: tuple[int, int] | None = None,
        max_tau: int | None = None,
        confidence: float = 0.95,
    ) -> VarianceLawFit:
        """Fit over the pairs whose both ends lie in ``range(*layers)``.

        Args:
            stats: residual statistics.
            layers: ``(start, stop)`` layer indices (default: all layers).
            max_tau: only pairs with ``tau <= max_tau``.
            confidence: level of the confidence intervals.
        """
        lo, hi = layers if layers is not None else (0, stats.n_layers)
        if not 0 <= lo < hi <= stats.n_layers:
            raise ValueError(
                f"layers must be (start, stop) inside 0..{stats.n_layers} (got {layers})"
            )
        mask = (stats.t >= lo) & (stats.t + stats.tau < hi)
        if max_tau is not None:
            mask &= stats.tau <= max_tau
        return cls.fit(
            stats.times[stats.t[mask] + stats.tau[mask]],
            stats.variance[mask],
            t=stats.t[mask],
            tau=stats.tau[mask],
            confidence=confidence,
            layers=(lo, hi),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain Python, JSON-serialisable (tuples become lists)."""
        out = asdict(self)
        for k in ("log_alpha_ci", "lam_ci", "layers"):
            out[k] = list(out[k])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VarianceLawFit:
        """Inverse of :meth:`to_dict`."""
        kw = dict(data)
        for k in ("log_alpha_ci", "lam_ci", "layers"):
            kw[k] = tuple(kw[k])
        return cls(**kw)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as tagged JSON, atomically; returns the path."""
        return save_json(path, FIT_FORMAT, VERSION, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> VarianceLawFit:
        """Read a file written by :meth:`save`.

        Raises:
            FileNotFoundError: no file at ``path``.
            FormatError: the file is damaged or holds another result type or version.
        """
        data = load_json(path, FIT_FORMAT, VERSION, "VarianceLawFit")
        with reading(path, "VarianceLawFit"):
            return cls.from_dict(data)
