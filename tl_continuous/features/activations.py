"""Residual-stream activations at one hook point, every position: what an SAE is trained and
judged on.

:func:`residuals_at` runs token ids through the model and returns the activation of one hook
at every position, ending each forward pass at that hook (later blocks are not run). It
works on a ``HookedTransformer`` and a ``TransformerBridge`` alike (block hook names are
aliases on the bridge) and inside :func:`~tl_continuous.continuous.signal.continuous`.
:func:`token_activations` flattens them to one row per token, leaving out the first
``skip_first`` positions of each sequence: SmolLM2's first position is an attention sink whose
residual norm is about a hundred times the others' (23800 against 170 after block 15), which
no dictionary of ordinary tokens should be asked to reconstruct.

>>> from tl_continuous.tiny import tiny_model
>>> model = tiny_model()
>>> residuals_at(model, torch.randint(0, 50, (3, 5)), "blocks.0.hook_resid_post").shape
torch.Size([3, 5, 64])
>>> token_activations(model, torch.randint(0, 50, (3, 5)), "blocks.0.hook_resid_post").shape
torch.Size([12, 64])
"""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_continuous._progress import progress as _progress

if TYPE_CHECKING:
    from tl_continuous.backends.base import Model

__all__ = ["residuals_at", "token_activations"]


class _Read(Exception):
    """Raised by the reading hook: the rest of the forward pass is not needed."""


def residuals_at(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    hook_name: str,
    *,
    batch_size: int = 16,
    progress: bool = False,
) -> Float[Tensor, "batch pos d_model"]:
    """The activation of ``hook_name`` at every position (float32, CPU).

    Args:
        model: a ``HookedTransformer`` or ``TransformerBridge`` (durations installed by
            ``continuous`` apply).
        tokens: ``[batch, pos]`` token ids.
        hook_name: a hook point of the model (``blocks.15.hook_resid_post``).
        batch_size: sequences per forward pass.
        progress: a progress bar over the batches.

    Raises:
        ValueError: ``tokens`` is not ``[batch, pos]``, ``batch_size < 1``, or the model has
            no hook ``hook_name``.
    """
    if tokens.ndim != 2 or tokens.is_floating_point() or tokens.shape[0] == 0:
        raise ValueError(
            f"tokens must be integer ids of shape [batch, pos] (got {tokens.dtype} "
            f"{tuple(tokens.shape)})"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer (got {batch_size})")
    if hook_name not in model.hook_dict:
        raise ValueError(f"hook_name {hook_name!r} is not a hook point of the model")
    store: list[Tensor] = []

    def read(act: Tensor, hook: Any) -> None:
        store.append(act.detach().to("cpu", torch.float32))
        raise _Read

    starts = range(0, int(tokens.shape[0]), batch_size)
    device = model.cfg.device
    for i in _progress(starts, enabled=progress, total=len(starts), desc="activations"):
        before = len(store)
        with torch.inference_mode(), model.hooks(fwd_hooks=[(hook_name, read)]), suppress(_Read):
            model(tokens[i : i + batch_size].to(device), return_type=None)
        if len(store) != before + 1:
            raise ValueError(f"hook_name {hook_name!r} did not fire in the forward pass")
    return torch.cat(store)


def token_activations(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    hook_name: str,
    *,
    skip_first: int = 1,
    batch_size: int = 16,
    progress: bool = False,
) -> Float[Tensor, "n_tokens d_model"]:
    """One row per token: :func:`residuals_at` without the first ``skip_first`` positions of
    each sequence, flattened in sequence order.

    Raises:
        ValueError: ``skip_first`` leaves no position.
    """
    if not 0 <= skip_first < tokens.shape[-1]:
        raise ValueError(
            f"skip_first must be in [0, pos={tokens.shape[-1]}) so that a position is left "
            f"(got {skip_first})"
        )
    acts = residuals_at(model, tokens, hook_name, batch_size=batch_size, progress=progress)
    return acts[:, skip_first:].reshape(-1, acts.shape[-1])
