"""Translation and scaling of the whole time axis.

* translation: every position shifted by ``shift`` (``Durations(ones, start=shift)``); a
  no-op for rotary models up to float error, so the recorded distance from the unmodified
  model measures the mechanism as much as the model;
* scaling: every duration times ``s`` (attention weights unchanged, positions ``s * j``).

Both record the digit readout of a prompt (default: the four-apples counting prompt) and
the total-variation distance of the full next-token distribution from the unmodified model.
Both are batched: a :class:`~tl_continuous.continuous.durations.Durations` has one ``start``,
so translation adds each row's shift on the ``continuous.hook_positions`` hook point.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from tl_continuous.backends.base import Model
from tl_continuous.experiments.batched import (
    duration_sweep_probs,
    next_token_probs,
)
from tl_continuous.experiments.metrics import total_variation
from tl_continuous.experiments.prompts import counting_prompt
from tl_continuous.experiments.readouts import Readout, ReadoutRule
from tl_continuous.experiments.results import Sweep

__all__ = ["scaling_sweep", "translation_sweep"]


def _default_prompt() -> str:
    return counting_prompt("apple", 4)[0]


def _finish(
    model: Model,
    experiment: str,
    knob: str,
    prompt: str,
    grid: Tensor,
    probs: Tensor,
    reference: Tensor,
    rules: Sequence[ReadoutRule],
    seconds: float,
    meta: dict[str, Any],
) -> Sweep:
    readouts = {rule: Readout.digits(model, rule) for rule in rules}
    return Sweep(
        experiment=experiment,
        model_name=str(model.cfg.model_name),
        prompt=prompt,
        knob=knob,
        grid=grid.detach().double().cpu(),
        labels=readouts[rules[0]].labels,
        probs={rule: r(probs).double().cpu() for rule, r in readouts.items()},
        distance=total_variation(probs, reference.expand_as(probs)).double().cpu(),
        meta={"seconds": seconds, **meta},
    )


def translation_sweep(
    model: Model,
    prompt: str | None = None,
    shifts: Float[Tensor, " grid"] | None = None,
    *,
    rules: Sequence[ReadoutRule] = ("exact", "contains"),
    batch_size: int = 25,
    progress: bool = True,
) -> Sweep:
    """Digit readout with every position shifted by each value of ``shifts``.

    Args:
        model: a model with a tokenizer.
        prompt: default: the four-apples counting prompt.
        shifts: default ``0, 1, ..., 10``.
        rules: digit readout rules.
        batch_size: rows (shifts) per forward pass.
        progress: progress bar.
    """
    prompt = prompt or _default_prompt()
    shifts = torch.arange(0.0, 11.0) if shifts is None else shifts
    tokens = model.to_tokens(prompt)
    ones = torch.ones(1, tokens.shape[-1])
    begin = time.perf_counter()
    reference = next_token_probs(model, lambda: model(tokens))[0]
    grid = shifts.detach().to(torch.float64).cpu()
    probs = duration_sweep_probs(
        model,
        tokens,
        ones.expand(grid.shape[0], -1),
        start=grid,
        batch_size=batch_size,
        progress=progress,
        desc="translation",
    )
    return _finish(
        model,
        "translation",
        "shift",
        prompt,
        shifts,
        probs,
        reference,
        rules,
        time.perf_counter() - begin,
        {},
    )


def scaling_sweep(
    model: Model,
    prompt: str | None = None,
    scales: Float[Tensor, " grid"] | None = None,
    *,
    rules: Sequence[ReadoutRule] = ("exact", "contains"),
    batch_size: int = 25,
    progress: bool = True,
) -> Sweep:
    """Digit readout with every duration multiplied by each value of ``scales``.

    Args:
        model: a model with a tokenizer.
        prompt: default: the four-apples counting prompt.
        scales: default ``linspace(0.01, 1.5, 50)``.
        rules: digit readout rules.
        batch_size: rows per forward pass.
        progress: progress bar.
    """
    prompt = prompt or _default_prompt()
    scales = torch.linspace(0.01, 1.5, 50) if scales is None else scales
    tokens = model.to_tokens(prompt)
    durations = scales.detach().float().cpu()[:, None] * torch.ones(1, tokens.shape[-1])
    begin = time.perf_counter()
    reference = next_token_probs(model, lambda: model(tokens))[0]
    probs = duration_sweep_probs(
        model, tokens, durations, batch_size=batch_size, progress=progress, desc="scaling"
    )
    return _finish(
        model,
        "scaling",
        "scale",
        prompt,
        scales,
        probs,
        reference,
        rules,
        time.perf_counter() - begin,
        {"batch_size": batch_size},
    )
