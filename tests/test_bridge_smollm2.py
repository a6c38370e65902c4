"""The TransformerBridge backend on the bundled SmolLM2-135M.

Final-position log-probabilities under durations (fractional, above 1, a padded batch) agree
with the Hugging Face route (float positions, log-duration 4-D mask, eager attention) in
Hugging Face numerics, and with the ``HookedTransformer`` backend in compatibility mode;
trajectories collected on the bridge equal the ``HookedTransformer`` ones.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tl_continuous import Durations, LinesOfThought, continuous
from tl_continuous.continuous.reference_hf import hf_continuous_logits

pytestmark = pytest.mark.model

PROMPTS = [
    "The capital of France is",
    'Question: In the sentence "apple apple apple apple", how many times is apple mentioned?',
]


@pytest.fixture(scope="module")
def bridge() -> Any:
    from tl_continuous.models import load_model

    return load_model("smollm2-135m", backend="bridge", device="cpu")


@pytest.fixture(scope="module")
def hf_smollm2() -> Any:
    from tl_continuous.models import load_hf_reference

    return load_hf_reference("smollm2-135m")


def _durations(n: int) -> list[Durations]:
    gen = torch.Generator().manual_seed(1)
    return [
        Durations(0.1 + 0.8 * torch.rand(n, generator=gen)),  # fractional
        Durations(1.0 + 2.0 * torch.rand(n, generator=gen), start=3.5),  # above 1
        Durations.from_spans(n, [(1, n // 2)], value=0.25),
    ]


def _final(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, -1].log_softmax(-1)


@torch.no_grad()
@pytest.mark.parametrize("prompt", PROMPTS)
def test_bridge_agrees_with_hugging_face_route(bridge: Any, hf_smollm2: Any, prompt: str) -> None:
    tokens = bridge.to_tokens(prompt)
    plain = _final(bridge(tokens))
    for durations in _durations(tokens.shape[1]):
        with continuous(bridge, durations):
            ours = _final(bridge(tokens))
        ref = _final(hf_continuous_logits(hf_smollm2, tokens, durations))
        assert (ours - ref).abs().max() < 1e-4
        assert (ours - plain).abs().max() > 1e-3  # the durations do something


@torch.no_grad()
def test_bridge_padded_batch_agrees_with_unpadded_hugging_face_route(
    bridge: Any, hf_smollm2: Any
) -> None:
    rows = [bridge.to_tokens(p)[0] for p in PROMPTS]
    n = max(len(r) for r in rows)
    pad = int(bridge.tokenizer.pad_token_id or 0)
    tokens = torch.full((len(rows), n), pad)
    mask = torch.zeros(len(rows), n, dtype=torch.long)
    values = torch.ones(len(rows), n)
    wanted = []
    for i, row in enumerate(rows):
        tokens[i, n - len(row) :] = row
        mask[i, n - len(row) :] = 1
        own = _durations(len(row))[0]
        values[i, n - len(row) :] = own.values[0]
        wanted.append(_final(hf_continuous_logits(hf_smollm2, row[None], own))[0])
    with continuous(bridge, Durations(values)):
        got = _final(bridge(tokens, attention_mask=mask))
    for i in range(len(rows)):
        assert (got[i] - wanted[i]).abs().max() < 1e-4


@torch.no_grad()
def test_compatibility_bridge_agrees_with_hooked(smollm2: Any) -> None:
    from tl_continuous.models import load_model

    compat = load_model("smollm2-135m", backend="bridge", compatibility=True, device="cpu")
    tokens = smollm2.to_tokens(PROMPTS[1])
    for durations in _durations(tokens.shape[1]):
        with continuous(compat, durations):
            ours = _final(compat(tokens))
        with continuous(smollm2, durations):
            ref = _final(smollm2(tokens))
        assert (ours - ref).abs().max() < 1e-4


@torch.no_grad()
def test_bridge_trajectories_equal_hooked(bridge: Any, smollm2: Any) -> None:
    tokens = torch.randint(100, 4000, (5, 10), generator=torch.Generator().manual_seed(0))
    ours = LinesOfThought.collect(bridge, tokens, batch_size=5, progress=False)
    ref = LinesOfThought.collect(smollm2, tokens, batch_size=5, progress=False)
    assert ours.layer_names == ref.layer_names
    err = (ours.trajectories - ref.trajectories).norm(dim=-1) / ref.trajectories.norm(dim=-1)
    assert float(err.max()) < 1e-4


def test_load_model_rejects_an_unknown_backend() -> None:
    from tl_continuous.models import load_model

    with pytest.raises(ValueError, match="backend must be one of"):
        load_model("smollm2-135m", backend="vllm")


@torch.no_grad()
def test_bridge_kl_curves_and_variance_law_match_hooked(bridge: Any, smollm2: Any) -> None:
    from tl_continuous.lines_of_thought.bases import TrajectoryBases
    from tl_continuous.lines_of_thought.dynamics import ResidualStatistics, VarianceLawFit
    from tl_continuous.lines_of_thought.truncation import (
        truncation_kl_every_layer,
        truncation_kl_last_layer,
    )

    tokens = torch.randint(100, 4000, (48, 8), generator=torch.Generator().manual_seed(2))
    ks = [4, 16, 32]
    results = {}
    for name, model in (("bridge", bridge), ("hooked", smollm2)):
        lot = LinesOfThought.collect(model, tokens, batch_size=24, progress=False)
        bases = TrajectoryBases.from_ensemble(lot)
        last = truncation_kl_last_layer(model, lot, bases, ks, progress=False)
        every = truncation_kl_every_layer(model, lot, bases, ks, batch_size=24, progress=False)
        n = lot.n_layers
        stats = ResidualStatistics.from_tensors(lot.trajectories, bases.U, bases.S)
        fit = VarianceLawFit.from_statistics(stats, layers=(n // 6, n - n // 6))
        results[name] = (last.kl_mean, every.kl_mean, fit.alpha)
    for ours, ref in zip(results["bridge"][:2], results["hooked"][:2], strict=True):
        assert float(((ours - ref).abs() / ref.abs().clamp(min=1e-6)).max()) < 1e-3
    assert abs(results["bridge"][2] - results["hooked"][2]) < 1e-3 * abs(results["hooked"][2])
