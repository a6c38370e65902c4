"""KL under truncation from a shard folder, one shard at a time.

The out-of-core :func:`~tl_continuous.lines_of_thought.truncation.truncation_kl_last_layer`
and :func:`~tl_continuous.lines_of_thought.truncation.truncation_kl_every_layer`: the same
readings, K grids, checks and :class:`~tl_continuous.lines_of_thought.truncation.TruncationCurve`,
with the ensemble read shard by shard
(:func:`~tl_continuous.lines_of_thought.collect.iter_shards`) instead of held whole. What is
kept across shards is one float64 number per trajectory and K (its KL, for the exact median
of the curve) and per consecutive pair (for the baseline's median): ``(n_k + 1) * n`` floats,
against ``n * layer * d_model`` for the ensemble (for the paper's SmolLM2 grid,
``17 * 8 = 136`` bytes per trajectory against ``30 * 576 * 4 = 69`` kB).

>>> import tempfile
>>> from tl_continuous.lines_of_thought.collect import collect_shards
>>> from tl_continuous.lines_of_thought.streaming import streamed_bases
>>> from tl_continuous.tiny import tiny_model
>>> model = tiny_model()
>>> with tempfile.TemporaryDirectory() as d:
...     _ = collect_shards(model, torch.randint(0, 50, (80, 5)), d, batch_size=16,
...                        progress=False)
...     curve = streamed_truncation_kl_last_layer(model, d, streamed_bases(d, progress=False),
...                                               ks=[8, 64], progress=False)
>>> curve.n_trajectories, float(curve.kl_mean[-1]) < 1e-8
(80, True)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from tl_continuous._progress import progress as progress_iter
from tl_continuous.lines_of_thought.bases import TrajectoryBases
from tl_continuous.lines_of_thought.collect import iter_shards, read_manifest
from tl_continuous.lines_of_thought.ensemble import LinesOfThought
from tl_continuous.lines_of_thought.truncation import (
    TruncationCurve,
    _block_layers,
    _check,
    _check_every_layer,
    _every_layer_kv_batch,
    _grid,
    _projection_hooks,
    _summarise,
    kl_divergence,
    logprobs_from_residual,
)

if TYPE_CHECKING:
    from tl_continuous.backends.base import Model

__all__ = ["streamed_truncation_kl_every_layer", "streamed_truncation_kl_last_layer"]


def _shard_ensembles(
    shard_dir: str | os.PathLike[str], progress: bool, desc: str
) -> Iterator[LinesOfThought]:
    """Each shard as a small :class:`LinesOfThought` carrying the folder's metadata."""
    manifest = read_manifest(shard_dir)
    names = list(manifest["layer_names"])
    meta = {**manifest["metadata"], "tokens_sha256": manifest["tokens_sha256"]}
    total = int(manifest["n_batches"])
    for shard in progress_iter(iter_shards(shard_dir), enabled=progress, total=total, desc=desc):
        yield LinesOfThought(
            trajectories=shard["trajectories"],
            layer_names=names,
            tokens=shard["tokens"],
            pilot_positions=shard["pilot_positions"],
            metadata=meta,
        )


class _Curve:
    """Per-trajectory KLs and consecutive-pair baseline KLs, gathered shard by shard."""

    def __init__(self) -> None:
        self.kls: list[Tensor] = []
        self.base: list[Tensor] = []
        self.prev: Tensor | None = None

    def add(self, kls: Tensor, logp: Tensor) -> None:
        """``kls [n_k, b]`` and the full distributions ``logp [b, vocab]`` of ``b`` more rows
        (as float32, as the in-memory path keeps them for the baseline)."""
        self.kls.append(kls)
        logp = logp.float().cpu()
        rows = logp if self.prev is None else torch.cat([self.prev, logp])
        if rows.shape[0] > 1:
            self.base.append(kl_divergence(rows[:-1], rows[1:]).cpu())
        self.prev = logp[-1:]

    def curve(
        self, ks: list[int], reading: str, d_model: int, meta: dict[str, Any]
    ) -> TruncationCurve:
        kls = torch.cat(self.kls, dim=1)
        if not self.base:
            raise ValueError("the baseline needs at least two trajectories")
        baseline = float(torch.cat(self.base).median())
        return _summarise(kls, ks, baseline, reading, d_model, meta)


