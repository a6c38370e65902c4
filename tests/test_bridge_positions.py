"""Real positions on the TransformerBridge go through the model's own rope variant.

The bridge replaces the ``position_ids`` of Hugging Face's rotary module, so every rope
scaling Hugging Face implements applies to the real positions. Each variant must (a) equal
the Hugging Face route (float ``position_ids`` and a log-duration 4-D mask given to the
model itself) and (b) differ from the unscaled model under the same durations, which shows
that the scaling is in effect (positions run past the model's 64-token window, where
dynamic scaling starts).
"""

from __future__ import annotations

import pytest
import torch

from tl_continuous import Durations, continuous
from tl_continuous.continuous.reference_hf import hf_continuous_logits
from tl_continuous.tiny import tiny_bridge

TOKENS = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
LONG = Durations(torch.tensor([1.0, 30.0, 30.0, 30.0, 30.0, 30.0, 30.0, 30.0]))

SCALINGS = {
    "linear": {"rope_type": "linear", "factor": 2.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
    "llama3": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
    },
}


@torch.no_grad()
@pytest.mark.parametrize("name", sorted(SCALINGS))
def test_rope_scaling_follows_the_hugging_face_route(name: str) -> None:
    scaled = tiny_bridge("rotary", rope_parameters={"rope_theta": 10000.0, **SCALINGS[name]})
    plain = tiny_bridge("rotary")  # same seed: same weights, no scaling
    with continuous(scaled, LONG):
        got = scaled(TOKENS)
    with continuous(plain, LONG):
        unscaled = plain(TOKENS)
    want = hf_continuous_logits(scaled.original_model, TOKENS, LONG)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (got - unscaled).abs().max() > 1e-3
