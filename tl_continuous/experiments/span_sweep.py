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
from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_continuous.backends.base import Model
from tl_continuous.experiments.batched import duration_sweep_probs, progress_iter
from tl_continuous.experiments.prompts import apply_chat, load_dataset, token_span
from tl_continuous.experiments.readouts import Readout, ReadoutRule
from tl_continuous.experiments.results import Sweep, SweepSet

__all__ = ["default_grid", "shrink_text_span", "shrink_tokens", "sweep_dataset"]


def default_grid(steps: int = 100) -> Float[Tensor, " steps"]:
    """The paper's grid of durations: ``linspace(0.1, 1, steps)``.

    >>> [round(c, 4) for c in default_grid(4).tolist()]
    [0.1, 0.4, 0.7, 1.0]
    """
    if steps < 2:
        raise ValueError(f"steps must be >= 2 (got {steps})")
    return torch.linspace(0.1, 1.0, steps)


def shrink_tokens(
    model: Model,
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
    from tl_continuous.continuous.durations import Durations

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
    model: Model,
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


def sweep_dataset(
    experiment: str,
    items: Sequence[dict[str, Any]] | None,
    curve: Callable[[dict[str, Any]], Sweep],
    *,
    limit: int | None = None,
    progress: bool = True,
) -> SweepSet:
    """``curve`` on each item of a dataset, collected in a :class:`SweepSet`.

    The loop behind :func:`~.counting.count_dataset`, :func:`~.events.event_dataset` and
    :func:`~.sums.sum_dataset`.

    Args:
        experiment: the name of the result, of the progress bar and of the bundled dataset.
        items: the dataset's items (default: the bundled ``experiment`` dataset).
        curve: one item to its sweep (run without a progress bar of its own).
        limit: use only the first ``limit`` items.
        progress: one progress bar over the items.

    Returns:
        The sweeps in item order, with ``meta = {"grid_steps": ...}`` from the first sweep.

    >>> from tl_continuous.tiny import tiny_model
    >>> model = tiny_model("rotary")
    >>> texts = [str(i % 10) for i in range(50)]
    >>> items = [{"last": 2}, {"last": 3}]
    >>> result = sweep_dataset("shrink", items, lambda it: shrink_tokens(
    ...     model, torch.tensor([[1, 2, 3, 4, 5]]), (1, it["last"]), torch.tensor([0.5, 1.0]),
    ...     vocab=texts, progress=False), progress=False)
    >>> [s.span for s in result.sweeps], result.meta
    ([(1, 2), (1, 3)], {'grid_steps': 2})
    """
    items = list(load_dataset(experiment) if items is None else items)[:limit]
    if not items:
        raise ValueError("items must hold at least one item")
    sweeps = [curve(it) for it in progress_iter(items, progress, experiment)]
    return SweepSet(experiment, sweeps, meta={"grid_steps": sweeps[0].grid.numel()})
