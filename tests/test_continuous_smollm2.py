"""Continuous tokens on the bundled SmolLM2-135M: identity and the Hugging Face route."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformer_lens import HookedTransformer

from tl_continuous import Durations, continuous

pytestmark = pytest.mark.model

PROMPTS = [
    "The capital of France is",
    'Question: In the sentence "apple apple apple apple", how many times is apple mentioned?',
    "Mia delivered 82 packages on Monday and 38 on Tuesday. In total she delivered",
]


@pytest.fixture(scope="module")
def hf_smollm2() -> Any:
    from tl_continuous.models import load_hf_reference

    return load_hf_reference("smollm2-135m")


@torch.no_grad()
def test_all_ones_reproduce_plain_logits(smollm2: HookedTransformer) -> None:
    tokens = smollm2.to_tokens(PROMPTS[:2], padding_side="right")[:, :6]
    plain = smollm2(tokens)
    with continuous(smollm2, Durations.ones(1, tokens.shape[1])):
        cont = smollm2(tokens)
    torch.testing.assert_close(cont, plain, atol=1e-5, rtol=0)


def _duration_vectors(n: int) -> list[Durations]:
    gen = torch.Generator().manual_seed(0)
    return [
        Durations(torch.linspace(0.3, 2.5, n)),
        Durations(0.1 + 2.9 * torch.rand(n, generator=gen), start=4.2),
        Durations.from_spans(n, [(1, n // 2)], value=3.0),
    ]


@torch.no_grad()
@pytest.mark.slow
@pytest.mark.parametrize("prompt", PROMPTS)
def test_agrees_with_hugging_face_route(
    smollm2: HookedTransformer, hf_smollm2: Any, prompt: str
) -> None:
    from tl_continuous.continuous.reference_hf import hf_continuous_logits

    tokens = smollm2.to_tokens(prompt)
    plain = smollm2(tokens)[:, -1].log_softmax(-1)
    for durations in _duration_vectors(tokens.shape[1]):
        with continuous(smollm2, durations):
            ours = smollm2(tokens)[:, -1].log_softmax(-1)
        ref = hf_continuous_logits(hf_smollm2, tokens, durations)[:, -1].log_softmax(-1)
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
        assert (ours - plain).abs().max() > 1e-3  # the durations did something


@torch.no_grad()
def test_from_word_span_on_real_tokens(smollm2: HookedTransformer) -> None:
    prompt = "Pineapples: he ate an apple, then apples and apple pie."
    str_tokens = smollm2.to_str_tokens(prompt)

    def shrunk(d: Durations) -> str:
        values = d.values[0].tolist()
        return "".join(t for t, v in zip(str_tokens, values, strict=True) if v == 0.5)

    assert shrunk(Durations.from_word(smollm2, prompt, "apple", value=0.5)) == (
        " apple, then apples and apple"
    )
    assert shrunk(
        Durations.from_word(smollm2, prompt, "apple", value=0.5, first_to_last=False)
    ) == (" apple apple")


@torch.no_grad()
@pytest.mark.slow
def test_generate_with_kv_cache_gives_new_tokens_duration_one(smollm2: HookedTransformer) -> None:
    tokens = smollm2.to_tokens(PROMPTS[0])
    n = tokens.shape[1]
    durations = Durations.from_spans(n, [(1, 3)], value=0.4)
    with continuous(smollm2, durations):
        generated = smollm2.generate(
            tokens, max_new_tokens=3, do_sample=False, use_past_kv_cache=True, verbose=False
        )
    # the same greedy continuation from full forwards, new tokens at duration 1
    seq = tokens
    for _ in range(3):
        values = torch.cat([durations.values, torch.ones(1, seq.shape[1] - n)], dim=-1)
        with continuous(smollm2, Durations(values)):
            nxt = smollm2(seq)[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=-1)
    assert torch.equal(generated, seq)
    with continuous(smollm2, durations), pytest.raises(ValueError, match="KV cache"):
        smollm2.generate(tokens, max_new_tokens=2, use_past_kv_cache=False, verbose=False)
