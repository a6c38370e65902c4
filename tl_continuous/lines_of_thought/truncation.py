"""KL under truncation: how many singular directions does the pilot need?

The pilot is projected onto its layer's top-K directions, ``x -> U_K U_K^T x`` (bases from
:class:`~tl_continuous.lines_of_thought.bases.TrajectoryBases`), and the next-token
distribution ``p_K`` is compared with the model's ``p``: the curve is the mean over
trajectories of ``KL(p_K || p)`` (natural log, nats), computed in float64.

Two readings:

* ``truncation_kl_last_layer``: only the last block's output is truncated, then final norm
  and unembedding.
* ``truncation_kl_every_layer``: during the forward pass the pilot's residual is truncated
  after every block (each block's own basis). Earlier positions are untouched, so the prefix
  (all but the pilot) runs once per batch into a frozen TransformerLens key/value cache and
  only the pilot position is re-run for each K. ``method="naive"`` instead recomputes every
  position for each K (same numbers; the reference for tests and benchmarks).

Baseline: the median over ``i`` of ``KL(p_i || p_{i+1})`` between consecutive trajectories'
full distributions (unrelated pseudo-sentences). The knee is the smallest K of the grid at
which the curve has fallen by 90% of its drop from the first K of the grid to the last.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_continuous._io import load_tensors, reading, save_tensors
from tl_continuous._progress import progress as progress_iter
from tl_continuous.backends import backend_for
from tl_continuous.lines_of_thought.bases import TrajectoryBases
from tl_continuous.lines_of_thought.ensemble import LinesOfThought

if TYPE_CHECKING:
    from tl_continuous.backends.base import Model

__all__ = [
    "FORMAT",
    "VERSION",
    "TruncationCurve",
    "baseline_kl",
    "default_k_grid",
    "kl_divergence",
    "logprobs_from_residual",
    "truncation_kl_every_layer",
    "truncation_kl_last_layer",
]

FORMAT = "tl_continuous.lines_of_thought.truncation"
VERSION = 1


def kl_divergence(
    logp: Float[Tensor, "*batch vocab"], logq: Float[Tensor, "*batch vocab"]
) -> Float[Tensor, "*batch"]:
    """``KL(p || q)`` in nats from log-probabilities, computed in float64.

    >>> lp = torch.log(torch.tensor([0.5, 0.5]))
    >>> round(float(kl_divergence(lp, torch.log(torch.tensor([0.9, 0.1])))), 4)
    0.5108
    """
    logp, logq = logp.double(), logq.double()
    return (logp.exp() * (logp - logq)).sum(dim=-1).clamp(min=0.0)


def baseline_kl(logp: Float[Tensor, "n vocab"]) -> float:
    """Median of ``KL(p_i || p_{i+1})`` over consecutive rows."""
    if logp.shape[0] < 2:
        raise ValueError("the baseline needs at least two trajectories")
    return float(kl_divergence(logp[:-1], logp[1:]).median())


def default_k_grid(d: int) -> list[int]:
    """Even numbers up to ``d`` (``d`` itself included).

    >>> default_k_grid(7)
    [2, 4, 6, 7]
    """
    ks = list(range(2, d + 1, 2))
    if not ks or ks[-1] != d:
        ks.append(d)
    return ks


@dataclass
class TruncationCurve:
    """Mean ``KL(p_K || p)`` against K, for one reading.

    Attributes:
        ks: the K grid.
        kl_mean: mean over trajectories of ``KL(p_K || p)`` per K.
        kl_median: median over trajectories per K.
        baseline: median KL between consecutive trajectories' full distributions.
        reading: ``"last_layer"`` or ``"every_layer"``.
        n_trajectories: how many trajectories were averaged.
        d_model: the model width.
    """

    ks: Int[Tensor, " n_k"]
    kl_mean: Float[Tensor, " n_k"]
    kl_median: Float[Tensor, " n_k"]
    baseline: float
    reading: str
    n_trajectories: int
    d_model: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (self.ks.shape == self.kl_mean.shape == self.kl_median.shape) or self.ks.ndim != 1:
            raise ValueError("ks, kl_mean and kl_median must be 1-D and of equal length")
        if self.reading not in ("last_layer", "every_layer"):
            raise ValueError(
                f"reading must be 'last_layer' or 'every_layer' (got {self.reading!r})"
            )

    def knee(self, fraction: float = 0.9) -> int:
        """Smallest K where the KL has fallen by ``fraction`` of its drop over the grid.

        >>> c = TruncationCurve(torch.tensor([1, 2, 4, 8]), torch.tensor([5.0, 2, 0.4, 0]),
        ...                     torch.tensor([5.0, 2, 0.4, 0]), 1.0, "last_layer", 10, 8)
        >>> c.knee()
        4
        """
        first, last = float(self.kl_mean[0]), float(self.kl_mean[-1])
        target = first - fraction * (first - last)
        hit = (self.kl_mean <= target + 1e-12).nonzero()
        return int(self.ks[int(hit[0])])

    @property
    def knee_k(self) -> int:
        """K at which 90% of the KL drop is reached."""
        return self.knee(0.9)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ks": self.ks.tolist(),
            "kl_mean": self.kl_mean.tolist(),
            "kl_median": self.kl_median.tolist(),
            "baseline": self.baseline,
            "reading": self.reading,
            "n_trajectories": self.n_trajectories,
            "d_model": self.d_model,
            "knee_k": self.knee_k,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TruncationCurve:
        return cls(
            ks=torch.tensor(data["ks"]),
            kl_mean=torch.tensor(data["kl_mean"], dtype=torch.float64),
            kl_median=torch.tensor(data["kl_median"], dtype=torch.float64),
            baseline=float(data["baseline"]),
            reading=data["reading"],
            n_trajectories=int(data["n_trajectories"]),
            d_model=int(data["d_model"]),
            metadata=dict(data.get("metadata", {})),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write one safetensors file (``ks``, ``kl_mean``, ``kl_median``) whose header carries
        the other fields; returns the path. The write is atomic.
        """
        tensors = {"ks": self.ks, "kl_mean": self.kl_mean, "kl_median": self.kl_median}
        fields = {
            "baseline": self.baseline,
            "reading": self.reading,
            "n_trajectories": self.n_trajectories,
            "d_model": self.d_model,
            "metadata": self.metadata,
        }
        return save_tensors(path, FORMAT, VERSION, tensors, fields)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TruncationCurve:
        """Read a file written by :meth:`save`.

        Raises:
            FileNotFoundError: no file at ``path``.
            FormatError: the file is damaged or holds another result type or version.
        """
        fields, tensors = load_tensors(path, FORMAT, VERSION, "TruncationCurve")
        with reading(path, "TruncationCurve"):
            return cls(
                ks=tensors["ks"],
                kl_mean=tensors["kl_mean"],
                kl_median=tensors["kl_median"],
                baseline=float(fields["baseline"]),
                reading=fields["reading"],
                n_trajectories=int(fields["n_trajectories"]),
                d_model=int(fields["d_model"]),
                metadata=dict(fields["metadata"]),
            )


