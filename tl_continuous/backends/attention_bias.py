"""Duration-weighted attention in a plain Hugging Face model, on its own attention route.

The one function here, :func:`install_attention_bias`, is how a backend that runs a Hugging
Face model as it is (:mod:`.nnsight`) adds ``log d_j`` to every pre-softmax score of key
``j``: it switches the model's attention implementation (``"eager"``, ``"sdpa"`` or
``"flex_attention"``) to the continuous implementation of the same route
(:func:`.hf_attention.continuous_implementation`: the route's kernel plus the per-key bias)
and attaches the signal to the chosen layers' attention modules
(:func:`.hf_attention.attach_bias`); undoing restores the implementation name and detaches
them. A ``TransformerBridge`` does the same on its fused routes (:mod:`.bridge`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from tl_continuous.backends.base import Undo
from tl_continuous.backends.hf_attention import (
    attach_bias,
    check_route,
    continuous_implementation,
    plain_route,
    set_implementation,
)
from tl_continuous.backends.hf_parts import attention_module, decoder_layers

__all__ = ["install_attention_bias"]


def install_attention_bias(hf: nn.Module, signal: Any, layers: Sequence[int]) -> list[Undo]:
    """Add ``signal``'s ``log d`` to the attention scores of ``layers``; return the undos.

    Args:
        hf: the Hugging Face causal LM.
        signal: the installed ``ContinuousSignal`` (its state is read in every forward).
        layers: decoder layers whose attention gets the term.

    Raises:
        ValueError: the model's attention implementation cannot carry the bias (not eager,
            sdpa or flex_attention); the message names it.
    """
    blocks = decoder_layers(hf)
    modules = [attention_module(blocks[layer]) for layer in layers]
    config: Any = hf.config
    route = plain_route(config._attn_implementation)
    check_route(route, argument="the model's attention implementation (attn_implementation)")
    restore = set_implementation(config, modules, continuous_implementation(route))
    try:
        detach = attach_bias(modules, signal)
    except BaseException:
        restore()
        raise
    return [restore, detach]
