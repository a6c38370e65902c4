"""Result objects of the experiments: computed once, saved as JSON, plotted many times.

A :class:`Sweep` holds one curve: readout probabilities along one swept knob (durations c,
blend weight lambda, shift, scale) for one prompt, under one or more readout rules. A
:class:`SweepSet` holds many (a dataset, the Boolean operator pairs) and aggregates the
paper's metrics over them.

>>> sweep = Sweep(
...     experiment="counting", model_name="tiny", prompt="a a a", knob="c",
...     grid=torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64), labels=("0", "1", "2", "3"),
...     probs={"exact": torch.tensor([[0, .8, .1, .1], [0, .2, .7, .1], [0, .1, .2, .7]])},
...     expected=3,
... )
>>> sweep.first_argmax()
{1: 0.1, 2: 0.5, 3: 1.0}
>>> sweep.peak_fraction()
1.0
>>> Sweep.from_dict(sweep.to_dict()).first_argmax() == sweep.first_argmax()
True
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from tl_continuous._io import load_json, reading, save_json
from tl_continuous.experiments import metrics

__all__ = ["SWEEP_FORMAT", "SWEEP_SET_FORMAT", "VERSION", "Sweep", "SweepSet"]

SWEEP_FORMAT = "tl_continuous.experiments.sweep"
SWEEP_SET_FORMAT = "tl_continuous.experiments.sweep_set"
VERSION = 1


def _tensor(values: Any) -> Tensor:
    return torch.tensor(values, dtype=torch.float64)


@dataclass
class Sweep:
    """Readout probabilities along one swept knob, for one prompt.

    Attributes:
        experiment: ``"counting"``, ``"events"``, ``"sums"``, ``"interpolation"``,
            ``"boolean"``, ``"translation"`` or ``"scaling"``.
        model_name: ``model.cfg.model_name``.
        prompt: the prompt (the first endpoint for interpolations).
        knob: name of the swept quantity (``"c"``, ``"lambda"``, ``"shift"``, ``"scale"``).
        grid: the swept values, increasing.
        labels: readout labels (digits, ``Yes``/``No``, ``0``/``1``).
        probs: readout rule -> probabilities, one row per grid point.
        expected: the label index the task's true answer corresponds to (count, leading
            digit), when there is one.
        prompt_b: the second endpoint of an interpolation.
        distance: per grid point, total-variation distance of the full next-token
            distribution from a reference: the blend of the endpoint outputs
            (interpolations) or the unmodified model (translation, scaling).
        span: first and last token position given duration c (duration sweeps).
        meta: anything else worth keeping (word, n, operators, inputs, timing...).
    """

    experiment: str
    model_name: str
    prompt: str
    knob: str
    grid: Float[Tensor, " grid"]
    labels: tuple[str, ...]
    probs: dict[str, Float[Tensor, "grid label"]]
    expected: int | None = None
    prompt_b: str | None = None
    distance: Float[Tensor, " grid"] | None = None
    span: tuple[int, int] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = tuple(self.labels)
        if self.grid.ndim != 1:
            raise ValueError(f"grid must be 1-D (got shape {tuple(self.grid.shape)})")
        if not self.probs:
            raise ValueError("probs must hold at least one readout rule")
        n = self.grid.shape[0]
        for rule, p in self.probs.items():
            if tuple(p.shape) != (n, len(self.labels)):
                raise ValueError(
                    f"probs[{rule!r}] must have shape ({n}, {len(self.labels)}) "
                    f"(got {tuple(p.shape)})"
                )
        if self.distance is not None and tuple(self.distance.shape) != (n,):
            raise ValueError(f"distance must have shape ({n},) (got {tuple(self.distance.shape)})")
        if self.expected is not None and not 0 <= self.expected < len(self.labels):
            raise ValueError(f"expected must index labels (got {self.expected})")
        if self.span is not None:
            self.span = (int(self.span[0]), int(self.span[1]))

    @property
    def rules(self) -> list[str]:
        """Readout rules stored, in order."""
        return list(self.probs)

    def _rule(self, rule: str | None) -> str:
        rule = rule or self.rules[0]
        if rule not in self.probs:
            raise ValueError(f"rule must be one of {self.rules} (got {rule!r})")
        return rule

    def argmax(self, rule: str | None = None) -> list[int]:
        """Argmax label index at each grid point."""
        return self.probs[self._rule(rule)].argmax(-1).tolist()

    def transitions(self, rule: str | None = None) -> list[tuple[float, int, int]]:
        """See :func:`~tl_continuous.experiments.metrics.argmax_transitions`."""
        return metrics.argmax_transitions(self.probs[self._rule(rule)], self.grid)

    def first_argmax(self, rule: str | None = None) -> dict[int, float]:
        """See :func:`~tl_continuous.experiments.metrics.first_argmax`."""
        return metrics.first_argmax(self.probs[self._rule(rule)], self.grid)

    def expected_counts(self) -> list[int]:
        """The counts 1..n a counting sweep can reach (n = :attr:`expected`)."""
        if self.expected is None:
            raise ValueError("this sweep has no expected answer")
        return list(range(1, self.expected + 1))

    def peak_fraction(self, rule: str | None = None) -> float:
        """Fraction of the counts 1..n that become the argmax; compare with ``1/n``."""
        return metrics.peak_fraction(self.first_argmax(rule), self.expected_counts())

    def lipschitz(self, rule: str | None = None) -> list[float]:
        """Normalised Lipschitz estimate per label."""
        return metrics.normalised_lipschitz(self.probs[self._rule(rule)], self.grid).tolist()

    def excursion(self, rule: str | None = None) -> list[float]:
        """Distance each label's curve leaves its endpoint interval."""
        return metrics.excursion(self.probs[self._rule(rule)]).tolist()

    def summary(self, rule: str | None = None) -> dict[str, Any]:
        """Headline numbers of this sweep under one rule (JSON-ready)."""
        rule = self._rule(rule)
        top = self.argmax(rule)
        out: dict[str, Any] = {
            "experiment": self.experiment,
            "rule": rule,
            "argmax_at_start": self.labels[top[0]],
            "argmax_at_end": self.labels[top[-1]],
            "transitions": [
                [round(at, 4), self.labels[a], self.labels[b]]
                for at, a, b in self.transitions(rule)
            ],
            "first_argmax": {
                self.labels[k]: round(v, 4) for k, v in sorted(self.first_argmax(rule).items())
            },
        }
        probs = self.probs[rule]
        if self.expected is not None:
            out["p_expected_at_start"] = float(probs[0, self.expected])
            out["p_expected_at_end"] = float(probs[-1, self.expected])
        if all(label.isdigit() for label in self.labels):
            # mean of the digit distribution renormalised over the labels
            values = torch.tensor([float(label) for label in self.labels], dtype=torch.float64)
            mean = (probs.double() @ values) / probs.double().sum(-1)
            out["mean_digit_at_start"] = float(mean[0])
            out["mean_digit_at_end"] = float(mean[-1])
        if self.experiment == "counting" and self.expected is not None:
            out["peak_fraction"] = self.peak_fraction(rule)
            out["baseline"] = 1 / self.expected
        if self.knob == "lambda":
            lips = self.lipschitz(rule)
            exc = self.excursion(rule)
            out["lipschitz"] = dict(zip(self.labels, lips, strict=True))
            out["excursion"] = dict(zip(self.labels, exc, strict=True))
            out["flagged"] = any(e >= metrics.EXCURSION_FLAG for e in exc)
        if self.distance is not None:
            out["max_distance"] = float(self.distance.max())
            out["mean_distance"] = float(self.distance.mean())
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tensors become nested lists)."""
        return {
            "experiment": self.experiment,
            "model_name": self.model_name,
            "prompt": self.prompt,
            "prompt_b": self.prompt_b,
            "knob": self.knob,
            "grid": self.grid.tolist(),
            "labels": list(self.labels),
            "probs": {k: v.tolist() for k, v in self.probs.items()},
            "expected": self.expected,
            "distance": None if self.distance is None else self.distance.tolist(),
            "span": None if self.span is None else list(self.span),
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sweep:
        """Inverse of :meth:`to_dict`."""
        return cls(
            experiment=data["experiment"],
            model_name=data["model_name"],
            prompt=data["prompt"],
            prompt_b=data.get("prompt_b"),
            knob=data["knob"],
            grid=_tensor(data["grid"]),
            labels=tuple(data["labels"]),
            probs={k: _tensor(v) for k, v in data["probs"].items()},
            expected=data.get("expected"),
            distance=None if data.get("distance") is None else _tensor(data["distance"]),
            span=None if data.get("span") is None else tuple(data["span"]),
            meta=dict(data.get("meta") or {}),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as tagged JSON, atomically; returns the path."""
        return save_json(path, SWEEP_FORMAT, VERSION, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Sweep:
        """Read a file written by :meth:`save`.

        Raises:
            FileNotFoundError: no file at ``path``.
            FormatError: the file is damaged or holds another result type or version (plain
                JSON written before the format tag included).
        """
        data = load_json(path, SWEEP_FORMAT, VERSION, "Sweep")
        with reading(path, "Sweep"):
            return cls.from_dict(data)


@dataclass
class SweepSet:
    """Many sweeps of one experiment (a dataset, the Boolean operator pairs).

    Attributes:
        experiment: the experiment name shared by the sweeps.
        sweeps: the curves.
        meta: settings of the run (grid size, readout rules, skipped items...).
    """

    experiment: str
    sweeps: list[Sweep]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.sweeps:
            raise ValueError("sweeps must hold at least one Sweep")
        for s in self.sweeps:
            if not isinstance(s, Sweep):
                raise TypeError(f"sweeps must hold Sweep objects (got {type(s).__name__})")

    def __len__(self) -> int:
        return len(self.sweeps)

    def peak_summary(self, rule: str | None = None) -> dict[str, Any]:
        """Counting-style aggregate: mean peak fraction vs the mean 1/n baseline, per n too,
        and the mean c at which each count first becomes the argmax."""
        rows = [s for s in self.sweeps if s.expected is not None]
        if not rows:
            raise ValueError("no sweep in this set has an expected count")
        fractions = [s.peak_fraction(rule) for s in rows]
        baselines = [1 / s.expected for s in rows if s.expected]
        by_n: dict[str, dict[str, float]] = {}
        for n in sorted({s.expected for s in rows if s.expected}):
            sub = [s.peak_fraction(rule) for s in rows if s.expected == n]
            by_n[str(n)] = {"items": len(sub), "peak_fraction": sum(sub) / len(sub)}
        where: dict[str, list[float]] = {}
        for s in rows:
            for k, c in s.first_argmax(rule).items():
                where.setdefault(s.labels[k], []).append(c)
        correct_at_end = [s.argmax(rule)[-1] == s.expected for s in rows]
        return {
            "items": len(rows),
            "peak_fraction": sum(fractions) / len(fractions),
            "baseline": sum(baselines) / len(baselines),
            "by_n": by_n,
            "correct_at_end": sum(correct_at_end) / len(rows),
            "mean_first_argmax": {
                k: {"items": len(v), "mean": sum(v) / len(v)} for k, v in sorted(where.items())
            },
        }

    def interpolation_summary(self, rule: str | None = None) -> dict[str, Any]:
        """Interpolation aggregate: Lipschitz estimates, excursions, flagged fraction and
        distance from the blend of endpoint outputs."""
        lips = [max(s.lipschitz(rule)) for s in self.sweeps]
        exc = [max(s.excursion(rule)) for s in self.sweeps]
        dist = [float(s.distance.max()) for s in self.sweeps if s.distance is not None]
        out: dict[str, Any] = {
            "curves": len(self.sweeps),
            "lipschitz_median": float(torch.tensor(lips).median()),
            "lipschitz_max": max(lips),
            "excursion_max": max(exc),
            "flagged_fraction": sum(e >= metrics.EXCURSION_FLAG for e in exc) / len(exc),
        }
        accuracy = self.endpoint_accuracy(rule)
        if accuracy is not None:
            out["endpoint_accuracy"] = accuracy
        if dist:
            out["blend_distance_max"] = max(dist)
            out["blend_distance_mean_of_max"] = sum(dist) / len(dist)
        return out

    def endpoint_accuracy(self, rule: str | None = None) -> float | None:
        """Fraction of endpoints (lambda = 0 and 1) whose argmax label is the right answer
        (``meta["answer_a"]``, ``meta["answer_b"]``); ``None`` when no answers are known."""
        hits = []
        for s in self.sweeps:
            top = s.argmax(rule)
            for key, i in (("answer_a", 0), ("answer_b", -1)):
                if key in s.meta:
                    hits.append(s.labels[top[i]] == str(s.meta[key]))
        return sum(hits) / len(hits) if hits else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "experiment": self.experiment,
            "meta": self.meta,
            "sweeps": [s.to_dict() for s in self.sweeps],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepSet:
        """Inverse of :meth:`to_dict`."""
        return cls(
            experiment=data["experiment"],
            sweeps=[Sweep.from_dict(s) for s in data["sweeps"]],
            meta=dict(data.get("meta") or {}),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as tagged JSON, atomically; returns the path."""
        return save_json(path, SWEEP_SET_FORMAT, VERSION, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SweepSet:
        """Read a file written by :meth:`save` (errors as :meth:`Sweep.load`)."""
        data = load_json(path, SWEEP_SET_FORMAT, VERSION, "SweepSet")
        with reading(path, "SweepSet"):
            return cls.from_dict(data)