# ---------------------------------------------------------------------------- helpers
def logprobs_from_residual(
    model: Model, resid: Float[Tensor, "batch d_model"]
) -> Float[Tensor, "batch vocab"]:
    """Final norm, unembedding and log-softmax (float64) of last-block residuals."""
    dtype = model.cfg.dtype
    x = resid.to(model.W_U.device, dtype)[:, None, :]
    if model.cfg.normalization_type is not None:
        x = model.ln_final(x)
    logits = model.unembed(x)[:, 0]
    return torch.log_softmax(logits.double(), dim=-1)


def _grid(ks: list[int] | None, bases: TrajectoryBases) -> list[int]:
    grid = default_k_grid(bases.rank) if ks is None else sorted({int(k) for k in ks})
    bad = [k for k in grid if not 1 <= k <= bases.rank]
    if bad:
        raise ValueError(f"ks must lie in [1, rank={bases.rank}] (got {bad})")
    return grid


_ARCHITECTURE = ("model_name", "n_layers", "d_model", "d_vocab", "n_heads", "d_head")


def _check(model: Model, lot: LinesOfThought, bases: TrajectoryBases) -> None:
    if lot.layer_names != bases.layer_names:
        raise ValueError("bases were not built from this ensemble's layers (layer_names differ)")
    if bases.d_model != lot.d_model:
        raise ValueError(
            f"bases were not built from this ensemble (bases d_model={bases.d_model}, "
            f"lot d_model={lot.d_model})"
        )
    if lot.d_model != model.cfg.d_model:
        raise ValueError(
            f"lot was not collected from this model (lot d_model={lot.d_model}, "
            f"model d_model={model.cfg.d_model})"
        )
    recorded = lot.metadata.get("model_config")
    if isinstance(recorded, dict):
        current = model.cfg.to_dict()
        differ = [k for k in _ARCHITECTURE if k in recorded and recorded[k] != current.get(k)]
        if differ:
            raise ValueError(
                f"lot was collected from another model (its recorded config differs in {differ})"
            )


