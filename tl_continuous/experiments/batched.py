"""Batched forward passes for sweeps: one batch row per grid point, chunked.

Every experiment reads only the next-token distribution after the prompt, so the duration
sweeps here unembed the last position only (a temporary hook keeps the last position of the final
residual stream; on SmolLM2 the unembedding of every position would cost a quarter of the
forward). The hook lives in a ``model.hooks`` context of its own and is removed on exit.

>>> from tl_continuous.tiny import tiny_model
>>> model = tiny_model("rotary")
>>> tokens = torch.tensor([[1, 2, 3, 4]])
>>> probs = duration_sweep_probs(model, tokens, torch.ones(3, 4), progress=False)
>>> probs.shape
torch.Size([3, 50])
>>> torch.allclose(probs[0], model(tokens)[0, -1].softmax(-1), atol=1e-6)
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, Literal, TypeVar

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_continuous._progress import progress as _progress
from tl_continuous.backends import backend_name
from tl_continuous.backends.base import Model

__all__ = [
    "blend_sweep_probs",
    "chunks",
    "duration_sweep_probs",
    "last_position_only",
    "next_token_probs",
    "progress_iter",
]

T = TypeVar("T")


def chunks(n: int, batch_size: int, *, progress: bool = False, desc: str = "") -> Iterator[slice]:
    """Slices ``[i, i + batch_size)`` covering ``range(n)``, with an optional tqdm bar.

    >>> list(chunks(5, 2))
    [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
    starts = range(0, n, batch_size)
    shown = progress and len(starts) > 1
    for i in _progress(starts, enabled=shown, total=len(starts), desc=desc or "sweep"):
        yield slice(i, min(i + batch_size, n))


def progress_iter(items: Sequence[T], progress: bool, desc: str) -> Iterable[T]:
    """``items``, wrapped in a tqdm bar when ``progress`` is true.

    >>> list(progress_iter([1, 2], False, "x"))
    [1, 2]
    """
    return _progress(items, enabled=progress, total=len(items), desc=desc)


@contextmanager
def last_position_only(model: Model) -> Iterator[None]:
    """Within the block, forwards return logits of the last position only (``[b, 1, vocab]``).

    >>> from tl_continuous.tiny import tiny_model
    >>> model = tiny_model("rotary")
    >>> with last_position_only(model):
    ...     model(torch.tensor([[1, 2, 3]])).shape
    torch.Size([1, 1, 50])
    """

    def keep_last(resid: Tensor, hook: Any) -> Tensor:
        return resid[:, -1:]

    # On a TransformerBridge the final residual stream still passes through the Hugging Face
    # base model, which may reshape it to the input's length (GPT-2's ``view(output_shape)``
    # after ``ln_f``), so the cut is made where the unembedding reads it.
    if backend_name(model) == "bridge":
        name = "unembed.hook_in"
    else:
        name = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    with model.hooks(fwd_hooks=[(name, keep_last)]):
        yield


def next_token_probs(model: Model, run: Callable[[], Tensor]) -> Float[Tensor, "batch vocab"]:
    """Softmax (float32 or wider) of the last position of ``run()``'s logits."""
    with torch.inference_mode(), last_position_only(model):
        logits = run()
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    return logits[:, -1].to(dtype).softmax(-1)


def duration_sweep_probs(
    model: Model,
    tokens: Int[Tensor, "1 pos"],
    durations: Float[Tensor, "grid pos"],
    *,
    start: float | Float[Tensor, " grid"] = 0.0,
    batch_size: int = 25,
    progress: bool = True,
    desc: str = "",
) -> Float[Tensor, "grid vocab"]:
    """Next-token probabilities of one prompt under each row of durations, batched.

    Args:
        model: any model the continuous mechanism supports.
        tokens: the prompt's tokens, ``[1, pos]``.
        durations: one row of durations per grid point.
        start: the integration start, shared by every row or one per row. A
            :class:`~tl_continuous.continuous.durations.Durations` has a single ``start``, so
            per-row starts are added to ``continuous.hook_positions`` by a hook (in float64),
            which keeps the rows in one batched forward.
        batch_size: rows per forward pass.
        progress: show a progress bar when there is more than one batch.
        desc: progress bar label.
    """
    from tl_continuous.continuous.durations import Durations
    from tl_continuous.continuous.signal import continuous

    if tokens.ndim != 2 or tokens.shape[0] != 1:
        raise ValueError(f"tokens must have shape [1, pos] (got {tuple(tokens.shape)})")
    if durations.ndim != 2 or durations.shape[1] != tokens.shape[1]:
        raise ValueError(
            f"durations must have shape [grid, {tokens.shape[1]}] (got {tuple(durations.shape)})"
        )
    if isinstance(start, Tensor) and tuple(start.shape) != (durations.shape[0],):
        raise ValueError(
            f"start must be a float or have shape [{durations.shape[0]}], one per row of "
            f"durations (got {tuple(start.shape)})"
        )
    out = []
    for rows in chunks(durations.shape[0], batch_size, progress=progress, desc=desc):
        batch = durations[rows]
        toks = tokens.expand(batch.shape[0], -1)
        shared = 0.0 if isinstance(start, Tensor) else start
        hooks: list[tuple[str | Callable[..., Any], Callable[..., Any]]] = []
        if isinstance(start, Tensor):
            hooks.append(("continuous.hook_positions", _add_start(start[rows])))
        with continuous(model, Durations(batch, start=shared)), model.hooks(fwd_hooks=hooks):
            out.append(next_token_probs(model, partial(model, toks)))
    return torch.cat(out)


def _add_start(start: Float[Tensor, " rows"]) -> Callable[[Tensor, Any], Tensor]:
    """A ``continuous.hook_positions`` hook adding ``start[r]`` to row ``r`` (float64 sum)."""

    def shift(positions: Tensor, hook: Any) -> Tensor:
        row_start = start.to(positions.device, torch.float64)[:, None]
        return (positions.to(torch.float64) + row_start).to(positions.dtype)

    return shift


def blend_sweep_probs(
    model: Model,
    prompt_a: str | Int[Tensor, "1 pos"],
    prompt_b: str | Int[Tensor, "1 pos"],
    lambdas: Float[Tensor, " grid"],
    *,
    method: Literal["lerp", "slerp"] = "lerp",
    batch_size: int = 25,
    progress: bool = True,
    desc: str = "",
) -> Float[Tensor, "grid vocab"]:
    """Next-token probabilities at blended input embeddings, one batch row per lambda."""
    from tl_continuous.continuous.blend import blend_embeddings

    if lambdas.ndim != 1:
        raise ValueError(f"lambdas must be 1-D (got shape {tuple(lambdas.shape)})")
    out = []
    for rows in chunks(lambdas.shape[0], batch_size, progress=progress, desc=desc):
        # blend_embeddings returns every position; its return type says so, so the
        # last-position shortcut is not used here (blend prompts are short).
        with torch.inference_mode():
            logits = blend_embeddings(model, prompt_a, prompt_b, lambdas[rows], method=method)
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        out.append(logits[:, -1].to(dtype).softmax(-1))
    return torch.cat(out)
