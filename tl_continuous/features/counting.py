"""Paper A in features: the SAE features of the counting prompt as the repetitions shrink.

The prompt is the counting experiment's
(:data:`~tl_continuous.experiments.prompts.COUNTING_TEMPLATE`): a word repeated ``n`` times,
every token of the repetitions at duration ``c`` (the span of
:func:`~tl_continuous.experiments.prompts.counting_prompt`, located by
:func:`~tl_continuous.experiments.prompts.token_span`; durations by
:meth:`Durations.from_spans <tl_continuous.continuous.durations.Durations.from_spans>`). For
each ``c`` the residual stream at the SAE's hook is read at the last token (where the model
answers) and on the repeated span, and encoded by the SAE. The same prompt with ``m = 1, 2,
...`` plain repetitions (every duration 1) gives the features of the discrete counts.

Readouts, all per feature, nothing selected by hand:

* total variation along ``c`` (the sum of ``|a(c_{i+1}) - a(c_i)|`` over the grid): which
  features change most as the repetitions shrink;
* the Pearson correlation of the activation with ``c`` (how it moves with ``c``) and with the
  discrete count ``m`` (whether it tracks the count: :meth:`CountFeatures.count_tracking`
  keeps features active at some count with ``|r| >= 0.9``);
* the nearest count: for each ``c``, the ``m`` whose last-token feature vector is closest
  (Euclidean, every feature) to the one at ``c``; the same readout on the raw residuals
  (:attr:`CountFeatures.residual_nearest`) is the reference without an SAE.

:func:`count_residuals` runs the model once; :meth:`CountFeatures.from_residuals` encodes the
residuals with any SAE, so the trained SAE and its random control read the very same
activations.
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
from tl_continuous.features.activations import residuals_at
from tl_continuous.features.sae import encode, sae_hook_name

if TYPE_CHECKING:
    from tl_continuous.backends.base import Model

__all__ = ["FORMAT", "VERSION", "CountFeatures", "CountResiduals", "count_residuals"]

FORMAT = "tl_continuous.features.counting"
VERSION = 1
_TENSORS = ("values", "last", "span_mean", "counts", "count_last", "residual_nearest")


def _nearest(
    rows: Float[Tensor, "n_values d"], refs: Float[Tensor, "n_counts d"], counts: Tensor
) -> Tensor:
    """For each row, the count whose reference row is closest (Euclidean, float64)."""
    dist = torch.cdist(rows.to(torch.float64), refs.to(torch.float64))
    return counts[dist.argmin(dim=1)]


@dataclass
class CountResiduals:
    """The residuals of the counting prompt at one hook (the model's side; not saved).

    Attributes:
        values: ``[n_values]`` the durations ``c`` of the repeated span.
        last: ``[n_values, d_model]`` residual at the last token per ``c``.
        span: ``[n_values, n_span, d_model]`` residuals of the repeated tokens per ``c``.
        counts: ``[n_counts]`` the plain repetition counts ``m``.
        count_last: ``[n_counts, d_model]`` residual at the last token with ``m`` plain
            repetitions.
        hook_name: where the residuals were read.
        word, n: the repeated word and the repetitions of the swept prompt.
        prompt: the swept prompt.
        token_span: its repeated tokens ``(first, last)``, inclusive.
    """

    values: Float[Tensor, " n_values"]
    last: Float[Tensor, "n_values d_model"]
    span: Float[Tensor, "n_values n_span d_model"]
    counts: Int[Tensor, " n_counts"]
    count_last: Float[Tensor, "n_counts d_model"]
    hook_name: str
    word: str
    n: int
    prompt: str
    token_span: tuple[int, int]


def count_residuals(
    model: Model,
    hook_name: str,
    *,
    word: str = "apple",
    n: int = 4,
    values: Sequence[float] | Float[Tensor, " n_values"] | None = None,
    counts: Sequence[int] = (1, 2, 3, 4, 5),
    batch_size: int = 25,
) -> CountResiduals:
    """Run the counting prompt under every ``c`` and with every plain count ``m``.

    Args:
        model: a model with a tokenizer, either backend.
        hook_name: the hook to read (an SAE's ``cfg.metadata.hook_name``).
        word: the repeated word.
        n: repetitions in the swept prompt.
        values: durations ``c`` of the repeated span (default ``linspace(0.1, 1, 37)``),
            finite and ``> 0``.
        counts: plain repetition counts ``m >= 1``.
        batch_size: rows per forward pass.

    Raises:
        ValueError: bad ``values`` or ``counts``, a model without a tokenizer.
    """
    from tl_continuous.continuous.durations import Durations
    from tl_continuous.continuous.signal import continuous
    from tl_continuous.experiments.prompts import counting_prompt, token_span

    grid = torch.linspace(0.1, 1.0, 37) if values is None else torch.as_tensor(values)
    grid = grid.to(torch.float64).flatten()
    if grid.numel() < 2 or not bool(torch.isfinite(grid).all()) or bool((grid <= 0).any()):
        raise ValueError(
            f"values must hold at least two finite durations > 0 (got {grid.tolist()})"
        )
    ms = [int(m) for m in counts]
    if not ms or min(ms) < 1 or len(set(ms)) != len(ms):
        raise ValueError(f"counts must be distinct integers >= 1 (got {list(counts)})")
    if model.tokenizer is None:
        raise ValueError("model must have a tokenizer (the counting prompt is text)")
    prompt, chars = counting_prompt(word, n)
    first, last = token_span(model, prompt, *chars)
    tokens = model.to_tokens(prompt)
    n_pos = int(tokens.shape[1])
    durations = Durations.from_spans(n_pos, [(first, last)], value=grid.to(torch.float32)).values
    lasts, spans = [], []
    for i in range(0, grid.numel(), batch_size):
        rows = durations[i : i + batch_size]
        with continuous(model, Durations(rows)):
            batch = tokens.expand(rows.shape[0], -1)
            acts = residuals_at(model, batch, hook_name, batch_size=int(rows.shape[0]))
        lasts.append(acts[:, -1])
        spans.append(acts[:, first : last + 1])
    plain = []
    for m in ms:
        acts = residuals_at(model, model.to_tokens(counting_prompt(word, m)[0]), hook_name)
        plain.append(acts[0, -1])
    return CountResiduals(
        values=grid,
        last=torch.cat(lasts),
        span=torch.cat(spans),
        counts=torch.tensor(ms),
        count_last=torch.stack(plain),
        hook_name=hook_name,
        word=word,
        n=int(n),
        prompt=prompt,
        token_span=(first, last),
    )


def _correlation(a: Float[Tensor, "n f"], b: Float[Tensor, " n"]) -> Float[Tensor, " f"]:
    """Pearson correlation of each column of ``a`` with ``b``; 0 where a column is constant."""
    a = a.to(torch.float64) - a.to(torch.float64).mean(dim=0)
    b = b.to(torch.float64) - b.to(torch.float64).mean()
    den = a.norm(dim=0) * b.norm()
    out = (a * b[:, None]).sum(dim=0) / den.clamp(min=1e-300)
    return torch.where(a.norm(dim=0) > 1e-12, out, torch.zeros_like(out))


@dataclass
class CountFeatures:
    """SAE features of the counting prompt along the duration sweep and over plain counts.

    Attributes:
        values: ``[n_values]`` the durations ``c``.
        last: ``[n_values, d_sae]`` features at the last token per ``c``.
        span_mean: ``[n_values, d_sae]`` features averaged over the repeated tokens per ``c``.
        counts: ``[n_counts]`` the plain counts ``m``.
        count_last: ``[n_counts, d_sae]`` features at the last token with ``m`` repetitions.
        residual_nearest: ``[n_values]`` the nearest count in residual space (no SAE).
        label: which SAE (``"trained"``, ``"random init (seed 0)"``).
        hook_name: where the SAE reads the model.
        word, n: the repeated word and the swept prompt's repetitions.
        token_span: the repeated tokens ``(first, last)`` of the swept prompt.
        metadata: JSON-safe facts (prompt, model).
    """

    values: Float[Tensor, " n_values"]
    last: Float[Tensor, "n_values d_sae"]
    span_mean: Float[Tensor, "n_values d_sae"]
    counts: Int[Tensor, " n_counts"]
    count_last: Float[Tensor, "n_counts d_sae"]
    residual_nearest: Int[Tensor, " n_values"]
    label: str
    hook_name: str
    word: str
    n: int
    token_span: tuple[int, int]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.values.ndim != 1 or self.last.ndim != 2:
            raise ValueError(
                "values must be [n_values] and last [n_values, d_sae] (got "
                f"{tuple(self.values.shape)} and {tuple(self.last.shape)})"
            )
        v, f = self.last.shape
        c = int(self.counts.shape[0]) if self.counts.ndim == 1 else -1
        expected = {
            "values": (v,),
            "span_mean": (v, f),
            "counts": (c,),
            "count_last": (c, f),
            "residual_nearest": (v,),
        }
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"{name} must have shape {shape} (got {got})")
        if self.counts.is_floating_point() or self.residual_nearest.is_floating_point():
            raise TypeError("counts and residual_nearest must be integer tensors")
        self.token_span = (int(self.token_span[0]), int(self.token_span[1]))

    @property
    def d_sae(self) -> int:
        return int(self.last.shape[1])

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_residuals(cls, residuals: CountResiduals, sae: Any, *, label: str) -> CountFeatures:
        """Encode the residuals with ``sae`` (:func:`~tl_continuous.features.sae.encode`).

        Raises:
            ValueError: the SAE reads another hook than the residuals were read at.
        """
        if sae_hook_name(sae) != residuals.hook_name:
            raise ValueError(
                f"sae reads {sae_hook_name(sae)!r} but the residuals come from "
                f"{residuals.hook_name!r}"
            )
        return cls(
            values=residuals.values,
            last=encode(sae, residuals.last),
            span_mean=encode(sae, residuals.span).mean(dim=1),
            counts=residuals.counts,
            count_last=encode(sae, residuals.count_last),
            residual_nearest=_nearest(residuals.last, residuals.count_last, residuals.counts),
            label=label,
            hook_name=residuals.hook_name,
            word=residuals.word,
            n=residuals.n,
            token_span=residuals.token_span,
            metadata={"prompt": residuals.prompt},
        )

    @classmethod
    def collect(
        cls, model: Model, sae: Any, *, label: str = "trained", **kwargs: Any
    ) -> CountFeatures:
        """:func:`count_residuals` at the SAE's hook, then :meth:`from_residuals`.

        Args:
            model: a model with a tokenizer.
            sae: the SAE.
            label: recorded with the result.
            **kwargs: ``word``, ``n``, ``values``, ``counts``, ``batch_size`` of
                :func:`count_residuals`.
        """
        residuals = count_residuals(model, sae_hook_name(sae), **kwargs)
        out = cls.from_residuals(residuals, sae, label=label)
        out.metadata["model_name"] = str(model.cfg.model_name)
        return out

    # ------------------------------------------------------------------ readouts
    def variation(self, where: str = "last") -> Float[Tensor, " d_sae"]:
        """Total variation of each feature along ``c`` (``where``: ``"last"`` or ``"span"``)."""
        acts = self._acts(where).to(torch.float64)
        order = self.values.argsort()
        return acts[order].diff(dim=0).abs().sum(dim=0)

    def top_varying(self, m: int = 10, where: str = "last") -> Int[Tensor, " m"]:
        """The ``m`` features with the largest total variation along ``c``, largest first."""
        if m < 1:
            raise ValueError(f"m must be a positive integer (got {m})")
        return self.variation(where).argsort(descending=True)[: min(m, self.d_sae)]

    def c_correlation(self, where: str = "last") -> Float[Tensor, " d_sae"]:
        """Pearson correlation of each feature with ``c`` (0 for a feature constant in ``c``)."""
        return _correlation(self._acts(where), self.values)

    def count_correlation(self) -> Float[Tensor, " d_sae"]:
        """Pearson correlation of each feature's last-token activation with the count ``m``."""
        return _correlation(self.count_last, self.counts.to(torch.float64))

    def count_tracking(self, threshold: float = 0.9) -> Int[Tensor, " k"]:
        """Features active at some plain count whose activation correlates with the count at
        ``|r| >= threshold``, strongest first."""
        r = self.count_correlation()
        active = (self.count_last != 0).any(dim=0)
        idx = torch.nonzero(active & (r.abs() >= threshold)).flatten()
        return idx[r[idx].abs().argsort(descending=True)]

    def nearest_count(self) -> Int[Tensor, " n_values"]:
        """For each ``c``, the plain count whose last-token features are closest."""
        return _nearest(self.last, self.count_last, self.counts)

    def _acts(self, where: str) -> Tensor:
        if where == "last":
            return self.last
        if where == "span":
            return self.span_mean
        raise ValueError(f"where must be 'last' or 'span' (got {where!r})")

    def summary(self, m: int = 8) -> dict[str, Any]:
        """JSON-safe readouts: the ``m`` features varying most along ``c`` at the last token,
        each with its variation, correlation with ``c`` and with the count, activation at the
        smallest and largest ``c``; the count-tracking features; nearest counts per ``c``."""
        var, rc, rm = self.variation(), self.c_correlation(), self.count_correlation()
        lo, hi = int(self.values.argmin()), int(self.values.argmax())
        tracking = self.count_tracking()
        top = self.top_varying(m)
        active = (self.last != 0).any(dim=0)
        return {
            "label": self.label,
            "word": self.word,
            "n": self.n,
            "values": [float(self.values.min()), float(self.values.max()), len(self.values)],
            "active_features_last": int(active.sum()),
            "top_varying": [
                {
                    "feature": int(f),
                    "variation": float(var[f]),
                    "corr_c": float(rc[f]),
                    "corr_count": float(rm[f]),
                    "act_c_min": float(self.last[lo, f]),
                    "act_c_max": float(self.last[hi, f]),
                    "tracks_count": bool((tracking == f).any()),
                }
                for f in top.tolist()
            ],
            "count_tracking": tracking.tolist(),
            "top_varying_tracking_count": int(torch.isin(top, tracking).sum()),
            "nearest_count": self.nearest_count().tolist(),
            "residual_nearest_count": self.residual_nearest.tolist(),
        }

    # ------------------------------------------------------------------ save/load
    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tensors kept); inverse of :meth:`from_dict`."""
        out: dict[str, Any] = {name: getattr(self, name) for name in _TENSORS}
        return out | {
            "label": self.label,
            "hook_name": self.hook_name,
            "word": self.word,
            "n": self.n,
            "token_span": self.token_span,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CountFeatures:
        return cls(**data)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """One safetensors file whose header carries the JSON facts."""
        fields = {k: v for k, v in self.to_dict().items() if k not in _TENSORS}
        return save_tensors(path, FORMAT, VERSION, {n: getattr(self, n) for n in _TENSORS}, fields)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CountFeatures:
        """Read a file written by :meth:`save`."""
        fields, tensors = load_tensors(path, FORMAT, VERSION, "CountFeatures")
        with reading(path, "CountFeatures"):
            return cls(
                **{n: tensors[n] for n in _TENSORS},
                label=fields["label"],
                hook_name=fields["hook_name"],
                word=fields["word"],
                n=int(fields["n"]),
                token_span=tuple(fields["token_span"]),
                metadata=fields["metadata"],
            )
