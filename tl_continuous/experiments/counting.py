"""Counting: a word repeated n times, the repetitions at duration c ("shrink").

The paper's headline (Llama-3-8B, four apples): the argmax digit climbs 1 -> 2 -> 3 -> 4 as
c grows. :func:`count_curve` measures one curve, :func:`count_dataset` the bundled dataset
(3, 4 and 5 repetitions of 20 words) with the "peak" metric against the 1/n baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jaxtyping import Float
from torch import Tensor

from tl_continuous.backends.base import Model
from tl_continuous.experiments.prompts import COUNTING_TEMPLATE, counting_prompt
from tl_continuous.experiments.readouts import ReadoutRule
from tl_continuous.experiments.results import Sweep, SweepSet
from tl_continuous.experiments.span_sweep import default_grid, shrink_text_span, sweep_dataset

__all__ = ["count_curve", "count_dataset"]


def count_curve(
    model: Model,
    word: str = "apple",
    n: int = 4,
    cs: Float[Tensor, " grid"] | None = None,
    *,
    template: str = COUNTING_TEMPLATE,
    chat: bool = False,
    rules: Sequence[ReadoutRule] = ("exact", "contains"),
    batch_size: int = 25,
    progress: bool = True,
) -> Sweep:
    """Digit probabilities as the n repetitions of ``word`` shrink to duration c.

    Args:
        model: a model with a tokenizer.
        word: the repeated word.
        n: number of repetitions (the true count).
        cs: durations to sweep (default ``linspace(0.1, 1, 100)``).
        template: the counting prompt, with ``{sentence}`` and ``{word}``.
        chat: wrap the prompt in the tokenizer's chat template (off by default, as in the
            paper's base-model prompt).
        rules: digit readout rules.
        batch_size: rows per forward pass.
        progress: progress bar.

    Returns:
        A :class:`Sweep` with ``expected = n`` and the span of the repetitions.
    """
    prompt, chars = counting_prompt(word, n, template)
    return shrink_text_span(
        model,
        prompt,
        chars,
        default_grid() if cs is None else cs,
        chat=chat,
        rules=rules,
        experiment="counting",
        expected=n,
        batch_size=batch_size,
        progress=progress,
        meta={"word": word, "n": n},
    )


def count_dataset(
    model: Model,
    items: Sequence[dict[str, Any]] | None = None,
    cs: Float[Tensor, " grid"] | None = None,
    *,
    limit: int | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> SweepSet:
    """:func:`count_curve` over a dataset; aggregate with :meth:`SweepSet.peak_summary`.

    Args:
        model: a model with a tokenizer.
        items: ``{"word": ..., "n": ...}`` dicts (default: the bundled dataset).
        cs: durations to sweep.
        limit: use only the first ``limit`` items.
        progress: one progress bar over the items.
        **kwargs: passed to :func:`count_curve`.
    """
    return sweep_dataset(
        "counting",
        items,
        lambda it: count_curve(model, it["word"], int(it["n"]), cs, progress=False, **kwargs),
        limit=limit,
        progress=progress,
    )
