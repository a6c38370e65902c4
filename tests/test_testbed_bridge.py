"""The counting testbed carried over to Hugging Face GPT-NeoX, on the ``TransformerBridge``.

The bridge model must be the shipped ``HookedTransformer``: equal logits in float64 (where only
the conversion can differ; measured 2e-14), float32 rounding apart in float32 (measured 2-4e-5
on logits up to ~18: the two compute the same sums in different orders), the same under
``continuous()`` with fractional durations (measured up to 6e-5), and the same continuity
experiment.
"""

from __future__ import annotations

import random

import pytest
import torch
from safetensors.torch import load_file
from transformer_lens.model_bridge import TransformerBridge

from tl_continuous import Durations, continuous
from tl_continuous.backends.bridge import rotary_modules
from tl_continuous.testbed.experiment import CountingContinuityResult
from tl_continuous.testbed.hf import TestbedRotaryEmbedding, load_testbed_bridge, load_testbed_hf
from tl_continuous.testbed.model import CHECKPOINT_DIR, load_testbed
from tl_continuous.testbed.task import VOCAB, CountingTask, collate

EXACT = 1e-9  # float64: the conversion alone
FP32 = 1e-4  # float32: summation order (measured 2-4e-5)
DURATIONS = 2e-4  # fractional rotary angles, float32 on both sides (measured up to 6e-5)


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    """Real testbed prompts, right-padded with <pad> (counts 0..9, both layouts)."""
    task = CountingTask()
    rng = random.Random(2024)
    return collate([task.sample(rng) for _ in range(48)])[0]


@pytest.fixture(scope="module", params=[torch.float64, torch.float32], ids=["fp64", "fp32"])
def pair(request) -> tuple[torch.nn.Module, torch.nn.Module, float]:
    dtype = request.param
    tol = EXACT if dtype == torch.float64 else FP32
    return load_testbed(dtype=dtype), load_testbed_bridge(dtype=dtype), tol


def _durations(tokens: torch.Tensor, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    values = 0.2 + 1.6 * torch.rand(tokens.shape, generator=g, dtype=torch.float64)
    return values.to(dtype)


# ------------------------------------------------------------------------- conversion


def test_hf_model_is_gpt_neox_with_the_unembedding_bias():
    hf = load_testbed_hf()
    shipped = load_file(CHECKPOINT_DIR / "model.safetensors")
    assert type(hf).__name__ == "GPTNeoXForCausalLM"
    assert hf.config.use_parallel_residual is False
    assert hf.config.rope_parameters["partial_rotary_factor"] == 1.0
    assert hf.config._attn_implementation == "eager"
    head = hf.get_output_embeddings()
    assert head.bias is not None
    assert torch.equal(head.bias, shipped["unembed.b_U"])
    assert shipped["unembed.b_U"].abs().max() > 0.1  # the bias matters
    assert torch.equal(head.weight, shipped["unembed.W_U"].T)


def test_rotary_reproduces_the_shipped_tables_bit_for_bit():
    shipped = load_file(CHECKPOINT_DIR / "model.safetensors")
    rotary = load_testbed_hf().gpt_neox.rotary_emb
    assert isinstance(rotary, TestbedRotaryEmbedding)
    cos, sin = rotary(torch.zeros(1, 64, 96), torch.arange(64)[None])
    assert torch.equal(cos[0], shipped["blocks.0.attn.rotary_cos"])
    assert torch.equal(sin[0], shipped["blocks.0.attn.rotary_sin"])


def test_hf_model_logits_equal_the_shipped_model(tokens):
    """The plain Hugging Face model, float32 (its eager attention takes the softmax in float32
    whatever the dtype, so float64 would not be more exact; the bridge's own attention is)."""
    hooked, hf = load_testbed(), load_testbed_hf()
    with torch.no_grad():
        diff = (hooked(tokens) - hf(tokens).logits).abs().max().item()
    assert diff < FP32


def test_bridge_logits_equal_the_shipped_model(pair, tokens):
    hooked, bridge, tol = pair
    assert isinstance(bridge, TransformerBridge)
    with torch.no_grad():
        expected, got = hooked(tokens), bridge(tokens)
    assert got.dtype == expected.dtype
    assert (got - expected).abs().max().item() < tol
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
    assert torch.equal(bridge.unembed.b_U.detach(), hooked.unembed.b_U.detach())


def test_load_model_bridge_counts():
    from tl_continuous import load_model

    model = load_model("counting-testbed", backend="bridge")
    assert isinstance(model, TransformerBridge)
    assert model.cfg.model_name == "counting-testbed"
    assert not model.training
    assert any(isinstance(m, TestbedRotaryEmbedding) for m in rotary_modules(model))
    prompt = VOCAB.encode("<bos> pear apple . apple , apple how-many apple")[None]
    with torch.no_grad():
        assert VOCAB.decode([int(model(prompt)[0, -1].argmax())]) == "3"


# ------------------------------------------------------------------------- under durations


@pytest.mark.parametrize(
    "attention, positions",
    [(True, True), (False, True), (True, False)],
    ids=["full", "positions-only", "attention-only"],
)
def test_bridge_equals_shipped_model_under_durations(pair, tokens, attention, positions):
    """Fractional durations: real-valued rotary positions and duration-weighted attention.

    Both sides read the rotary angles of fractional positions in float32 (the hooked backend
    adds a float64 correction to the float32 table, Hugging Face recomputes the angle), so
    float64 agrees only to float32 precision here (measured up to 6e-5; attention-only, which
    keeps integer positions, agrees to 4e-14 in float64).
    """
    hooked, bridge, _ = pair
    values = _durations(tokens, hooked.cfg.dtype)
    with torch.no_grad():
        plain = hooked(tokens)
        with continuous(hooked, Durations(values), attention=attention, positions=positions):
            expected = hooked(tokens)
        with continuous(bridge, Durations(values), attention=attention, positions=positions):
            got = bridge(tokens)
    assert (expected - plain).abs().max() > 1.0  # the durations do change the logits
    tol = EXACT if not positions and hooked.cfg.dtype == torch.float64 else DURATIONS
    assert (got - expected).abs().max().item() < tol


# ------------------------------------------------------------------------- the experiment


def test_counting_experiment_on_the_bridge_matches_the_hooked_run():
    settings = {
        "ns": [1, 3, 6],
        "cs": [0.3, 0.5, 1.0, 1.5],
        "n_prompts": 2,
        "uneven_trials": 3,
        "progress": False,
    }
    hooked = CountingContinuityResult.from_model(load_testbed(), **settings)
    bridge = CountingContinuityResult.from_model(load_testbed_bridge(), **settings)
    assert bridge.model_name == "counting-testbed"
    for name in ("probs", "count_mass", "expected_std", "uneven_expected", "even_expected"):
        assert torch.allclose(getattr(bridge, name), getattr(hooked, name), rtol=0, atol=1e-4)
    assert torch.allclose(bridge.expected, hooked.expected, rtol=0, atol=1e-4)
    a, b = hooked.summary(), bridge.summary()
    for variant, numbers in a["variants"].items():
        for key, value in numbers.items():
            assert b["variants"][variant][key] == pytest.approx(value, abs=1e-4), (variant, key)
    assert b["uneven_mae_vs_sum"] == pytest.approx(a["uneven_mae_vs_sum"], abs=1e-4)
    # the curve is not flat: durations move E[count] on the bridge too
    assert (bridge.expected[0, :, -1] - bridge.expected[0, :, 0]).min() > 0.5