def _block_layers(model: Model, lot: LinesOfThought) -> list[tuple[int, str]]:
    """(ensemble index, hook name) of every block hook in the ensemble."""
    return [(i, n) for i, n in enumerate(lot.layer_names) if n.startswith("blocks.")]


def _summarise(
    kls: Float[Tensor, "n_k n"],
    ks: list[int],
    baseline: float,
    reading: str,
    d_model: int,
    meta: dict[str, Any],
) -> TruncationCurve:
    """The curve of a ``[K, trajectory]`` KL table (in-memory and streamed readings)."""
    return TruncationCurve(
        ks=torch.tensor(ks),
        kl_mean=kls.mean(dim=1),
        kl_median=kls.median(dim=1).values,
        baseline=baseline,
        reading=reading,
        n_trajectories=int(kls.shape[1]),
        d_model=d_model,
        metadata=meta,
    )


# --------------------------------------------------------------------- last layer
def truncation_kl_last_layer(
    model: Model,
    lot: LinesOfThought,
    bases: TrajectoryBases,
    ks: list[int] | None = None,
    *,
    batch_size: int = 256,
    progress: bool = True,
) -> TruncationCurve:
    """Reading (a): truncate the last block's output only, then final norm + unembedding.

    Args:
        model: the model the ensemble came from.
        lot: an ensemble that contains ``blocks.{L-1}.hook_resid_post``.
        bases: bases of ``lot``.
        ks: K grid (default even numbers up to the rank, i.e. up to ``d_model`` when there
            are at least ``d_model`` trajectories).
        batch_size: trajectories per unembedding.
        progress: show a progress bar.

    >>> from tl_continuous.tiny import tiny_model
    >>> model = tiny_model()
    >>> lot = LinesOfThought.collect(model, torch.randint(0, 50, (80, 6)), progress=False)
    >>> curve = truncation_kl_last_layer(model, lot, TrajectoryBases.from_ensemble(lot),
    ...                                  ks=[8, 64], progress=False)
    >>> float(curve.kl_mean[-1]) < 1e-8
    True
    """
    _check(model, lot, bases)
    last = lot.layer_index(f"blocks.{model.cfg.n_layers - 1}.hook_resid_post")
    grid = _grid(ks, bases)
    x = lot.trajectories[:, last]
    kls = torch.empty(len(grid), lot.n_trajectories, dtype=torch.float64)
    logps = []
    starts = range(0, lot.n_trajectories, batch_size)
    with torch.inference_mode():
        bar = progress_iter(starts, enabled=progress, total=len(starts), desc="KL, last layer")
        for start in bar:
            xb = x[start : start + batch_size]
            logp = logprobs_from_residual(model, xb)
            logps.append(logp.float())
            for j, k in enumerate(grid):
                logp_k = logprobs_from_residual(model, bases.project(xb.double(), last, k))
                kls[j, start : start + xb.shape[0]] = kl_divergence(logp_k, logp).cpu()
    return _summarise(
        kls,
        grid,
        baseline_kl(torch.cat(logps)),
        "last_layer",
        lot.d_model,
        {"layer": lot.layer_names[last]},
    )


