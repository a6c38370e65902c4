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
from collections.abc import Callable, Sequence
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


def _time_axis_sweep(
    model: Model,
    experiment: str,
    knob: str,
    prompt: str | None,
    grid: Tensor,
    durations: Callable[[int], Tensor],
    *,
    start: float | Tensor = 0.0,
    rules: Sequence[ReadoutRule],
    batch_size: int,
    progress: bool,
    meta: dict[str, Any],
) -> Sweep:
    """The readouts and distances of one prompt under ``durations(n_pos)``, row per grid value.

    The shared body of :func:`translation_sweep` and :func:`scaling_sweep`; ``prompt=None``
    is the four-apples counting prompt.
    """
    prompt = prompt or _default_prompt()
    tokens = model.to_tokens(prompt)
    rows = durations(tokens.shape[-1])
    begin = time.perf_counter()
    reference = next_token_probs(model, lambda: model(tokens))[0]
    probs = duration_sweep_probs(
        model,
        tokens,
        rows,
        start=start,
        batch_size=batch_size,
        progress=progress,
        desc=experiment,
    )
    seconds = time.perf_counter() - begin
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
    shifts = torch.arange(0.0, 11.0) if shifts is None else shifts
    grid = shifts.detach().to(torch.float64).cpu()
    return _time_axis_sweep(
        model,
        "translation",
        "shift",
        prompt,
        shifts,
        lambda n_pos: torch.ones(1, n_pos).expand(grid.shape[0], -1),
        start=grid,
        rules=rules,
        batch_size=batch_size,
        progress=progress,
        meta={},
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
        scales: default ``linspace(0.01, 1.5, 50)``.
        model, prompt, rules, batch_size, progress: as in :func:`translation_sweep`.
    """
    scales = torch.linspace(0.01, 1.5, 50) if scales is None else scales
    return _time_axis_sweep(
        model,
        "scaling",
        "scale",
        prompt,
        scales,
        lambda n_pos: scales.detach().float().cpu()[:, None] * torch.ones(1, n_pos),
        rules=rules,
        batch_size=batch_size,
        progress=progress,
        meta={"batch_size": batch_size},
    )
