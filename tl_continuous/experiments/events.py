"""Event counting: the steps of a short how-to text shrunk to duration c.

The span runs from the first ``-`` to the last ``.`` of the step lines; the readout is the
digit answering "how many steps", whose true value is the number of steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jaxtyping import Float
from torch import Tensor

from tl_continuous.backends.base import Model
from tl_continuous.experiments.prompts import EVENTS_TEMPLATE, events_prompt
from tl_continuous.experiments.readouts import ReadoutRule
from tl_continuous.experiments.results import Sweep, SweepSet
from tl_continuous.experiments.span_sweep import default_grid, shrink_text_span, sweep_dataset

__all__ = ["event_curve", "event_dataset"]


def event_curve(
    model: Model,
    task: str,
    steps: Sequence[str],
    cs: Float[Tensor, " grid"] | None = None,
    *,
    template: str = EVENTS_TEMPLATE,
    chat: bool = False,
    rules: Sequence[ReadoutRule] = ("exact", "contains"),
    batch_size: int = 25,
    progress: bool = True,
) -> Sweep:
    """Digit probabilities as the steps of "How to {task}" shrink to duration c.

    Args:
        model: a model with a tokenizer.
        task: what the text explains ("make tea").
        steps: the steps, one line each (``"- {step}."``).
        cs: durations (default ``linspace(0.1, 1, 100)``).
        template: prompt with ``{task}`` and ``{steps}``.
        chat, rules, batch_size, progress: as in :func:`~.counting.count_curve`.
    """
    prompt, chars = events_prompt(task, list(steps), template)
    return shrink_text_span(
        model,
        prompt,
        chars,
        default_grid() if cs is None else cs,
        chat=chat,
        rules=rules,
        experiment="events",
        expected=len(steps) if len(steps) < 10 else None,
        batch_size=batch_size,
        progress=progress,
        meta={"task": task, "n_steps": len(steps)},
    )


def event_dataset(
    model: Model,
    items: Sequence[dict[str, Any]] | None = None,
    cs: Float[Tensor, " grid"] | None = None,
    *,
    limit: int | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> SweepSet:
    """:func:`event_curve` over ``{"task", "steps"}`` items (default: the bundled dataset)."""
    return sweep_dataset(
        "events",
        items,
        lambda it: event_curve(model, it["task"], it["steps"], cs, progress=False, **kwargs),
        limit=limit,
        progress=progress,
    )