# -------------------------------------------------------------------- every layer
def _projection_hooks(
    bases: TrajectoryBases, layers: list[tuple[int, str]], k: int
) -> list[tuple[str | Callable[..., Any], Callable[..., Any]]]:
    # one closure per hook, keyed by the name asked for: on a TransformerBridge hook.name is
    # the canonical name of the alias (blocks.0.hook_out for blocks.0.hook_resid_post)
    def projector(u: Tensor) -> Callable[..., Tensor]:
        def project(act: Tensor, hook: Any) -> Tensor:
            basis = u.to(act.device)
            new = ((act[:, -1].to(basis.dtype) @ basis) @ basis.T).to(act.dtype)
            if act.shape[1] == 1:  # the pilot alone (key/value-cache path)
                return new[:, None]
            out = act.clone()
            out[:, -1] = new
            return out

        return project

    return [(name, projector(bases.top(i, k))) for i, name in layers]


def _branch_hooks(
    bases: TrajectoryBases,
    layers: list[tuple[int, str]],
    branch_k: Int[Tensor, " m"],
) -> list[tuple[str | Callable[..., Any], Callable[..., Any]]]:
    """Hooks projecting branch ``j`` of a ``kv_branches`` pass onto its top-``branch_k[j]``
    directions (``0``: left as it is, the model's own pilot).

    The backend lays the branches out along positions (``[batch, m, d_model]``) or along
    rows, branch-major (``[m * batch, 1, d_model]``); with ``m == 1`` the two agree.
    """
    m = int(branch_k.shape[0])
    keep = (torch.arange(bases.rank)[None, :] < branch_k[:, None]).to(bases.U.dtype)
    mine = (branch_k == 0)[:, None]

    def projector(u: Tensor) -> Callable[..., Tensor]:  # u sorted by singular value
        def project(act: Tensor, hook: Any) -> Tensor:
            basis = u.to(act.device)
            if act.shape[1] == 1:  # rows, branch-major
                rows = act.shape[0] // m
                k_mask = keep.to(act.device).repeat_interleave(rows, dim=0)[:, None]
                own = mine.to(act.device).repeat_interleave(rows, dim=0)[:, None]
            else:  # positions
                k_mask, own = keep.to(act.device)[None], mine.to(act.device)[None]
            coeff = (act.to(basis.dtype) @ basis) * k_mask
            return torch.where(own, act, (coeff @ basis.T).to(act.dtype))

        return project

    return [(name, projector(u)) for name, u in _full_bases(bases, layers)]


def _full_bases(bases: TrajectoryBases, layers: list[tuple[int, str]]) -> list[tuple[str, Tensor]]:
    return [(name, bases.top(i, bases.rank)) for i, name in layers]


def _check_every_layer(lot: LinesOfThought, method: str, max_rows: int) -> None:
    """The every-layer reading's own conditions on the ensemble and options."""
    if lot.tokens is None:
        raise ValueError("lot has no token ids; the every-layer reading re-runs the sequences")
    pos = lot.tokens.shape[1]
    if lot.pilot_positions is not None and bool((lot.pilot_positions != pos - 1).any()):
        raise ValueError(
            "the every-layer reading needs the pilot at the last position (no padding)"
        )
    if pos < 2 and method == "kv_cache":
        raise ValueError("sequences of one token have no prefix; use method='naive'")
    if max_rows < 1:
        raise ValueError(f"max_rows must be a positive integer (got {max_rows})")
    if method not in ("kv_cache", "naive"):
        raise ValueError(f"method must be 'kv_cache' or 'naive' (got {method!r})")


