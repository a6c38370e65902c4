"""Tiny random ``HookedTransformer``s built from a config: no files, milliseconds to build.

They exist for tests, doctests and examples of the mechanics. They have no tokenizer:
feed them token ids.

>>> model = tiny_model("rotary")
>>> model(torch.tensor([[1, 2, 3]])).shape
torch.Size([1, 3, 50])
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

__all__ = ["TinyKind", "tiny_config", "tiny_model"]

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
    """
    model = HookedTransformer(
        tiny_config(kind, n_layers=n_layers, dtype=dtype, seed=seed, **overrides)
    )
    if kind == "nopos":
        with torch.no_grad():
            model.W_pos.zero_()
    return model.eval()
