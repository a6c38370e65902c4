"""Sums: the digit tokens of one operand of a word problem shrunk to duration c.

The readout is the leading digit of the answer (the first generated token); ``expected``
is the leading digit of ``a + b``. Besides the "exact" and "contains" rules, "prefix"
(token text starts with the digit) is the natural rule for tokenizers with multi-digit
tokens; on SmolLM2 digits are single tokens and the three agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jaxtyping import Float
from torch import Tensor

from tl_continuous.backends.base import Model
from tl_continuous.experiments.prompts import SUMS_TEMPLATE, sums_prompt
from tl_continuous.experiments.readouts import ReadoutRule
from tl_continuous.experiments.results import Sweep, SweepSet
from tl_continuous.experiments.span_sweep import default_grid, shrink_text_span, sweep_dataset

__all__ = ["sum_curve", "sum_dataset"]


def sum_curve(
    model: Model,
    text: str,
    question: str,
    a: int,
    b: int,
    cs: Float[Tensor, " grid"] | None = None,
    *,
    template: str = SUMS_TEMPLATE,
    chat: bool = False,
    rules: Sequence[ReadoutRule] = ("exact", "contains", "prefix"),
    batch_size: int = 25,
    progress: bool = True,
) -> Sweep:
    """Leading-digit probabilities of the answer as the tokens of operand ``a`` shrink.

    Args:
        model: a model with a tokenizer.
        text: the problem ("Mia delivered 82 packages ... and 38 ...").
        question: the question ("How many packages ... in total?").
        a: the operand whose digit tokens are shrunk (its first occurrence in ``text``).
        b: the other operand (for the expected answer).
        cs, template, chat, rules, batch_size, progress: as in
            :func:`~.counting.count_curve`.
    """
    prompt, chars = sums_prompt(text, question, a, template)
    answer = a + b
    return shrink_text_span(
        model,
        prompt,
        chars,
        default_grid() if cs is None else cs,
        chat=chat,
        rules=rules,
        experiment="sums",
        expected=int(str(answer)[0]),
        batch_size=batch_size,
        progress=progress,
        meta={"a": a, "b": b, "answer": answer},
    )


def sum_dataset(
    model: Model,
    items: Sequence[dict[str, Any]] | None = None,
    cs: Float[Tensor, " grid"] | None = None,
    *,
    limit: int | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> SweepSet:
    """:func:`sum_curve` over ``{"text", "question", "a", "b"}`` items (default: bundled)."""
    return sweep_dataset(
        "sums",
        items,
        lambda it: sum_curve(
            model,
            it["text"],
            it["question"],
            int(it["a"]),
            int(it["b"]),
            cs,
            progress=False,
            **kwargs,
        ),
        limit=limit,
        progress=progress,
    )
