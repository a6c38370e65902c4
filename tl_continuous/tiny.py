"""Tiny random models built from a config: no files, milliseconds to build.

:func:`tiny_model` builds a ``HookedTransformer`` (TransformerLens 3.x); :func:`tiny_bridge` a
``TransformerBridge`` around a tiny random Hugging Face model of the same shape (Llama-like
with grouped-query attention, GPT-NeoX-like partial rotary, GPT-2-like learned positions),
which :func:`tiny_hf` returns bare.

They exist for tests, doctests and examples of the mechanics. They have no tokenizer:
feed them token ids.

>>> model = tiny_model("rotary")
>>> model(torch.tensor([[1, 2, 3]])).shape
torch.Size([1, 3, 50])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

__all__ = ["TinyKind", "tiny_bridge", "tiny_config", "tiny_hf", "tiny_model"]

TinyKind = Literal["rotary", "rotary-partial", "learned", "nopos"]


def tiny_config(
    kind: TinyKind = "rotary",
    *,
    n_layers: int = 2,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    **overrides: Any,
) -> HookedTransformerConfig:
    """Config of a tiny model.

    Args:
        kind: ``"rotary"`` (Llama-like: RMS norm, gated MLP, grouped-query attention with
            4 query and 2 key/value heads), ``"rotary-partial"`` (GPT-NeoX-like rotary on half
            of each head, adjacent-pair layout), ``"learned"`` (GPT-2-like learned absolute
            positions) or ``"nopos"`` (learned positions with an all-zero table, i.e. no
            positional information at all; see :func:`tiny_model`).
        n_layers: number of blocks.
        dtype: parameter dtype.
        seed: weight initialisation seed.
        **overrides: any other ``HookedTransformerConfig`` field.
    """
    common: dict[str, Any] = {
        "n_layers": n_layers,
        "d_model": 64,
        "d_head": 16,
        "n_heads": 4,
        "d_mlp": 128,
        "d_vocab": 50,
        "n_ctx": 64,
        "dtype": dtype,
        "seed": seed,
        "device": "cpu",
    }
    if kind == "rotary":
        common |= {
            "act_fn": "silu",
            "normalization_type": "RMS",
            "positional_embedding_type": "rotary",
            "rotary_dim": 16,
            "rotary_adjacent_pairs": False,
            "rotary_base": 10000,
            "n_key_value_heads": 2,
            "gated_mlp": True,
            "final_rms": True,
        }
    elif kind == "rotary-partial":
        common |= {
            "act_fn": "gelu",
            "normalization_type": "LN",
            "positional_embedding_type": "rotary",
            "rotary_dim": 8,
            "rotary_adjacent_pairs": True,
            "rotary_base": 500,
        }
    elif kind in ("learned", "nopos"):
        common |= {
            "act_fn": "gelu_new",
            "normalization_type": "LN",
            "positional_embedding_type": "standard",
        }
    else:
        raise ValueError(
            f"kind must be one of 'rotary', 'rotary-partial', 'learned', 'nopos' (got {kind!r})"
        )
    common |= overrides
    from tl_continuous.backends import require_hooked

    require_hooked(f"use tiny_bridge({kind!r})")
    from transformer_lens import HookedTransformerConfig

    return HookedTransformerConfig(**common)


def tiny_model(
    kind: TinyKind = "rotary",
    *,
    n_layers: int = 2,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    **overrides: Any,
) -> HookedTransformer:
    """A tiny random model (see :func:`tiny_config` for the kinds), in eval mode.

    ``"nopos"`` zeroes ``W_pos`` so that the model sees no position at all.

    Raises:
        ImportError: TransformerLens 4 is installed (no ``HookedTransformer``); use
            :func:`tiny_bridge`.
    """
    from tl_continuous.backends import require_hooked

    require_hooked(f"use tiny_bridge({kind!r})")
    from transformer_lens import HookedTransformer

    model = HookedTransformer(
        tiny_config(kind, n_layers=n_layers, dtype=dtype, seed=seed, **overrides)
    )
    if kind == "nopos":
        with torch.no_grad():
            model.W_pos.zero_()
    return model.eval()


# eager attention, so that the Hugging Face reference route's float 4-D mask applies as given
_EAGER: dict[str, Any] = {"attn_implementation": "eager"}


def _hf_tiny(kind: str, n_layers: int, **overrides: Any) -> tuple[Any, str]:
    """A tiny random Hugging Face causal LM of the kind, with eager attention."""
    import transformers

    shape: dict[str, Any]
    if kind == "rotary":
        shape = {
            "vocab_size": 50,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": n_layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 64,
            "rope_theta": 10000.0,
        }
        arch = "LlamaForCausalLM"
        config: Any = transformers.LlamaConfig(**(shape | _EAGER | overrides))
    elif kind == "rotary-partial":
        shape = {
            "vocab_size": 50,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": n_layers,
            "num_attention_heads": 4,
            "max_position_embeddings": 64,
            "rotary_pct": 0.5,
            "rotary_emb_base": 500,
        }
        arch = "GPTNeoXForCausalLM"
        config = transformers.GPTNeoXConfig(**(shape | _EAGER | overrides))
    elif kind in ("learned", "nopos"):
        shape = {
            "vocab_size": 50,
            "n_embd": 64,
            "n_layer": n_layers,
            "n_head": 4,
            "n_positions": 64,
        }
        arch = "GPT2LMHeadModel"
        config = transformers.GPT2Config(**(shape | _EAGER | overrides))
    else:
        raise ValueError(
            f"kind must be one of 'rotary', 'rotary-partial', 'learned', 'nopos' (got {kind!r})"
        )
    model = getattr(transformers, arch)(config)
    return model, arch


def tiny_bridge(
    kind: TinyKind = "rotary",
    *,
    n_layers: int = 2,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    **overrides: Any,
) -> nn.Module:
    """A ``TransformerBridge`` around a tiny random Hugging Face model, in eval mode.

    Kinds as in :func:`tiny_config`: ``"rotary"`` is a Llama (RMS norm, gated MLP, 4 query and
    2 key/value heads), ``"rotary-partial"`` a GPT-NeoX (rotary on half of each head),
    ``"learned"`` a GPT-2, ``"nopos"`` a GPT-2 with an all-zero position table. The bridge
    computes in Hugging Face numerics (no compatibility mode). ``overrides`` go to the Hugging
    Face config (e.g. ``rope_scaling``).

    >>> bridge = tiny_bridge("learned")
    >>> bridge(torch.tensor([[1, 2, 3]])).shape
    torch.Size([1, 3, 50])
    """
    from tl_continuous.backends.bridge import wrap_hf_model

    hf = tiny_hf(kind, n_layers=n_layers, dtype=dtype, seed=seed, **overrides)
    bridge = wrap_hf_model(hf, dtype=dtype)
    return bridge.eval()


def tiny_hf(
    kind: TinyKind = "rotary",
    *,
    n_layers: int = 2,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    **overrides: Any,
) -> nn.Module:
    """The tiny random Hugging Face model that :func:`tiny_bridge` wraps (same arguments, same
    weights), in eval mode, with eager attention: for wrappers of Hugging Face models such as
    nnsight's ``NNsight``.

    >>> tiny_hf("learned")(torch.tensor([[1, 2, 3]])).logits.shape
    torch.Size([1, 3, 50])
    """
    torch.manual_seed(seed)
    hf, arch = _hf_tiny(kind, n_layers, **overrides)
    hf = hf.to(dtype).eval()
    if kind == "nopos":
        with torch.no_grad():
            hf.transformer.wpe.weight.zero_()
    hf.config.architectures = [arch]
    return hf
