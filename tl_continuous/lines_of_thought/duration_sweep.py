"""Lines of thought under a sweep of durations, seen on the bases of the plain ensemble.

For every value ``c`` of a sweep, the same token sequences (pseudo-sentences: one length) run
inside ``continuous(model, Durations(...))`` with the *shrunk* tokens at duration ``c`` and
every other token at duration 1, and their pilots are collected as with
:meth:`LinesOfThought.collect <tl_continuous.lines_of_thought.ensemble.LinesOfThought.collect>`.

Which tokens shrink: by default every token but the last one, the pilot, whose duration stays
1 (shrinking every token, pilot included, by the same ``c`` only scales positions: attention
weights are unchanged). ``shrink=[(first, last), ...]`` names spans instead, both ends
inclusive and negative indices counting from the end, as in
:meth:`Durations.from_spans <tl_continuous.continuous.durations.Durations.from_spans>`. A BOS
token at position 0 shrinks with the rest unless the spans leave it out (``[(1, -2)]``).

Each ensemble is read on the bases of the *plain* ensemble (the same sequences, no
durations): coordinate ``i`` of a pilot at layer ``t`` is its inner product with the plain
ensemble's ``i``-th largest singular direction at layer ``t``
(:meth:`TrajectoryBases.top <tl_continuous.lines_of_thought.bases.TrajectoryBases.top>`).
Only the first ``k`` coordinates, the mean trajectory and a few scalars per ``c`` and layer
are kept, never the full ensembles. All projection maths is float64.

Readouts per ``c`` and layer: the distance of the mean pilot from the plain mean, in units of
the plain ensemble's spread (the root mean squared distance of its pilots from their mean);
the fraction of the squared norm (or of the variance) that the plain top-``k`` directions
capture; the spread relative to the plain one.

>>> from tl_continuous.tiny import tiny_model
>>> model = tiny_model("rotary")
>>> tokens = torch.randint(0, 50, (64, 6), generator=torch.Generator().manual_seed(0))
>>> sweep = DurationSweepLines.collect(model, tokens, None, [1.0, 0.5], k=2, progress=False)
>>> sweep.coords.shape, sweep.means.shape
(torch.Size([2, 64, 2, 2]), torch.Size([2, 2, 64]))
>>> sweep.distance()[0].max().item() < 1e-5  # c = 1 is the plain ensemble
True
>>> sweep.shrink
[(0, 4)]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int, Real
from torch import Tensor

from tl_continuous._io import load_tensors, reading, save_tensors
from tl_continuous._progress import progress as _progress
from tl_continuous.continuous.durations import Durations
from tl_continuous.continuous.signal import continuous
from tl_continuous.lines_of_thought.bases import TrajectoryBases
from tl_continuous.lines_of_thought.collect import check_collection
from tl_continuous.lines_of_thought.ensemble import LinesOfThought
from tl_continuous.lines_of_thought.hooks import HookKind, parse_layer_hook_names

if TYPE_CHECKING:
    from tl_continuous.backends.base import Model
    from tl_continuous.lines_of_thought.corpus import PseudoSentences

__all__ = ["FORMAT", "VERSION", "DurationSweepLines"]

FORMAT = "tl_continuous.lines_of_thought.duration_sweep"
VERSION = 1
_TENSORS = (
    "values",
    "coords",
    "means",
    "norm2",
    "variance",
    "plain_coords",
    "plain_mean",
    "plain_norm2",
    "plain_variance",
    "basis",
)


# --------------------------------------------------------------------------- checks
def _check_values(values: Sequence[float | int] | Tensor) -> Tensor:
    try:
        out = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError) as err:
        raise TypeError(f"values must be a 1-D sequence of numbers ({err})") from err
    if out.ndim != 1 or out.numel() == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence (got shape {tuple(out.shape)})")
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"values must be finite (got {out.tolist()})")
    if bool((out < 0).any()):
        raise ValueError(f"values must be >= 0: they are durations (got {out.tolist()})")
    return out


def _shrink_mask(
    shrink: Sequence[tuple[int, int]] | None, n_pos: int, values: Tensor
) -> tuple[list[tuple[int, int]], Tensor]:
    """The spans as non-negative ``(first, last)`` pairs and the ``[n_pos]`` mask they cover.

    Spans are read by :meth:`Durations.from_spans`, whose errors are re-raised naming
    ``shrink``.
    """
    if shrink is None:
        if n_pos < 2:
            raise ValueError(
                "shrink: sequences of one token have nothing to shrink but the pilot; give "
                "longer sequences or explicit spans"
            )
        shrink = [(0, n_pos - 2)]
    if len(shrink) == 0:
        raise ValueError("shrink must name at least one span (None: every token but the pilot)")
    try:
        mask = Durations.from_spans(n_pos, shrink, value=0.5).values[0] == 0.5
    except ValueError as err:
        raise ValueError(f"shrink: {err}; both ends inclusive, negative from the end") from err
    if bool(mask.all()) and bool((values == 0).any()):
        raise ValueError(
            "values: c = 0 with every token in a shrink span leaves nothing to attend to"
        )
    spans = [(a + n_pos if a < 0 else a, b + n_pos if b < 0 else b) for a, b in shrink]
    return spans, mask


def _hooks_of(bases: TrajectoryBases, model: Model) -> tuple[HookKind, list[int], bool]:
    """The hook kind, blocks and final-norm flag that produced ``bases.layer_names``."""
    if bases.d_model != model.cfg.d_model:
        raise ValueError(
            f"bases have d_model={bases.d_model} but the model has d_model={model.cfg.d_model}: "
            "pass the bases of this model's plain ensemble"
        )
    name = bases.metadata.get("model_name")
    if name is not None and name != model.cfg.model_name:
        raise ValueError(
            f"bases come from the model {name!r}, not {model.cfg.model_name!r}: pass the bases "
            "of this model's plain ensemble"
        )
    try:
        hook, blocks, final = parse_layer_hook_names(list(bases.layer_names))
    except ValueError as err:
        raise ValueError(f"bases.{err}") from err
    if blocks and max(blocks) >= model.cfg.n_layers:
        raise ValueError(
            f"bases name block {max(blocks)} but the model has n_layers={model.cfg.n_layers}: "
            "pass the bases of this model's plain ensemble"
        )
    return hook, blocks, final


def _readouts(
    trajectories: Float[Tensor, "n_traj n_layers d_model"],
    basis: Float[Tensor, "n_layers d_model k"],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Coordinates ``[n, L, k]``, mean ``[L, D]``, mean squared norm and variance ``[L]``."""
    x = trajectories.detach().to("cpu", torch.float64)
    coords = torch.einsum("nld,ldk->nlk", x, basis)
    mean = x.mean(dim=0)
    norm2 = (x**2).sum(dim=-1).mean(dim=0)
    variance = ((x - mean) ** 2).sum(dim=-1).mean(dim=0)
    return coords, mean, norm2, variance


