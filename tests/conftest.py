"""Shared fixtures.

Mechanics are tested on tiny random models (milliseconds, no files); behaviour on the
bundled SmolLM2-135M, loaded once per session.
"""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer

from tl_continuous.tiny import tiny_model


@pytest.fixture
def tiny_rotary() -> HookedTransformer:
    """Llama-like: RMS norm, gated MLP, rotary, grouped-query attention (4 q / 2 kv heads)."""
    return tiny_model("rotary")


@pytest.fixture
def tiny_rotary_partial() -> HookedTransformer:
    """NeoX-like: rotary on half of each head, adjacent-pair layout, LayerNorm."""
    return tiny_model("rotary-partial")


@pytest.fixture
def tiny_learned() -> HookedTransformer:
    """GPT-2-like: learned absolute position table."""
    return tiny_model("learned")


@pytest.fixture
def tiny_nopos() -> HookedTransformer:
    """One layer, no positional information (all-zero position table)."""
    return tiny_model("nopos", n_layers=1)


@pytest.fixture(scope="session")
def smollm2() -> HookedTransformer:
    """The bundled SmolLM2-135M-Instruct, fp32, on the CPU (converted once, then cached)."""
    from tl_continuous.models import load_model

    torch.set_grad_enabled(True)
    return load_model("smollm2-135m", device="cpu")
