"""Activation patching across durations, with TransformerLens's own patching functions.

The clean run is the prompt under durations ``d1`` (or plain), the corrupted run the same
tokens (or other tokens) under ``d2`` (or plain). The clean cache is taken under ``d1``; then
the corrupted durations are installed on the model while a function of
``transformer_lens.patching`` runs, because ``generic_activation_patch`` calls
``model.run_with_hooks(tokens, fwd_hooks=...)`` and forwards nothing else. The continuous
mechanism lives in permanent hooks, so it survives the ``reset_hooks()`` each patched run ends
with; TransformerLens's patching hooks fire after it at the same HookPoints (an activation
patched in is the clean, continuous one).

Results are returned exactly as TransformerLens returns them, e.g. ``[n_layers, pos]`` for the
residual stream and ``[n_layers, n_heads]`` for heads over all positions.

>>> import torch
>>> from tl_continuous.tiny import tiny_model
>>> model = tiny_model("rotary")
>>> tokens = torch.tensor([[1, 2, 3, 4]])
>>> shrunk = Durations(torch.tensor([1.0, 0.2, 0.2, 1.0]))
>>> metric = lambda logits: logits[0, -1, 5]
>>> out = patch_across_durations(model, tokens, None, shrunk, metric, kind="resid_pre",
...                              progress=False)
>>> out.shape
torch.Size([2, 4])
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import ActivationCache

from tl_continuous.backends.base import Model
from tl_continuous.continuous.durations import Durations
from tl_continuous.continuous.signal import continuous

__all__ = [
    "PATCH_KINDS",
    "PatchKind",
    "logit_diff_metric",
    "patch_across_durations",
    "patch_all_across_durations",
    "run_under",
]

PatchKind = Literal[
    "resid_pre", "resid_mid", "attn_out", "mlp_out", "heads", "heads_by_pos", "heads_every"
]

#: name -> the ``transformer_lens.patching`` function it calls
PATCH_KINDS: dict[str, str] = {
    "resid_pre": "get_act_patch_resid_pre",
    "resid_mid": "get_act_patch_resid_mid",
    "attn_out": "get_act_patch_attn_out",
    "mlp_out": "get_act_patch_mlp_out",
    "heads": "get_act_patch_attn_head_out_all_pos",
    "heads_by_pos": "get_act_patch_attn_head_out_by_pos",
    "heads_every": "get_act_patch_attn_head_all_pos_every",
}

Metric = Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, ""]]


@contextmanager
def run_under(model: Model, durations: Durations | None) -> Iterator[None]:
    """``continuous(model, durations)``, or nothing at all when ``durations`` is ``None``."""
    if durations is None:
        yield
    else:
        with continuous(model, durations):
            yield


def _check(model: Model, tokens: Tensor, durations: Durations | None, name: str) -> None:
    if durations is None:
        return
    if not isinstance(durations, Durations):
        raise TypeError(f"{name} must be Durations or None (got {type(durations).__name__})")
    if durations.n_pos != tokens.shape[-1]:
        raise ValueError(
            f"{name} has {durations.n_pos} values but the tokens have {tokens.shape[-1]} positions"
        )
    if durations.batch not in (1, tokens.shape[0]):
        raise ValueError(f"{name} has {durations.batch} rows for a batch of {tokens.shape[0]}")


def _patch_fn(kind: str) -> Callable[..., Tensor]:
    import transformer_lens.patching as tl_patching

    if kind not in PATCH_KINDS:
        raise ValueError(f"kind must be one of {sorted(PATCH_KINDS)} (got {kind!r})")
    fn: Callable[..., Tensor] = getattr(tl_patching, PATCH_KINDS[kind])
    return fn


def _clean_cache(
    model: Model, tokens: Tensor, durations: Durations | None
) -> tuple[Tensor, ActivationCache]:
    with torch.no_grad(), run_under(model, durations):
        logits, cache = model.run_with_cache(tokens)
    return torch.as_tensor(logits), cache


def patch_across_durations(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    clean: Durations | None,
    corrupt: Durations | None,
    metric: Metric,
    *,
    kind: PatchKind | str = "resid_pre",
    corrupted_tokens: Int[Tensor, "batch pos"] | None = None,
    clean_cache: ActivationCache | None = None,
    progress: bool = True,
) -> Tensor:
    """Patch clean activations (under ``clean``) into the corrupted run (under ``corrupt``).

    Args:
        model: the ``HookedTransformer`` (it must not already have a continuous signal).
        tokens: ``[batch, pos]`` token ids of the clean run.
        clean: durations of the clean run (``None``: plain).
        corrupt: durations of the corrupted run (``None``: plain).
        metric: patched logits -> scalar, as TransformerLens's ``patching_metric``.
        kind: which activation and function (see :data:`PATCH_KINDS`).
        corrupted_tokens: token ids of the corrupted run (default: ``tokens``).
        clean_cache: reuse a cache taken under ``clean`` (default: run it here).
        progress: show TransformerLens's progress bar.

    Returns:
        What the TransformerLens function returns: ``[n_layers, pos]`` for ``resid_pre``,
        ``resid_mid``, ``attn_out``, ``mlp_out``; ``[n_layers, n_heads]`` for ``heads``;
        ``[n_layers, pos, n_heads]`` for ``heads_by_pos``; ``[5, n_layers, n_heads]`` for
        ``heads_every`` (output, q, k, v, pattern).

    Raises:
        ValueError: unknown ``kind``, or durations that do not fit the tokens.
        TypeError: durations that are not :class:`Durations`.
    """
    fn = _patch_fn(kind)
    corrupted = tokens if corrupted_tokens is None else corrupted_tokens
    _check(model, tokens, clean, "clean")
    _check(model, corrupted, corrupt, "corrupt")
    if clean_cache is None:
        _, clean_cache = _clean_cache(model, tokens, clean)
    sink = contextlib.nullcontext() if progress else contextlib.redirect_stderr(io.StringIO())
    with torch.no_grad(), run_under(model, corrupt), sink:
        return fn(model, corrupted, clean_cache, metric)


def patch_all_across_durations(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    clean: Durations | None,
    corrupt: Durations | None,
    metric: Metric,
    *,
    kinds: Sequence[PatchKind | str] = ("resid_pre", "attn_out", "mlp_out", "heads"),
    corrupted_tokens: Int[Tensor, "batch pos"] | None = None,
    progress: bool = True,
) -> dict[str, Tensor]:
    """:func:`patch_across_durations` for several kinds, sharing one clean cache.

    >>> from tl_continuous.tiny import tiny_model
    >>> model = tiny_model("learned")
    >>> out = patch_all_across_durations(model, torch.tensor([[1, 2, 3]]), None,
    ...     Durations(torch.tensor([1.0, 0.5, 1.0])), lambda x: x[0, -1, 0], progress=False)
    >>> {k: tuple(v.shape) for k, v in out.items()}
    {'resid_pre': (2, 3), 'attn_out': (2, 3), 'mlp_out': (2, 3), 'heads': (2, 4)}
    """
    for kind in kinds:
        _patch_fn(kind)
    _check(model, tokens, clean, "clean")
    _, cache = _clean_cache(model, tokens, clean)
    return {
        kind: patch_across_durations(
            model,
            tokens,
            clean,
            corrupt,
            metric,
            kind=kind,
            corrupted_tokens=corrupted_tokens,
            clean_cache=cache,
            progress=progress,
        )
        for kind in kinds
    }


def logit_diff_metric(
    clean_logits: Float[Tensor, "batch pos d_vocab"],
    corrupt_logits: Float[Tensor, "batch pos d_vocab"],
    answer: int,
    wrong: int,
) -> Metric:
    """Normalised logit difference at the last position: 1 = clean, 0 = corrupted.

    Args:
        clean_logits, corrupt_logits: logits of the two runs.
        answer, wrong: token ids; the difference is ``logit[answer] - logit[wrong]``.

    Raises:
        ValueError: the two runs give the same difference (nothing to normalise by).

    >>> clean = torch.tensor([[[2.0, 0.0]]]); corrupt = torch.tensor([[[0.0, 1.0]]])
    >>> m = logit_diff_metric(clean, corrupt, 0, 1)
    >>> float(m(clean)), float(m(corrupt))
    (1.0, 0.0)
    """

    def diff(logits: Tensor) -> Tensor:
        last = logits[:, -1].float()
        return (last[:, answer] - last[:, wrong]).mean()

    hi, lo = float(diff(clean_logits)), float(diff(corrupt_logits))
    if hi == lo:
        raise ValueError("clean and corrupted runs have the same logit difference")

    def metric(logits: Tensor) -> Tensor:
        return (diff(logits) - lo) / (hi - lo)

    return metric