def _captured(coords: Tensor, norm2: Tensor, variance: Tensor, centred: bool) -> Tensor:
    """Share of the squared norm (or of the variance) along the kept directions."""
    if centred:
        c = coords - coords.mean(dim=-3, keepdim=True)
        return (c**2).sum(dim=-1).mean(dim=-2) / variance
    return (coords**2).sum(dim=-1).mean(dim=-2) / norm2


# ------------------------------------------------------------------------ the result
@dataclass
class DurationSweepLines:
    """Lines of thought collected under a sweep of durations, on the plain ensemble's bases.

    Attributes:
        values: ``[n_values]`` the durations ``c`` of the shrunk tokens.
        coords: ``[n_values, n_traj, n_layers, k]`` each pilot's first ``k`` coordinates on
            the plain bases of its layer (float64).
        means: ``[n_values, n_layers, d_model]`` mean pilot per ``c`` (float64).
        norm2: ``[n_values, n_layers]`` mean squared norm of the pilots.
        variance: ``[n_values, n_layers]`` mean squared distance of the pilots from
            their mean.
        plain_coords, plain_mean, plain_norm2, plain_variance: the same for the plain
            ensemble (no durations); ``plain_coords`` is ``[n_traj, n_layers, k]``.
        basis: ``[n_layers, d_model, k]`` the plain bases' top-``k`` directions per layer.
        layer_names: the hook read at each layer.
        shrink: the ``(first, last)`` token spans (inclusive) that had duration ``c``.
        metadata: JSON-safe facts (model, corpus, tokens hash, bases).
    """

    values: Float[Tensor, " n_values"]
    coords: Float[Tensor, "n_values n_traj n_layers k"]
    means: Float[Tensor, "n_values n_layers d_model"]
    norm2: Float[Tensor, "n_values n_layers"]
    variance: Float[Tensor, "n_values n_layers"]
    plain_coords: Float[Tensor, "n_traj n_layers k"]
    plain_mean: Float[Tensor, "n_layers d_model"]
    plain_norm2: Float[Tensor, " n_layers"]
    plain_variance: Float[Tensor, " n_layers"]
    basis: Float[Tensor, "n_layers d_model k"]
    layer_names: list[str]
    shrink: list[tuple[int, int]]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.values.ndim != 1 or self.coords.ndim != 4:
            raise ValueError(
                "values must be [n_values] and coords [n_values, n_traj, n_layers, k] "
                f"(got {tuple(self.values.shape)} and {tuple(self.coords.shape)})"
            )
        v, n, n_layers, k = self.coords.shape
        d = int(self.basis.shape[1]) if self.basis.ndim == 3 else -1
        expected = {
            "values": (v,),
            "means": (v, n_layers, d),
            "norm2": (v, n_layers),
            "variance": (v, n_layers),
            "plain_coords": (n, n_layers, k),
            "plain_mean": (n_layers, d),
            "plain_norm2": (n_layers,),
            "plain_variance": (n_layers,),
            "basis": (n_layers, d, k),
        }
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"{name} must have shape {shape} (got {got})")
        for name in _TENSORS:
            if not getattr(self, name).is_floating_point():
                raise TypeError(f"{name} must be floating point")
        if len(self.layer_names) != n_layers:
            raise ValueError(
                f"layer_names must name each of the {n_layers} layers (got {len(self.layer_names)})"
            )
        self.shrink = [(int(a), int(b)) for a, b in self.shrink]

    # ------------------------------------------------------------------ sizes
    @property
    def n_values(self) -> int:
        return int(self.coords.shape[0])

    @property
    def n_trajectories(self) -> int:
        return int(self.coords.shape[1])

    @property
    def n_layers(self) -> int:
        return int(self.coords.shape[2])

    @property
    def k(self) -> int:
        return int(self.coords.shape[3])

    @property
    def d_model(self) -> int:
        return int(self.basis.shape[1])

    # --------------------------------------------------------------- readouts
    def mean_coords(self) -> Float[Tensor, "n_values n_layers k"]:
        """The mean pilot path per ``c`` on the plain bases (``means`` projected)."""
        return self.coords.mean(dim=1)

    def plain_mean_coords(self) -> Float[Tensor, "n_layers k"]:
        """The plain ensemble's mean path on its own bases."""
        return self.plain_coords.mean(dim=0)

    def plain_spread(self) -> Float[Tensor, " n_layers"]:
        """Root mean squared distance of the plain pilots from their mean, per layer."""
        return self.plain_variance.sqrt()

    def distance(self) -> Float[Tensor, "n_values n_layers"]:
        """``|mean_c(t) - plain_mean(t)| / plain_spread(t)``: how far the mean pilot moved."""
        return (self.means - self.plain_mean).norm(dim=-1) / self.plain_spread()

    def spread_ratio(self) -> Float[Tensor, "n_values n_layers"]:
        """Spread of the ensemble at ``c`` over the plain spread (1: as wide as plain)."""
        return (self.variance / self.plain_variance).sqrt()

    def captured_fraction(self, centred: bool = False) -> Float[Tensor, "n_values n_layers"]:
        """Share of the pilots' squared norm (``centred``: of their variance) that lies in
        the plain top-``k`` directions of each layer."""
        return _captured(self.coords, self.norm2, self.variance, centred)

    def plain_captured_fraction(self, centred: bool = False) -> Float[Tensor, " n_layers"]:
        """:meth:`captured_fraction` of the plain ensemble (uncentred: the bases'
        ``explained_fraction(k)`` when they were computed from the same ensemble)."""
        return _captured(self.plain_coords, self.plain_norm2, self.plain_variance, centred)

    def summary(self) -> dict[str, Any]:
        """JSON-safe readouts: per ``c``, the distance at the last layer and its maximum over
        layers, the captured fractions at the last layer, the spread ratio at the last layer.
        """
        dist, frac, spread = self.distance(), self.captured_fraction(), self.spread_ratio()
        centred = self.captured_fraction(centred=True)
        return {
            "k": self.k,
            "n_trajectories": self.n_trajectories,
            "shrink": [list(s) for s in self.shrink],
            "last_layer": self.layer_names[-1],
            "plain_captured_last": float(self.plain_captured_fraction()[-1]),
            "plain_captured_centred_last": float(self.plain_captured_fraction(True)[-1]),
            "per_value": [
                {
                    "c": float(c),
                    "distance_last": float(dist[i, -1]),
                    "distance_max": float(dist[i].max()),
                    "distance_argmax_layer": int(dist[i].argmax()),
                    "captured_last": float(frac[i, -1]),
                    "captured_centred_last": float(centred[i, -1]),
                    "spread_ratio_last": float(spread[i, -1]),
                }
                for i, c in enumerate(self.values.tolist())
            ],
        }

    # ------------------------------------------------------------- collection
    @classmethod
    def collect(
        cls,
        model: Model,
        tokens_or_corpus: Int[Tensor, "batch pos"] | PseudoSentences,
        bases: TrajectoryBases | None,
        values: Sequence[float | int] | Real[Tensor, " n_values"],
        *,
        shrink: Sequence[tuple[int, int]] | None = None,
        k: int = 3,
        plain: LinesOfThought | None = None,
        batch_size: int = 32,
        progress: bool = True,
    ) -> DurationSweepLines:
        """Collect the pilots for every ``c`` in ``values`` and read them on the plain bases.

        Args:
            model: the ``HookedTransformer`` (left as it was: every ``continuous`` block
                removes its hooks, also on errors).
            tokens_or_corpus: ``[n, pos]`` token ids or :class:`PseudoSentences`, one length
                (no padding).
            bases: the plain ensemble's :class:`TrajectoryBases`; their ``layer_names`` say
                which hooks are read. ``None``: computed from the plain ensemble (every
                block's ``resid_post``).
            values: the durations ``c`` of the shrunk tokens, finite and ``>= 0``.
            shrink: ``(first, last)`` spans of shrunk tokens, inclusive, negative from the
                end; default every token but the pilot.
            k: coordinates kept per layer (``1 <= k <= bases.rank``).
            plain: the plain ensemble of the same token ids, if already collected (saves one
                pass); collected here otherwise.
            batch_size: sequences per forward pass.
            progress: a progress bar over the values.

        Raises:
            ValueError: bad ``values``, ``shrink``, ``k``, ``batch_size``, ``bases`` of
                another model or layer set, or a ``plain`` ensemble of other tokens/layers.
        """
        if bases is not None:
            hook, blocks, final = _hooks_of(bases, model)
        else:
            hook, blocks, final = "resid_post", list(range(model.cfg.n_layers)), False
        inputs = check_collection(
            model,
            tokens_or_corpus,
            batch_size=batch_size,
            hook=hook,
            layers=blocks,
            include_final_norm=final,
        )
        tokens = inputs.tokens
        vals = _check_values(values)
        spans, in_span = _shrink_mask(shrink, int(tokens.shape[1]), vals)

        def run() -> LinesOfThought:
            return LinesOfThought.collect(
                model,
                tokens,
                batch_size=batch_size,
                hook=hook,
                layers=blocks,
                include_final_norm=final,
                progress=False,
            )

        if plain is not None:
            if plain.layer_names != inputs.names:
                raise ValueError(
                    f"plain reads the layers {plain.layer_names}, the bases {inputs.names}"
                )
            if plain.tokens is None or not torch.equal(plain.tokens, tokens.cpu().long()):
                raise ValueError("plain must be the ensemble of these very token ids")
        else:
            plain = run()
        if bases is None:
            bases = TrajectoryBases.from_ensemble(plain)
        if not 1 <= k <= bases.rank:
            raise ValueError(f"k must be in [1, bases.rank={bases.rank}] (got {k})")
        basis = torch.stack([bases.top(t, k) for t in range(bases.n_layers)]).to(torch.float64)
        plain_coords, plain_mean, plain_norm2, plain_variance = _readouts(plain.trajectories, basis)

        dtype = torch.float64 if model.cfg.dtype == torch.float64 else torch.float32
        per_value: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
        for c in _progress(vals.tolist(), enabled=progress, total=len(vals), desc="durations"):
            row = torch.where(in_span, torch.tensor(c, dtype=dtype), torch.tensor(1.0, dtype=dtype))
            with continuous(model, Durations(row)):
                lot = run()
            per_value.append(_readouts(lot.trajectories, basis))
        stacked = [torch.stack(parts) for parts in zip(*per_value, strict=True)]
        coords, means, norm2, variance = stacked

        meta: dict[str, Any] = dict(inputs.metadata)
        meta |= {
            "n_pos": int(tokens.shape[1]),
            "durations_dtype": str(dtype),
            "bases": {
                "n_trajectories": bases.n_trajectories,
                "realigned": bases.realigned,
                "rank": bases.rank,
                **bases.metadata,
            },
        }
        return cls(
            values=vals,
            coords=coords,
            means=means,
            norm2=norm2,
            variance=variance,
            plain_coords=plain_coords,
            plain_mean=plain_mean,
            plain_norm2=plain_norm2,
            plain_variance=plain_variance,
            basis=basis,
            layer_names=list(bases.layer_names),
            shrink=spans,
            metadata=meta,
        )

    # -------------------------------------------------------------- save/load
    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tensors kept as tensors); inverse of :meth:`from_dict`."""
        out: dict[str, Any] = {name: getattr(self, name) for name in _TENSORS}
        out |= {
            "layer_names": list(self.layer_names),
            "shrink": [tuple(s) for s in self.shrink],
            "metadata": dict(self.metadata),
        }
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DurationSweepLines:
        return cls(**data)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """One safetensors file (tensors) whose header carries the JSON facts."""
        tensors = {n: getattr(self, n) for n in _TENSORS}
        fields = {"layer_names": self.layer_names, "shrink": self.shrink, "metadata": self.metadata}
        return save_tensors(path, FORMAT, VERSION, tensors, fields)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DurationSweepLines:
        """Read a file written by :meth:`save`."""
        fields, tensors = load_tensors(path, FORMAT, VERSION, "DurationSweepLines")
        with reading(path, "DurationSweepLines"):
            return cls(
                **{n: tensors[n] for n in _TENSORS},
                layer_names=fields["layer_names"],
                shrink=[tuple(s) for s in fields["shrink"]],
                metadata=fields["metadata"],
            )
