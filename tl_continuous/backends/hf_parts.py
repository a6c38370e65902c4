"""Where the parts of a plain Hugging Face causal LM are (no TransformerLens around it).

A backend that runs a Hugging Face model as it is (:mod:`.nnsight`) finds what the
continuous mechanism and a line of thought touch by structure, not by architecture name:

* the base model (``model.base_model``: ``LlamaModel``, ``GPT2Model``, ``GPTNeoXModel``, ...);
* the decoder layers: the ``nn.ModuleList`` under the base model with one entry per layer;
* each layer's attention: its one child whose class name ends in ``Attention``;
* rotary modules: modules whose class name ends in ``RotaryEmbedding``;
* a learned position table: the base model's ``wpe`` (GPT-2 family);
* the final normalisation and each layer's second normalisation (the residual stream after
  attention, ``hook_resid_mid``, is its input), by the names Hugging Face uses.

>>> import transformers
>>> config = transformers.LlamaConfig(vocab_size=50, hidden_size=64, intermediate_size=128,
...     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
>>> hf = transformers.LlamaForCausalLM(config)
>>> len(decoder_layers(hf)), type(attention_module(decoder_layers(hf)[0])).__name__
(2, 'LlamaAttention')
>>> positional_scheme(hf)
'rotary'
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

__all__ = [
    "attention_module",
    "base_model",
    "decoder_layers",
    "final_norm",
    "mid_norm",
    "n_layers",
    "normalized",
    "position_table",
    "positional_scheme",
    "rotary_modules",
    "text_config",
]

#: names Hugging Face gives a base model's final normalisation
_FINAL_NORMS = ("norm", "ln_f", "final_layer_norm", "final_layernorm")
#: names Hugging Face gives a layer's normalisation before the MLP (input: the mid residual)
_MID_NORMS = ("post_attention_layernorm", "ln_2")


def base_model(hf: nn.Module) -> nn.Module:
    """The base model (the one that takes ``input_ids``) of a Hugging Face causal LM.

    Raises:
        ValueError: ``hf`` is not a Hugging Face model with a ``base_model``.
    """
    base = getattr(hf, "base_model", None)
    if not isinstance(base, nn.Module) or getattr(hf, "config", None) is None:
        raise ValueError(
            f"model must wrap a Hugging Face causal LM with a base model (got {type(hf).__name__})"
        )
    return base


def text_config(hf: nn.Module) -> Any:
    """The config of the language model (the text config of a multimodal one)."""
    config = hf.config
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def n_layers(hf: nn.Module) -> int:
    """Number of decoder layers (``num_hidden_layers`` of the text config)."""
    config = text_config(hf)
    value = getattr(config, "num_hidden_layers", None)
    if value is None:
        raise ValueError(f"{type(config).__name__} has no num_hidden_layers")
    return int(value)


def decoder_layers(hf: nn.Module) -> nn.ModuleList:
    """The base model's ``nn.ModuleList`` of decoder layers (one per layer).

    Raises:
        ValueError: no such list, or more than one.
    """
    count = n_layers(hf)
    found = [
        m
        for m in base_model(hf).modules()
        if isinstance(m, nn.ModuleList)
        and len(m) == count
        and not any(isinstance(child, nn.ModuleList) for child in m)
    ]
    if len(found) != 1:
        raise ValueError(
            f"cannot tell the decoder layers of {type(hf).__name__}: {len(found)} module lists "
            f"of {count} entries"
        )
    return found[0]


def attention_module(layer: nn.Module) -> nn.Module:
    """The attention module of one decoder layer (its child named ``*Attention``).

    Raises:
        ValueError: the layer has no such child, or several.
    """
    found = [m for m in layer.children() if type(m).__name__.endswith("Attention")]
    if len(found) != 1:
        raise ValueError(
            f"cannot tell the attention module of {type(layer).__name__} "
            f"({len(found)} children named *Attention)"
        )
    return found[0]


def rotary_modules(hf: nn.Module) -> list[nn.Module]:
    """The rotary-embedding modules of the base model (one, or one per attention type)."""
    return [m for m in base_model(hf).modules() if type(m).__name__.endswith("RotaryEmbedding")]


def position_table(hf: nn.Module) -> nn.Module | None:
    """The learned absolute position table (``wpe``, GPT-2 family), or ``None``."""
    table = getattr(base_model(hf), "wpe", None)
    ok = isinstance(table, nn.Embedding) and isinstance(table.weight, Tensor)
    return table if ok else None


def positional_scheme(hf: nn.Module) -> str:
    """``"rotary"``, ``"learned"``, or ``"unknown"`` (no rotary module, no ``wpe`` table)."""
    if rotary_modules(hf):
        return "rotary"
    if position_table(hf) is not None:
        return "learned"
    return "unknown"


def final_norm(hf: nn.Module) -> nn.Module | None:
    """The base model's final normalisation (``norm``, ``ln_f``, ...), or ``None``."""
    base = base_model(hf)
    for name in _FINAL_NORMS:
        module = getattr(base, name, None)
        if isinstance(module, nn.Module):
            return module
    return None


def mid_norm(hf: nn.Module, layer: nn.Module) -> nn.Module | None:
    """The normalisation before a layer's MLP, whose input is the residual stream after
    attention; ``None`` where there is none or the block is parallel (GPT-NeoX, GPT-J)."""
    if getattr(text_config(hf), "use_parallel_residual", False):
        return None
    for name in _MID_NORMS:
        module = getattr(layer, name, None)
        if isinstance(module, nn.Module):
            return module
    return None


def normalized(
    norm: nn.Module, x: Float[Tensor, "*batch d_model"]
) -> Float[Tensor, "*batch d_model"]:
    """``x`` normalised as ``norm`` does, without its weight and bias (TransformerLens'
    ``hook_normalized``), in float32 or wider: ``x * rsqrt(mean(x^2) + eps)`` for an RMS
    norm, the same of ``x - mean(x)`` for a LayerNorm.

    Raises:
        ValueError: ``norm`` is neither a LayerNorm nor an RMS norm.

    >>> normalized(nn.LayerNorm(2, eps=0.0), torch.tensor([[1.0, 3.0]]))
    tensor([[-1.,  1.]])
    """
    name = type(norm).__name__
    if not (isinstance(norm, nn.LayerNorm) or "RMSNorm" in name):
        raise ValueError(f"cannot normalise like {name} (neither a LayerNorm nor an RMS norm)")
    eps: Any = getattr(norm, "variance_epsilon", None)
    if eps is None:
        eps = getattr(norm, "eps", 1e-5)
    wide = x if x.dtype == torch.float64 else x.to(torch.float32)
    if isinstance(norm, nn.LayerNorm):
        wide = wide - wide.mean(-1, keepdim=True)
    return wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + float(eps))