def _every_layer_kv_batch(
    model: Model,
    toks: Tensor,
    bases: TrajectoryBases,
    layers: list[tuple[int, str]],
    grid: list[int],
    out: Tensor,
    max_rows: int,
) -> Tensor:
    """Prefix once into a key/value cache, then the pilot as independent branches: the
    model's own (no projection) and one per K, several per pass; fills ``out``."""
    backend = backend_for(model)
    b = toks.shape[0]
    cache = backend.kv_prefix(model, toks[:, :-1])
    last = toks[:, -1:]
    branches = [0, *grid]  # 0: the unprojected pilot, whose p every K is compared with
    per_pass = max(1, max_rows // b)
    logp: Tensor | None = None
    for first in range(0, len(branches), per_pass):
        chunk = branches[first : first + per_pass]
        with model.hooks(fwd_hooks=_branch_hooks(bases, layers, torch.tensor(chunk))):
            logits = backend.kv_branches(model, last, cache, len(chunk))
        logp_k = torch.log_softmax(logits.double(), dim=-1)  # [m, b, vocab]
        if logp is None:
            logp, logp_k = logp_k[0], logp_k[1:]
        done = first + len(chunk) - 1  # grid values filled so far
        n = logp_k.shape[0]
        if n:
            out[done - n : done] = kl_divergence(logp_k, logp.expand(n, -1, -1)).cpu()
    assert logp is not None
    return logp


def truncation_kl_every_layer(
    model: Model,
    lot: LinesOfThought,
    bases: TrajectoryBases,
    ks: list[int] | None = None,
    *,
    batch_size: int = 32,
    method: Literal["kv_cache", "naive"] = "kv_cache",
    max_rows: int = 256,
    progress: bool = True,
) -> TruncationCurve:
    """Reading (b): truncate the pilot's residual after every block during the forward pass.

    Every block hook of the ensemble (``blocks.{i}.hook_{resid_*}``) projects the pilot's
    activation onto that layer's top-K basis; earlier positions are untouched. The ensemble
    must hold the token ids, unpadded, with the pilot at the last position (as collected from
    pseudo-sentences).

    Args:
        model: the model the ensemble came from.
        lot: the ensemble (its ``tokens`` are re-run).
        bases: bases of ``lot``.
        ks: K grid (see :func:`truncation_kl_last_layer`).
        batch_size: sequences per forward pass.
        method: ``"kv_cache"`` (prefix once per batch into a frozen key/value cache, then only
            the pilot per K) or ``"naive"`` (full recompute per K).
        max_rows: with ``"kv_cache"``, several K values share one pilot pass: the cache rows
            are repeated so that a pass holds up to ``max_rows`` (sequence, K) pairs. This
            amortises the per-pass fixed cost (TransformerLens copies some weights on every
            forward, which dominates a one-token pass on the CPU).
        progress: show a progress bar.

    >>> from tl_continuous.tiny import tiny_model
    >>> model = tiny_model()
    >>> lot = LinesOfThought.collect(model, torch.randint(0, 50, (70, 6)), progress=False)
    >>> bases = TrajectoryBases.from_ensemble(lot)
    >>> fast = truncation_kl_every_layer(model, lot, bases, ks=[4, 16], progress=False)
    >>> slow = truncation_kl_every_layer(model, lot, bases, ks=[4, 16], method="naive",
    ...                                  progress=False)
    >>> bool(torch.allclose(fast.kl_mean, slow.kl_mean, atol=1e-5))
    True
    """
    _check(model, lot, bases)
    _check_every_layer(lot, method, max_rows)
    tokens = lot.tokens
    assert tokens is not None  # _check_every_layer refuses an ensemble without them
    layers = _block_layers(model, lot)
    if not layers:
        raise ValueError("the ensemble has no block layers to truncate")
    grid = _grid(ks, bases)
    device = model.cfg.device
    kls = torch.empty(len(grid), lot.n_trajectories, dtype=torch.float64)
    logps: list[Tensor] = []
    starts = range(0, lot.n_trajectories, batch_size)
    with torch.inference_mode():
        desc = f"KL, every layer ({method})"
        for start in progress_iter(starts, enabled=progress, total=len(starts), desc=desc):
            toks = tokens[start : start + batch_size].to(device)
            b = toks.shape[0]
            if method == "naive":
                logp = torch.log_softmax(model(toks)[:, -1].double(), dim=-1)
                for j, k in enumerate(grid):
                    with model.hooks(fwd_hooks=_projection_hooks(bases, layers, k)):
                        logits = model(toks)[:, -1]
                    kls[j, start : start + b] = kl_divergence(
                        torch.log_softmax(logits.double(), dim=-1), logp
                    ).cpu()
            else:
                logp = _every_layer_kv_batch(
                    model, toks, bases, layers, grid, kls[:, start : start + b], max_rows
                )
            logps.append(logp.float().cpu())
    return _summarise(
        kls,
        grid,
        baseline_kl(torch.cat(logps)),
        "every_layer",
        lot.d_model,
        {"method": method, "layers": [n for _, n in layers]},
    )
