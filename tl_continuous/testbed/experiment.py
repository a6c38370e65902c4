"""The continuity experiment on the counting testbed: does E[count] track summed durations?

Prompts with ``n`` copies of the target are run with every target copy at duration ``c``
(everything else at 1) through :func:`tl_continuous.continuous`. The readout is the
next-token distribution after the prompt restricted to the count tokens ``0``..``9`` and
renormalised (the mass the full softmax puts on count tokens is kept as ``count_mass``).
A model that reads durations as the paper describes should answer about ``n·c``; one that
ignores them answers ``n``. Variants:

* ``"full"``: duration-weighted attention and real positions (the mechanism);
* ``"attention-only"``: duration-weighted attention, integer positions;
* ``"positions-only"``: real positions, plain attention;
* ``"fillers"``: the full mechanism with duration ``c`` on the filler tokens instead.

A second part gives the ``n`` targets *uneven* random durations and compares E[count] with
their sum, and with the same prompt at the even duration ``sum / n``.

>>> result = CountingContinuityResult.from_model(
...     load_testbed(), ns=[2], cs=[0.5, 1.0], n_prompts=1, uneven_trials=1, progress=False
... )  # doctest: +SKIP
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_continuous._io import load_json, reading, save_json
from tl_continuous._progress import progress as progress_iter
from tl_continuous.backends.base import Model
from tl_continuous.testbed.model import load_testbed
from tl_continuous.testbed.task import VOCAB, CountingExample, CountingTask

__all__ = [
    "DEFAULT_CS",
    "FORMAT",
    "VARIANTS",
    "VERSION",
    "CountingContinuityResult",
    "Variant",
    "count_distribution",
    "experiment_prompts",
]

FORMAT = "tl_continuous.testbed.counting_continuity"
VERSION = 1

DEFAULT_CS: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(1, 21))
"""Durations 0.1, 0.2, ..., 2.0."""


@dataclass(frozen=True)
class Variant:
    """Where the durations go and which half of the mechanism is on."""

    on: str  # "targets" or "fillers"
    attention: bool
    positions: bool


VARIANTS: dict[str, Variant] = {
    "full": Variant("targets", attention=True, positions=True),
    "attention-only": Variant("targets", attention=True, positions=False),
    "positions-only": Variant("targets", attention=False, positions=True),
    "fillers": Variant("fillers", attention=True, positions=True),
}


def _continuous_logits(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    values: Float[Tensor, "batch pos"],
    attention: bool,
    positions: bool,
) -> Float[Tensor, "batch pos vocab"]:
    """Run the model with durations through the plugin's mechanism (the one seam tests patch)."""
    from tl_continuous.continuous.durations import Durations
    from tl_continuous.continuous.signal import continuous

    with continuous(model, Durations(values), attention=attention, positions=positions):
        return model(tokens)


@torch.no_grad()
def count_distribution(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    values: Float[Tensor, "batch pos"],
    *,
    attention: bool = True,
    positions: bool = True,
) -> tuple[Float[Tensor, "batch count"], Float[Tensor, " batch"]]:
    """Distribution over counts 0..9 after each prompt, and the mass the softmax puts on them.

    Args:
        model: the testbed model (any model whose vocabulary is :data:`~.task.VOCAB`).
        tokens: prompts of equal length ending with ``how-many <target>``.
        values: per-token durations (``1`` everywhere is the discrete model).
        attention, positions: which half of the mechanism to switch on.

    Returns:
        ``(probs, mass)``: ``probs`` renormalised over the ten count tokens; ``mass`` their
        share of the full next-token distribution.
    """
    if tokens.shape != values.shape:
        raise ValueError(
            f"values must have the shape of tokens {tuple(tokens.shape)} "
            f"(got {tuple(values.shape)})"
        )
    logits = _continuous_logits(model, tokens, values, attention, positions)
    full = logits[:, -1].float().log_softmax(-1)
    counts = full[:, VOCAB.count_ids]
    return counts.softmax(-1), counts.logsumexp(-1).exp()