def streamed_truncation_kl_last_layer(
    model: Model,
    shard_dir: str | os.PathLike[str],
    bases: TrajectoryBases,
    ks: list[int] | None = None,
    *,
    batch_size: int = 256,
    progress: bool = True,
) -> TruncationCurve:
    """Reading (a), truncation of the last block's output, over a shard folder.

    Arguments and result as :func:`~tl_continuous.lines_of_thought.truncation.
    truncation_kl_last_layer`, with the folder in place of the ensemble.

    Raises:
        ValueError: bases or model that do not fit the folder, ``ks`` out of range.
        FileNotFoundError, IncompleteShardsError, CorruptShardError: as
            :func:`~tl_continuous.lines_of_thought.collect.load_shards`, for the folder.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer (got {batch_size})")
    acc = _Curve()
    grid: list[int] = []
    name, d_model, last = "", 0, 0
    with torch.inference_mode():
        for lot in _shard_ensembles(shard_dir, progress, "KL, last layer (shards)"):
            if not grid:
                _check(model, lot, bases)
                name = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
                last = lot.layer_index(name)
                grid, d_model = _grid(ks, bases), lot.d_model
            x = lot.trajectories[:, last]
            for start in range(0, lot.n_trajectories, batch_size):
                xb = x[start : start + batch_size]
                logp = logprobs_from_residual(model, xb)
                kls = torch.empty(len(grid), xb.shape[0], dtype=torch.float64)
                for j, k in enumerate(grid):
                    logp_k = logprobs_from_residual(model, bases.project(xb.double(), last, k))
                    kls[j] = kl_divergence(logp_k, logp).cpu()
                acc.add(kls, logp)
    return acc.curve(grid, "last_layer", d_model, {"layer": name})


def streamed_truncation_kl_every_layer(
    model: Model,
    shard_dir: str | os.PathLike[str],
    bases: TrajectoryBases,
    ks: list[int] | None = None,
    *,
    batch_size: int = 32,
    method: Literal["kv_cache", "naive"] = "kv_cache",
    max_rows: int = 256,
    progress: bool = True,
) -> TruncationCurve:
    """Reading (b), truncation after every block, over the token ids of a shard folder.

    Arguments and result as :func:`~tl_continuous.lines_of_thought.truncation.
    truncation_kl_every_layer`, with the folder in place of the ensemble; each shard's
    sequences are re-run in batches of ``batch_size``.

    Raises:
        ValueError: bases or model that do not fit the folder, padded sequences, bad options.
        FileNotFoundError, IncompleteShardsError, CorruptShardError: as
            :func:`~tl_continuous.lines_of_thought.collect.load_shards`, for the folder.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer (got {batch_size})")
    acc = _Curve()
    grid: list[int] = []
    layers: list[tuple[int, str]] = []
    d_model = 0
    device = model.cfg.device
    with torch.inference_mode():
        desc = f"KL, every layer ({method}, shards)"
        for lot in _shard_ensembles(shard_dir, progress, desc):
            if not grid:
                _check(model, lot, bases)
                layers = _block_layers(model, lot)
                if not layers:
                    raise ValueError("the ensemble has no block layers to truncate")
                grid, d_model = _grid(ks, bases), lot.d_model
            _check_every_layer(lot, method, max_rows)
            assert lot.tokens is not None
            for start in range(0, lot.n_trajectories, batch_size):
                toks = lot.tokens[start : start + batch_size].to(device)
                kls = torch.empty(len(grid), toks.shape[0], dtype=torch.float64)
                if method == "naive":
                    logp = torch.log_softmax(model(toks)[:, -1].double(), dim=-1)
                    for j, k in enumerate(grid):
                        with model.hooks(fwd_hooks=_projection_hooks(bases, layers, k)):
                            logits = model(toks)[:, -1]
                        kls[j] = kl_divergence(
                            torch.log_softmax(logits.double(), dim=-1), logp
                        ).cpu()
                else:
                    logp = _every_layer_kv_batch(model, toks, bases, layers, grid, kls, max_rows)
                acc.add(kls, logp)
    meta = {"method": method, "layers": [n for _, n in layers]}
    return acc.curve(grid, "every_layer", d_model, meta)
