"""Duration-weighted attention in a plain Hugging Face model (eager attention).

The one function here, :func:`install_attention_bias`, is how a backend that runs a Hugging
Face model as it is (:mod:`.nnsight`) adds ``log d_j`` to every pre-softmax score of key
``j``. On the ``"eager"`` implementation Hugging Face's attention adds the 4-D float
``attention_mask`` it is given (0 where a key is visible, the dtype's minimum where it is
masked) to the scores before the softmax; a forward pre-hook on each chosen layer's attention
module adds ``log d`` to that mask's key columns, which is the same sum. Other implementations
(``sdpa``, flash, flex) take no such mask and are refused with an error naming them.

Kept in one place so that a route through transformers' ``AttentionInterface`` (fused
kernels too) can replace it without touching the backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from tl_continuous.backends.base import Undo
from tl_continuous.backends.hf_parts import attention_module, decoder_layers
from tl_continuous.continuous.attention import add_log_durations

__all__ = ["install_attention_bias"]


def install_attention_bias(hf: nn.Module, signal: Any, layers: Sequence[int]) -> list[Undo]:
    """Add ``signal``'s ``log d`` to the attention scores of ``layers``; one undo per hook.

    Args:
        hf: the Hugging Face causal LM.
        signal: the installed ``ContinuousSignal`` (its state is read in every forward).
        layers: decoder layers whose attention gets the term.

    Raises:
        ValueError: the model's attention implementation is not ``"eager"``.
    """
    implementation = getattr(hf.config, "_attn_implementation", None) or "eager"
    if implementation != "eager":
        raise ValueError(
            "duration-weighted attention on a plain Hugging Face model needs "
            f"attn_implementation='eager' (the model has {implementation!r}); load it with "
            "attn_implementation='eager', or pass attention=False"
        )
    blocks = decoder_layers(hf)
    undo: list[Undo] = []
    try:
        for layer in layers:
            module = attention_module(blocks[layer])
            handle = module.register_forward_pre_hook(_mask_hook(signal), with_kwargs=True)
            undo.append(handle.remove)
    except BaseException:
        for u in reversed(undo):
            u()
        raise
    return undo


def _mask_hook(signal: Any) -> Any:
    def hook(module: nn.Module, args: Any, kwargs: dict[str, Any]) -> tuple[Any, Any]:
        mask = kwargs.get("attention_mask")
        state = signal.current()
        if not isinstance(mask, Tensor) or mask.ndim != 4 or not mask.is_floating_point():
            raise RuntimeError(
                f"{type(module).__name__} got no 4-D float attention mask to add log d to "
                "(eager attention builds one; is the attention implementation eager?)"
            )
        if mask.shape[-1] != state.log_d.shape[-1]:
            raise RuntimeError(
                f"the attention mask covers {mask.shape[-1]} keys but the continuous signal "
                f"has {state.log_d.shape[-1]}"
            )
        cache = state.extra.setdefault("attention_bias", {})
        biased = cache.get(id(mask))
        if biased is None or biased[0] is not mask:
            biased = (mask, add_log_durations(mask, state.log_d))
            cache[id(mask)] = biased
        return args, {**kwargs, "attention_mask": biased[1]}

    return hook