def experiment_prompts(
    n: int, n_prompts: int, rng: random.Random, task: CountingTask | None = None
) -> list[CountingExample]:
    """``n_prompts`` prompts with ``n`` targets, each with at least two filler tokens.

    >>> prompts = experiment_prompts(3, 2, random.Random(0))
    >>> [p.count for p in prompts]
    [3, 3]
    """
    task = task or CountingTask()
    fillers = set(VOCAB.filler_ids)
    prompts: list[CountingExample] = []
    while len(prompts) < n_prompts:
        example = task.sample(rng, count=n)
        if sum(t in fillers for t in example.tokens) >= 2:
            prompts.append(example)
    return prompts


def _positions_of(example: CountingExample, on: str) -> list[int]:
    if on == "targets":
        return list(example.target_positions)
    fillers = set(VOCAB.filler_ids)
    return [i for i, t in enumerate(example.tokens) if t in fillers]


@dataclass
class CountingContinuityResult:
    """E[count] of the testbed under durations: grids, variants and the uneven-duration test.

    Attributes:
        ns: target counts ``n``.
        cs: durations ``c`` given to each target copy.
        variants: names from :data:`VARIANTS`, in the order of ``probs``' first axis.
        probs: mean over prompts of the distribution over counts 0..9.
        expected_std: standard deviation over prompts of E[count].
        count_mass: mean share of the full softmax on the count tokens.
        uneven_n: number of targets in each uneven trial.
        uneven_sum: sum of the trial's random target durations.
        uneven_expected: E[count] with those uneven durations.
        even_expected: E[count] of the same prompt with every target at ``sum / n``.
        n_prompts: prompts per ``n``.
        seed: seed of the prompts and uneven durations.
        model_name: ``model.cfg.model_name``.
    """

    ns: list[int]
    cs: list[float]
    variants: list[str]
    probs: Float[Tensor, "variant n c count"]
    expected_std: Float[Tensor, "variant n c"]
    count_mass: Float[Tensor, "variant n c"]
    uneven_n: list[int]
    uneven_sum: Float[Tensor, " trial"]
    uneven_expected: Float[Tensor, " trial"]
    even_expected: Float[Tensor, " trial"]
    n_prompts: int
    seed: int
    model_name: str = "counting-testbed"
    max_count: int = field(default=9)

    def __post_init__(self) -> None:
        shape = (len(self.variants), len(self.ns), len(self.cs), self.max_count + 1)
        if tuple(self.probs.shape) != shape:
            raise ValueError(f"probs must have shape {shape} (got {tuple(self.probs.shape)})")
        for name in ("expected_std", "count_mass"):
            if tuple(getattr(self, name).shape) != shape[:3]:
                raise ValueError(f"{name} must have shape {shape[:3]}")
        for name in ("uneven_sum", "uneven_expected", "even_expected"):
            if len(getattr(self, name)) != len(self.uneven_n):
                raise ValueError(f"{name} must have one entry per uneven trial")
        unknown = set(self.variants) - set(VARIANTS)
        if unknown:
            raise ValueError(f"variants must be names from VARIANTS (got {sorted(unknown)})")

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_model(
        cls,
        model: Model | None = None,
        *,
        ns: Sequence[int] = tuple(range(1, 9)),
        cs: Sequence[float] = DEFAULT_CS,
        variants: Sequence[str] = tuple(VARIANTS),
        n_prompts: int = 16,
        uneven_trials: int = 64,
        uneven_range: tuple[float, float] = (0.25, 1.75),
        seed: int = 0,
        progress: bool = True,
    ) -> CountingContinuityResult:
        """Run the experiment (default model: the shipped testbed checkpoint).

        Args:
            model: a model over :data:`~.task.VOCAB`.
            ns: target counts.
            cs: durations of each target copy.
            variants: which of :data:`VARIANTS` to run.
            n_prompts: random prompts per ``n`` (contiguous and scattered targets, ≥ 2
                fillers); results are means over them.
            uneven_trials: prompts whose targets get independent durations drawn uniformly
                from ``uneven_range``; ``n`` cycles through ``ns``.
            uneven_range: the range of those durations.
            seed: seed of prompts and durations.
            progress: show a tqdm bar.
        """
        model = model if model is not None else load_testbed()
        if not ns or not cs:
            raise ValueError("ns and cs must be non-empty")
        if min(cs) < 0:
            raise ValueError(f"cs must be >= 0 (got {min(cs)})")
        bad_n = [n for n in ns if not 0 <= n <= 9]
        if bad_n:
            raise ValueError(f"ns must lie in 0..9 (got {bad_n})")
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"variants must be names from {sorted(VARIANTS)} (got {unknown})")
        rng = random.Random(seed)
        prompts = {n: experiment_prompts(n, n_prompts, rng) for n in ns}
        c = torch.tensor(list(cs), dtype=torch.float32)
        probs = torch.zeros(len(variants), len(ns), len(cs), 10)
        std = torch.zeros(len(variants), len(ns), len(cs))
        mass = torch.zeros(len(variants), len(ns), len(cs))
        counts = torch.arange(10, dtype=torch.float32)
        jobs = [(v, i) for v in range(len(variants)) for i in range(len(ns))]
        for v, i in progress_iter(jobs, enabled=progress, desc="counting testbed"):
            variant = VARIANTS[variants[v]]
            per_prompt, per_mass = [], []
            for example in prompts[ns[i]]:
                tokens = torch.tensor([example.tokens]).expand(len(cs), -1)
                values = torch.ones(len(cs), len(example.tokens))
                values[:, _positions_of(example, variant.on)] = c[:, None]
                p, m = count_distribution(
                    model,
                    tokens,
                    values.to(model.cfg.device),
                    attention=variant.attention,
                    positions=variant.positions,
                )
                per_prompt.append(p.cpu())
                per_mass.append(m.cpu())
            stacked = torch.stack(per_prompt)  # prompt c count
            probs[v, i] = stacked.mean(0)
            std[v, i] = (stacked * counts).sum(-1).std(0, unbiased=False)
            mass[v, i] = torch.stack(per_mass).mean(0)

        uneven_n, sums, uneven, even = [], [], [], []
        low, high = uneven_range
        for t in range(uneven_trials):
            n = [n for n in ns if n > 0][t % len([n for n in ns if n > 0])]
            example = experiment_prompts(n, 1, rng)[0]
            durations = [rng.uniform(low, high) for _ in range(n)]
            values = torch.ones(2, len(example.tokens))
            values[0, list(example.target_positions)] = torch.tensor(durations)
            values[1, list(example.target_positions)] = sum(durations) / n
            tokens = torch.tensor([example.tokens]).expand(2, -1)
            p, _ = count_distribution(model, tokens, values.to(model.cfg.device))
            e = (p.cpu() * counts).sum(-1)
            uneven_n.append(n)
            sums.append(sum(durations))
            uneven.append(float(e[0]))
            even.append(float(e[1]))
        return cls(
            ns=list(ns),
            cs=[float(x) for x in cs],
            variants=list(variants),
            probs=probs,
            expected_std=std,
            count_mass=mass,
            uneven_n=uneven_n,
            uneven_sum=torch.tensor(sums),
            uneven_expected=torch.tensor(uneven),
            even_expected=torch.tensor(even),
            n_prompts=n_prompts,
            seed=seed,
            model_name=str(model.cfg.model_name),
        )

    # ----------------------------------------------------------------- readouts
    def _index(self, variant: str) -> int:
        if variant not in self.variants:
            raise ValueError(f"variant must be one of {self.variants} (got {variant!r})")
        return self.variants.index(variant)

    @property
    def expected(self) -> Float[Tensor, "variant n c"]:
        """E[count] (mean over prompts)."""
        return (self.probs * torch.arange(self.max_count + 1, dtype=self.probs.dtype)).sum(-1)

    @property
    def argmax(self) -> Int[Tensor, "variant n c"]:
        """The most likely count of the mean distribution."""
        return self.probs.argmax(-1)

    @property
    def target(self) -> Float[Tensor, "n c"]:
        """``n·c`` clipped to the trained range ``0..max_count``."""
        n = torch.tensor(self.ns, dtype=torch.float32)[:, None]
        c = torch.tensor(self.cs, dtype=torch.float32)[None, :]
        return (n * c).clamp(0, self.max_count)

    def mae(self, variant: str = "full") -> float:
        """Mean absolute error of E[count] against clipped ``n·c`` over the grid."""
        return float((self.expected[self._index(variant)] - self.target).abs().mean())

    def ignoring_durations_mae(self) -> float:
        """The same error for a model that ignores durations (always answers ``n``)."""
        n = torch.tensor(self.ns, dtype=torch.float32)[:, None].expand_as(self.target)
        return float((n - self.target).abs().mean())

    def monotonicity(self, variant: str = "full", tol: float = 0.0) -> float:
        """Share of adjacent ``c`` steps (per ``n``) along which E[count] does not fall by
        more than ``tol``; ``cs`` are taken in increasing order."""
        order = torch.tensor(self.cs).argsort()
        e = self.expected[self._index(variant)][:, order]
        steps = e[:, 1:] - e[:, :-1]
        return float((steps >= -tol).float().mean())

    def largest_drop(self, variant: str = "full") -> float:
        """The largest decrease of E[count] between adjacent ``c`` (0 if monotone)."""
        order = torch.tensor(self.cs).argsort()
        e = self.expected[self._index(variant)][:, order]
        return float((e[:, :-1] - e[:, 1:]).clamp(min=0).max())

    def argmax_agreement(self, variant: str = "full") -> float:
        """Share of grid points whose argmax count equals ``round(clip(n·c))``."""
        hit = self.argmax[self._index(variant)] == torch.round(self.target).long()
        return float(hit.float().mean())

    def uneven_mae(self) -> tuple[float, float]:
        """``(|E_uneven - clip(sum)|, |E_uneven - E_even|)``, each averaged over trials."""
        total = self.uneven_sum.clamp(0, self.max_count)
        return (
            float((self.uneven_expected - total).abs().mean()),
            float((self.uneven_expected - self.even_expected).abs().mean()),
        )

    def summary(self) -> dict[str, Any]:
        """The headline numbers, per variant."""
        per_variant = {
            v: {
                "mae": self.mae(v),
                "monotone_share": self.monotonicity(v),
                "monotone_share_tol_0.05": self.monotonicity(v, tol=0.05),
                "largest_drop": self.largest_drop(v),
                "argmax_agreement": self.argmax_agreement(v),
                "min_count_mass": float(self.count_mass[self._index(v)].min()),
            }
            for v in self.variants
        }
        vs_sum, vs_even = self.uneven_mae()
        return {
            "variants": per_variant,
            "ignoring_durations_mae": self.ignoring_durations_mae(),
            "uneven_mae_vs_sum": vs_sum,
            "uneven_mae_vs_even_same_sum": vs_even,
            "grid": {"ns": self.ns, "cs": self.cs, "n_prompts": self.n_prompts},
        }

    # ----------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able contents."""
        return {
            "ns": self.ns,
            "cs": self.cs,
            "variants": self.variants,
            "probs": self.probs.tolist(),
            "expected_std": self.expected_std.tolist(),
            "count_mass": self.count_mass.tolist(),
            "uneven_n": self.uneven_n,
            "uneven_sum": self.uneven_sum.tolist(),
            "uneven_expected": self.uneven_expected.tolist(),
            "even_expected": self.even_expected.tolist(),
            "n_prompts": self.n_prompts,
            "seed": self.seed,
            "model_name": self.model_name,
            "max_count": self.max_count,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CountingContinuityResult:
        """Inverse of :meth:`to_dict`."""
        tensors = (
            "probs",
            "expected_std",
            "count_mass",
            "uneven_sum",
            "uneven_expected",
            "even_expected",
        )
        kwargs = dict(data)
        for name in tensors:
            kwargs[name] = torch.tensor(data[name], dtype=torch.float32)
        return cls(**kwargs)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as tagged JSON, atomically; returns the path.

        JSON rather than safetensors: the tensors are a small grid of readouts (float32 values
        survive the round trip exactly) and the report publishes the file for people to read.
        """
        return save_json(path, FORMAT, VERSION, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CountingContinuityResult:
        """Read a result written by :meth:`save`.

        Raises:
            FileNotFoundError: no file at ``path``.
            FormatError: the file is damaged or holds another result type or version.
        """
        data = load_json(path, FORMAT, VERSION, "CountingContinuityResult")
        with reading(path, "CountingContinuityResult"):
            return cls.from_dict(data)
