"""Controls and per-layer diagnostics for the dynamics of lines of thought.

Controls (the paper's): the same model without training (same config, random weights), the
model with its second half of blocks re-initialised, and gibberish input (uniformly random
tokens; see :func:`tl_continuous.lines_of_thought.corpus.gibberish`). The models built here are
new objects: the user's model is never modified and its hooks are not copied.

:class:`DynamicsSummary` condenses an ensemble's dynamics into the numbers the controls are
compared on; :func:`layer_separability` measures how well a linear classifier separates two
ensembles at every layer (gibberish vs language); :class:`LayerDiagnostics` scores how far each
layer departs from the model (residual non-Gaussianity, variance off the fitted law) and flags
the outliers.

>>> from tl_continuous.tiny import tiny_model
>>> model = tiny_model("rotary", n_layers=4)
>>> halves = reinitialised_model(model, seed=1)
>>> bool(torch.equal(halves.blocks[0].attn.W_Q, model.blocks[0].attn.W_Q))
True
>>> bool(torch.equal(halves.blocks[3].attn.W_Q, model.blocks[3].attn.W_Q))
False
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from tl_continuous._io import load_json, reading, save_json
from tl_continuous._progress import progress as progress_iter
from tl_continuous.backends.base import Model
from tl_continuous.lines_of_thought.compare import classifier_accuracy
from tl_continuous.lines_of_thought.dynamics import ResidualStatistics, VarianceLawFit

__all__ = [
    "DIAGNOSTICS_FORMAT",
    "SUMMARY_FORMAT",
    "VERSION",
    "DynamicsSummary",
    "LayerDiagnostics",
    "layer_separability",
    "reinitialised_model",
    "untrained_model",
]

SUMMARY_FORMAT = "tl_continuous.lines_of_thought.dynamics_summary"
DIAGNOSTICS_FORMAT = "tl_continuous.lines_of_thought.layer_diagnostics"
VERSION = 1


def untrained_model(model: Model, *, seed: int = 0) -> Model:
    """A new model with ``model``'s config and tokenizer and freshly initialised weights.

    TransformerLens's own initialisation (``cfg.init_mode``) is used, under a forked torch RNG
    seeded with ``seed`` (the global RNG state is left as it was).

    Args:
        model: the trained model (left untouched).
        seed: initialisation seed.

    >>> from tl_continuous.tiny import tiny_model
    >>> m = tiny_model("learned")
    >>> r = untrained_model(m, seed=1)
    >>> r.cfg.n_layers == m.cfg.n_layers, bool(torch.equal(r.W_E, m.W_E))
    (True, False)
    """
    from tl_continuous.backends import backend_name

    if backend_name(model) != "hooked":
        raise TypeError(
            "model must be a HookedTransformer (re-initialising a TransformerBridge is not "
            f"implemented; got {type(model).__name__})"
        )
    from transformer_lens import HookedTransformer

    cfg = copy.deepcopy(model.cfg)
    cfg.seed = None  # TransformerLens would reseed every global RNG
    # loaded models carry init_weights=False (their weights come from a checkpoint): without
    # this the new parameters would be whatever torch.empty left in memory
    cfg.init_weights = True
    devices = [torch.device("cpu")] if cfg.device is None else [torch.device(cfg.device)]
    with torch.random.fork_rng(devices=[d for d in devices if d.type == "cuda"]):
        torch.manual_seed(seed)
        fresh = HookedTransformer(cfg, tokenizer=model.tokenizer, move_to_device=True)
    for name, param in fresh.named_parameters():
        if param.numel() > 1 and not bool(param.detach().float().isfinite().all()):
            raise RuntimeError(f"initialisation left non-finite values in {name}")
    return fresh.eval()


def reinitialised_model(model: Model, *, from_layer: int | None = None, seed: int = 0) -> Model:
    """A copy of ``model`` whose blocks ``from_layer..n_layers-1`` are re-initialised.

    Args:
        model: the trained model (left untouched; its hooks are not copied).
        from_layer: first re-initialised block (default ``n_layers // 2``: the second half).
        seed: initialisation seed of the new blocks.
    """
    n_layers = model.cfg.n_layers
    start = n_layers // 2 if from_layer is None else from_layer
    if not 0 <= start <= n_layers:
        raise ValueError(f"from_layer must be in 0..{n_layers} (got {from_layer})")
    fresh = untrained_model(model, seed=seed)
    redone = tuple(f"blocks.{i}." for i in range(start, n_layers))
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith(redone)}
    missing, unexpected = fresh.load_state_dict(kept, strict=False)
    if unexpected or any(not k.startswith(redone) for k in missing):
        raise RuntimeError(f"state dicts disagree: missing={missing}, unexpected={unexpected}")
    return fresh


def layer_separability(
    a: Float[Tensor, "n_a layer d_model"],
    b: Float[Tensor, "n_b layer d_model"],
    *,
    basis: Float[Tensor, "layer d_model k"] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> Float[Tensor, " layer"]:
    """Held-out accuracy of a linear classifier separating ``a`` from ``b`` at every layer.

    Args:
        a: first ensemble (e.g. language pilots).
        b: second ensemble (e.g. gibberish pilots).
        basis: optional per-layer directions to project on first.
        seed: classifier seed.
        progress: show a progress bar.

    Returns:
        Accuracy per layer (0.5 = inseparable).
    """
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(
            f"a and b must share layers and d_model (got {tuple(a.shape)}, {tuple(b.shape)})"
        )
    out = []
    for t in progress_iter(range(a.shape[1]), enabled=progress, desc="separability"):
        proj = None if basis is None else basis[t]
        out.append(classifier_accuracy(a[:, t], b[:, t], basis=proj, seed=seed))
    return torch.tensor(out, dtype=torch.float64)


@dataclass
class DynamicsSummary:
    """The numbers an ensemble's dynamics is compared on (model vs controls).

    Attributes:
        name: label of the ensemble.
        fit: variance law fitted over ``layers``.
        kurtosis: mean excess kurtosis of the residuals with both ends in ``layers``.
        normal_reject: mean fraction of coordinates whose Gaussianity test rejects there.
        isotropy: mean isotropy there (see :class:`ResidualStatistics`).
        step: mean ``|x(t+1) - x(t)|`` per layer transition, ``[layer - 1]``.
        norm: mean ``|x(t)|`` per layer, ``[layer]``.
        spread: root of the total variance of the ensemble per layer, ``[layer]``.
    """

    name: str
    fit: VarianceLawFit
    kurtosis: float
    normal_reject: float
    isotropy: float
    step: list[float]
    norm: list[float]
    spread: list[float]

    @property
    def step_ratio(self) -> float:
        """Mean step of the second half of the transitions over that of the first half."""
        half = len(self.step) // 2
        first = float(np.mean(self.step[:half]))
        return float(np.mean(self.step[half:])) / max(first, 1e-300)

    @classmethod
    def from_statistics(
        cls,
        name: str,
        trajectories: Float[Tensor, "n layer d_model"],
        stats: ResidualStatistics,
        *,
        layers: tuple[int, int] | None = None,
    ) -> DynamicsSummary:
        """Summarise precomputed residual statistics of ``trajectories``.

        Args:
            name: label.
            trajectories: the ensemble the statistics came from.
            stats: its residual statistics.
            layers: ``(start, stop)`` layer indices of the fit and of the averages.
        """
        lo, hi = layers if layers is not None else (0, stats.n_layers)
        fit = VarianceLawFit.from_statistics(stats, layers=(lo, hi))
        inside = stats.select((stats.t >= lo) & (stats.t + stats.tau < hi))
        x = trajectories.detach().to(torch.float64)
        return cls(
            name=name,
            fit=fit,
            kurtosis=float(inside.kurtosis.mean()),
            normal_reject=float(inside.normal_reject.nanmean()),
            isotropy=float(inside.isotropy.mean()),
            step=x.diff(dim=1).norm(dim=-1).mean(0).tolist(),
            norm=x.norm(dim=-1).mean(0).tolist(),
            spread=x.var(0).sum(-1).sqrt().tolist(),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain Python."""
        out = asdict(self)
        out["fit"] = self.fit.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DynamicsSummary:
        """Inverse of :meth:`to_dict`."""
        kw = dict(data)
        kw["fit"] = VarianceLawFit.from_dict(kw["fit"])
        return cls(**kw)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as tagged JSON, atomically; returns the path."""
        return save_json(path, SUMMARY_FORMAT, VERSION, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DynamicsSummary:
        """Read a file written by :meth:`save`.

        Raises:
            FileNotFoundError: no file at ``path``.
            FormatError: the file is damaged or holds another result type or version.
        """
        data = load_json(path, SUMMARY_FORMAT, VERSION, "DynamicsSummary")
        with reading(path, "DynamicsSummary"):
            return cls.from_dict(data)


def _robust_z(x: np.ndarray, min_mad: float) -> np.ndarray:
    """Robust z-score ``0.6745 (x - median) / MAD`` (Iglewicz and Hoaglin), with the MAD
    floored at ``min_mad`` so that layers which all sit at the noise level are not told apart
    by their noise."""
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return np.full_like(x, math.nan)
    med = np.median(finite)
    mad = max(float(np.median(np.abs(finite - med))), min_mad)
    return 0.6745 * (x - med) / mad


@dataclass
class LayerDiagnostics:
    """How far each layer departs from the linear-Gaussian model, and which layers stand out.

    For every layer, over the pairs ``(t, tau)`` with ``tau <= max_tau`` that *arrive* at it
    (``t + tau`` is the layer; the first layer, which nothing arrives at, uses the pairs that
    leave it):

    * ``kurtosis``: mean absolute excess kurtosis of the residuals;
    * ``normal_reject``: mean fraction of coordinates whose Gaussianity test rejects;
    * ``off_fit``: mean ``|ln var - ln(alpha exp(lam (t + tau)))|`` in units of the fit's
      residual standard deviation (the law is extrapolated outside its fitted range).

    ``score`` is the larger of the two robust z-scores (median/MAD across layers) of
    ``kurtosis`` and ``off_fit``; layers with ``score > threshold`` are ``flagged``. The MADs
    are floored at the sampling noise: ``sqrt(24 / n)`` (the standard error of one excess
    kurtosis) and 1 (one residual standard deviation of the fit).

    Attributes:
        times: time of each layer.
        kurtosis: per layer.
        normal_reject: per layer.
        off_fit: per layer.
        score: per layer.
        flagged: indices of the flagged layers.
        threshold: flagging threshold on the score.
        max_tau: largest ``tau`` considered.
    """

    times: list[float]
    kurtosis: list[float]
    normal_reject: list[float]
    off_fit: list[float]
    score: list[float]
    flagged: list[int]
    threshold: float
    max_tau: int

    @classmethod
    def from_statistics(
        cls,
        stats: ResidualStatistics,
        fit: VarianceLawFit,
        *,
        max_tau: int = 1,
        threshold: float = 3.5,
    ) -> LayerDiagnostics:
        """Score every layer of ``stats`` against ``fit``.

        >>> from tl_continuous.lines_of_thought.synthetic import linear_gaussian_ensemble
        >>> ens = linear_gaussian_ensemble(n=300, n_layers=8, d_model=10, rank=4, seed=0)
        >>> traj = ens.trajectories.clone()
        >>> traj[:, 5] += torch.distributions.StudentT(2.0).sample(traj[:, 5].shape).double()
        >>> s = ResidualStatistics.from_tensors(traj, ens.U, ens.S, progress=False)
        >>> flagged = LayerDiagnostics.from_statistics(s, VarianceLawFit.from_statistics(s)).flagged
        >>> 5 in flagged, any(i < 4 for i in flagged)
        (True, False)
        """
        if max_tau < 1:
            raise ValueError(f"max_tau must be at least 1 (got {max_tau})")
        near = stats.tau <= max_tau
        log_var = torch.log(stats.variance.clamp_min(1e-300))
        target = stats.times[stats.t + stats.tau]
        off = (log_var - (fit.log_alpha + fit.lam * target)).abs() / max(fit.residual_std, 1e-12)
        kurt, reject, off_fit = [], [], []
        for layer in range(stats.n_layers):
            mask = near & (stats.t + stats.tau == layer)
            if not bool(mask.any()):
                mask = near & (stats.t == layer)
            if not bool(mask.any()):
                kurt.append(math.nan)
                reject.append(math.nan)
                off_fit.append(math.nan)
                continue
            kurt.append(float(stats.kurtosis[mask].abs().mean()))
            reject.append(float(stats.normal_reject[mask].nanmean()))
            off_fit.append(float(off[mask].mean()))
        score = np.fmax(
            _robust_z(np.array(kurt), math.sqrt(24 / stats.n_samples)),
            _robust_z(np.array(off_fit), 1.0),
        )
        flagged = [int(i) for i in np.flatnonzero(score > threshold)]
        return cls(
            times=stats.times.tolist(),
            kurtosis=kurt,
            normal_reject=reject,
            off_fit=off_fit,
            score=[float(v) for v in score],
            flagged=flagged,
            threshold=threshold,
            max_tau=max_tau,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain Python."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerDiagnostics:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as tagged JSON, atomically; returns the path."""
        return save_json(path, DIAGNOSTICS_FORMAT, VERSION, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LayerDiagnostics:
        """Read a file written by :meth:`save`.

        Raises:
            FileNotFoundError: no file at ``path``.
            FormatError: the file is damaged or holds another result type or version.
        """
        data = load_json(path, DIAGNOSTICS_FORMAT, VERSION, "LayerDiagnostics")
        with reading(path, "LayerDiagnostics"):
            return cls.from_dict(data)
