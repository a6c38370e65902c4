"""Paper B in features: lines of thought read by an SAE of one layer.

An SAE reads one hook, so it is applied where it was trained: the ensemble's pilots at the
SAE's layer ``t*`` (``x(t*)``, :attr:`LinesOfThoughtFeatures.acts`). The other layers are read
in three ways, each stated for what it is:

* **the dictionary's reach along the path**: the same SAE encoding ``x(t)`` at every layer
  ``t`` (:attr:`~LinesOfThoughtFeatures.explained_variance`, :attr:`~LinesOfThoughtFeatures.l0`
  and the mean activation of the features most active at ``t*``,
  :attr:`~LinesOfThoughtFeatures.tracked_mean`). Away from ``t*`` the inputs are outside the
  SAE's training distribution: these curves say how far along a line of thought the
  middle-layer dictionary still describes the pilot, not what the model computes there;
* **the bases' top directions in features**: the cosine of each of the top-``k`` singular
  directions ``u_i(t)`` of every layer (the plain ensemble's
  :class:`~tl_continuous.lines_of_thought.bases.TrajectoryBases`, realigned) with every
  decoder direction (unit rows of ``W_dec``) (:attr:`~LinesOfThoughtFeatures.alignment`); the
  random control, whose decoder rows are random directions, gives the chance level of the
  largest ``|cos|`` (0.14 for 2048 directions in 576 dimensions);
* **truncation in features**: the pilots at ``t*`` truncated to their layer's top-``K``
  directions (``U_K U_K^T x``, as for the KL under truncation) and encoded; the share of
  each pilot's active features that stay active (:attr:`~LinesOfThoughtFeatures.kept`),
  averaged over pilots.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_continuous._io import load_tensors, reading, save_tensors
from tl_continuous.features.quality import reconstruction_stats
from tl_continuous.features.sae import decoder_directions, encode, sae_hook_name

if TYPE_CHECKING:
    from tl_continuous.lines_of_thought.bases import TrajectoryBases
    from tl_continuous.lines_of_thought.ensemble import LinesOfThought

__all__ = ["FORMAT", "VERSION", "LinesOfThoughtFeatures"]

FORMAT = "tl_continuous.features.lines"
VERSION = 1
_TENSORS = (
    "acts",
    "explained_variance",
    "l0",
    "tracked",
    "tracked_mean",
    "alignment",
    "ks",
    "kept",
)


def _default_ks(rank: int) -> list[int]:
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256) if k < rank]
    return [*ks, rank]


@dataclass
class LinesOfThoughtFeatures:
    """An ensemble's pilots in the features of one SAE.

    Attributes:
        acts: ``[n_traj, d_sae]`` the SAE's features of each pilot at the SAE's layer.
        layer_names: the ensemble's layers (hook names).
        sae_layer: index of the SAE's hook in ``layer_names``.
        explained_variance: ``[n_layers]`` the SAE's explained variance on the pilots of each
            layer (its own layer: in distribution; others: outside it).
        l0: ``[n_layers]`` mean active features per pilot, per layer.
        tracked: ``[m]`` the features with the largest mean activation on the pilots at
            the SAE's layer, largest first.
        tracked_mean: ``[n_layers, m]`` their mean activation on the pilots of each layer.
        alignment: ``[n_layers, k, d_sae]`` cosine of the top-``k`` bases directions of each
            layer with each decoder direction.
        ks: ``[n_k]`` truncation ranks ``K``.
        kept: ``[n_k]`` mean share of a pilot's active features still active after its
            truncation to the top-``K`` directions of the SAE's layer.
        label: which SAE.
        hook_name: the SAE's hook.
        metadata: JSON-safe facts (model, ensemble size).
    """

    acts: Float[Tensor, "n_traj d_sae"]
    layer_names: list[str]
    sae_layer: int
    explained_variance: Float[Tensor, " n_layers"]
    l0: Float[Tensor, " n_layers"]
    tracked: Int[Tensor, " m"]
    tracked_mean: Float[Tensor, "n_layers m"]
    alignment: Float[Tensor, "n_layers k d_sae"]
    ks: Int[Tensor, " n_k"]
    kept: Float[Tensor, " n_k"]
    label: str
    hook_name: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.acts.ndim != 2 or self.alignment.ndim != 3:
            raise ValueError(
                "acts must be [n_traj, d_sae] and alignment [n_layers, k, d_sae] (got "
                f"{tuple(self.acts.shape)} and {tuple(self.alignment.shape)})"
            )
        n_layers = len(self.layer_names)
        d_sae = int(self.acts.shape[1])
        m = int(self.tracked.shape[0]) if self.tracked.ndim == 1 else -1
        n_k = int(self.ks.shape[0]) if self.ks.ndim == 1 else -1
        expected = {
            "explained_variance": (n_layers,),
            "l0": (n_layers,),
            "tracked_mean": (n_layers, m),
            "alignment": (n_layers, int(self.alignment.shape[1]), d_sae),
            "kept": (n_k,),
        }
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"{name} must have shape {shape} (got {got})")
        if self.tracked.is_floating_point() or self.ks.is_floating_point():
            raise TypeError("tracked and ks must be integer tensors")
        if not 0 <= self.sae_layer < n_layers:
            raise ValueError(f"sae_layer must index layer_names (got {self.sae_layer})")
        if self.layer_names[self.sae_layer] != self.hook_name:
            raise ValueError(
                f"layer_names[{self.sae_layer}] is {self.layer_names[self.sae_layer]!r}, not "
                f"the SAE's hook {self.hook_name!r}"
            )

    @property
    def n_layers(self) -> int:
        return len(self.layer_names)

    @property
    def k(self) -> int:
        """Top bases directions per layer in :attr:`alignment`."""
        return int(self.alignment.shape[1])

    @property
    def d_sae(self) -> int:
        return int(self.acts.shape[1])

    # ------------------------------------------------------------------ constructor
    @classmethod
    def from_ensemble(
        cls,
        lot: LinesOfThought,
        bases: TrajectoryBases,
        sae: Any,
        *,
        label: str,
        k: int = 8,
        m: int = 12,
        ks: Sequence[int] | None = None,
    ) -> LinesOfThoughtFeatures:
        """Read an ensemble (and its bases) with ``sae``.

        Args:
            lot: the ensemble; it must read the SAE's hook at one of its layers.
            bases: the ensemble's bases (same layers).
            sae: the SAE.
            label: recorded with the result (``"trained"``, ``"random init (seed 0)"``).
            k: top bases directions per layer compared with the decoder.
            m: features tracked along the layers.
            ks: truncation ranks (default: powers of two below the bases' rank, then the rank).

        Raises:
            ValueError: the ensemble does not read the SAE's hook, the bases' layers differ,
                or ``k``, ``m``, ``ks`` are out of range.
        """
        hook = sae_hook_name(sae)
        if hook not in lot.layer_names:
            raise ValueError(
                f"lot must read the SAE's hook {hook!r} (its layers: {lot.layer_names})"
            )
        if list(bases.layer_names) != list(lot.layer_names):
            raise ValueError("bases must be the bases of lot (same layer_names)")
        if not 1 <= k <= bases.rank:
            raise ValueError(f"k must be in [1, bases.rank={bases.rank}] (got {k})")
        if not 1 <= m <= int(sae.cfg.d_sae):
            raise ValueError(f"m must be in [1, d_sae={sae.cfg.d_sae}] (got {m})")
        grid = _default_ks(bases.rank) if ks is None else [int(x) for x in ks]
        if not grid or min(grid) < 1 or max(grid) > bases.rank:
            raise ValueError(f"ks must be ranks in [1, {bases.rank}] (got {list(grid)})")
        t_star = lot.layer_index(hook)
        x_star = lot.trajectories[:, t_star]
        acts = encode(sae, x_star)
        tracked = acts.mean(dim=0).argsort(descending=True)[:m]
        ev, l0, tracked_mean = [], [], []
        for t in range(lot.n_layers):
            x = lot.trajectories[:, t]
            stats = reconstruction_stats(sae, x)
            ev.append(stats["explained_variance"])
            l0.append(stats["l0"])
            tracked_mean.append((acts if t == t_star else encode(sae, x)).mean(dim=0)[tracked])
        directions = decoder_directions(sae)  # [d_sae, d_model]
        tops = torch.stack([bases.top(t, k) for t in range(bases.n_layers)])  # [L, D, k]
        alignment = torch.einsum("ldk,fd->lkf", tops.to(torch.float64), directions)
        active = acts != 0
        kept = []
        for big_k in grid:
            truncated = encode(sae, bases.project(x_star, t_star, big_k))
            both = (active & (truncated != 0)).sum(dim=1).to(torch.float64)
            kept.append((both / active.sum(dim=1).clamp(min=1)).mean())
        return cls(
            acts=acts,
            layer_names=list(lot.layer_names),
            sae_layer=t_star,
            explained_variance=torch.tensor(ev, dtype=torch.float64),
            l0=torch.tensor(l0, dtype=torch.float64),
            tracked=tracked,
            tracked_mean=torch.stack(tracked_mean),
            alignment=alignment.to(torch.float32),
            ks=torch.tensor(grid),
            kept=torch.stack(kept),
            label=label,
            hook_name=hook,
            metadata={
                "n_trajectories": lot.n_trajectories,
                "model_name": lot.metadata.get("model_name"),
            },
        )

    # ------------------------------------------------------------------ readouts
    def max_alignment(self) -> tuple[Float[Tensor, "n_layers k"], Int[Tensor, "n_layers k"]]:
        """The largest ``|cos|`` of each top direction with a decoder direction, and that
        feature, per layer."""
        best = self.alignment.abs().max(dim=-1)
        return best.values, best.indices

    def firing_fraction(self) -> Float[Tensor, " d_sae"]:
        """Share of the pilots (at the SAE's layer) on which each feature is active."""
        return (self.acts != 0).to(torch.float64).mean(dim=0)

    def summary(self) -> dict[str, Any]:
        """JSON-safe readouts: per-layer explained variance and L0; at the SAE's layer, the
        tracked features with their mean activation and firing fraction, the best-aligned
        feature of each top direction; the mean best ``|cos|`` per layer; ``kept`` per K."""
        best, which = self.max_alignment()
        mean_acts = self.acts.mean(dim=0)
        fired = self.firing_fraction()
        t = self.sae_layer
        return {
            "label": self.label,
            "hook_name": self.hook_name,
            "sae_layer_index": t,
            "n_trajectories": int(self.acts.shape[0]),
            "features_active_on_some_pilot": int((fired > 0).sum()),
            "l0_at_sae_layer": float(self.l0[t]),
            "explained_variance": [float(x) for x in self.explained_variance],
            "tracked": [
                {
                    "feature": int(f),
                    "mean_act": float(mean_acts[f]),
                    "firing_fraction": float(fired[f]),
                }
                for f in self.tracked.tolist()
            ],
            "top_directions_at_sae_layer": [
                {"direction": i + 1, "feature": int(which[t, i]), "abs_cos": float(best[t, i])}
                for i in range(self.k)
            ],
            "mean_best_abs_cos_per_layer": [float(x) for x in best.mean(dim=1)],
            "kept": {int(k): float(v) for k, v in zip(self.ks, self.kept, strict=True)},
        }

    # ------------------------------------------------------------------ save/load
    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tensors kept); inverse of :meth:`from_dict`."""
        out: dict[str, Any] = {name: getattr(self, name) for name in _TENSORS}
        return out | {
            "layer_names": list(self.layer_names),
            "sae_layer": self.sae_layer,
            "label": self.label,
            "hook_name": self.hook_name,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinesOfThoughtFeatures:
        return cls(**data)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """One safetensors file whose header carries the JSON facts."""
        fields = {k: v for k, v in self.to_dict().items() if k not in _TENSORS}
        return save_tensors(path, FORMAT, VERSION, {n: getattr(self, n) for n in _TENSORS}, fields)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LinesOfThoughtFeatures:
        """Read a file written by :meth:`save`."""
        fields, tensors = load_tensors(path, FORMAT, VERSION, "LinesOfThoughtFeatures")
        with reading(path, "LinesOfThoughtFeatures"):
            return cls(
                **{n: tensors[n] for n in _TENSORS},
                layer_names=fields["layer_names"],
                sae_layer=int(fields["sae_layer"]),
                label=fields["label"],
                hook_name=fields["hook_name"],
                metadata=fields["metadata"],
            )
