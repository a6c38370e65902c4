"""The shape shared by counting, events and sums: one token span at duration c, c swept.

>>> from tl_continuous.tiny import tiny_model
>>> model = tiny_model("rotary")
>>> texts = [str(i % 10) for i in range(50)]
>>> sweep = shrink_tokens(model, torch.tensor([[1, 2, 3, 4, 5]]), (1, 3), torch.tensor([0.5, 1.0]),
...                       vocab=texts, progress=False)
>>> sweep.probs["exact"].shape
torch.Size([2, 10])
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from tl_continuous.experiments.batched import duration_sweep_probs
from tl_continuous.experiments.prompts import apply_chat, token_span
from tl_continuous.experiments.readouts import Readout, ReadoutRule
from tl_continuous.experiments.results import Sweep

__all__ = ["default_grid", "shrink_text_span", "shrink_tokens"]


def default_grid(steps: int = 100) -> Float[Tensor, " steps"]:
    """The paper's grid of durations: ``linspace(0.1, 1, steps)``.

    >>> [round(c, 4) for c in default_grid(4).tolist()]
    [0.1, 0.4, 0.7, 1.0]
    """
    if steps < 2:
        raise ValueError(f"steps must be >= 2 (got {steps})")
    return torch.linspace(0.1, 1.0, steps)


def shrink_tokens(
    model: HookedTransformer,
    tokens: Int[Tensor, "1 pos"],
    span: tuple[int, int],
    cs: Float[Tensor, " grid"],
    *,
    rules: Sequence[ReadoutRule] = ("exact", "contains"),
    vocab: Any = None,
    experiment: str = "shrink",
    prompt: str = "",
    expected: int | None = None,
    batch_size: int = 25,
    progress: bool = True,
    meta: dict[str, Any] | None = None,
) -> Sweep:
    """Digit probabilities with the tokens ``span[0]..span[1]`` at duration c, per c.

    Args:
        model: any model the continuous mechanism supports.
        tokens: the prompt's tokens ``[1, pos]``.
        span: first and last (inclusive) token positions given duration c.
        cs: the durations to sweep, increasing.
        rules: digit readout rules to record (see :mod:`.readouts`).
        vocab: token texts for the readouts (default: the model's tokenizer).
        experiment, prompt, expected, meta: recorded in the result.
        batch_size: rows per forward pass.
        progress: progress bar.
    """
    from tl_continuous import Durations

    if cs.ndim != 1 or cs.numel() < 2:
        raise ValueError(f"cs must be 1-D with at least two values (got {tuple(cs.shape)})")
    n_pos = tokens.shape[-1]
    durations = Durations.from_spans(n_pos, [span], value=cs).values
    begin = time.perf_counter()
    probs = duration_sweep_probs(
        model, tokens, durations, batch_size=batch_size, progress=progress, desc=experiment
    )
    seconds = time.perf_counter() - begin
    readouts = {rule: Readout.digits(vocab if vocab is not None else model, rule) for rule in rules}
    return Sweep(
        experiment=experiment,
        model_name=str(model.cfg.model_name),
        prompt=prompt,
        knob="c",
        grid=cs.detach().to(torch.float64).cpu(),
        labels=readouts[rules[0]].labels,
        probs={rule: r(probs).double().cpu() for rule, r in readouts.items()},
        expected=expected,
        span=span,
        meta={"seconds": seconds, "batch_size": batch_size, "n_pos": n_pos, **(meta or {})},
    )


def shrink_text_span(
    model: HookedTransformer,
    prompt: str,
    chars: tuple[int, int],
    cs: Float[Tensor, " grid"],
    *,
    chat: bool = False,
    **kwargs: Any,
) -> Sweep:
    """:func:`shrink_tokens` on the tokens covering ``prompt[chars[0]:chars[1]]``.

    Args:
        chat: wrap the prompt as the user turn of the model's chat template first.
        **kwargs: passed to :func:`shrink_tokens`.
    """
    lo, hi = chars
    if chat:
        prompt, offset = apply_chat(model, prompt)
        lo, hi = lo + offset, hi + offset
    span = token_span(model, prompt, lo, hi)
    meta = {"span_text": prompt[lo:hi], "chat": chat, **kwargs.pop("meta", {})}
    return shrink_tokens(
        model, model.to_tokens(prompt), span, cs, prompt=prompt, meta=meta, **kwargs
    )
