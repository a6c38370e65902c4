"""Batched sweeps against one-prompt-at-a-time forwards (tiny random models).

The mechanics tests run on both backends (``make_tiny`` / ``any_rotary`` of ``conftest.py``):
``HookedTransformer`` and ``TransformerBridge``.
"""

from __future__ import annotations

import pytest
import torch

from tl_continuous import Durations, blend_embeddings, continuous
from tl_continuous.experiments.batched import (
    blend_sweep_probs,
    duration_sweep_probs,
    last_position_only,
)
from tl_continuous.experiments.span_sweep import shrink_tokens
from tl_continuous.tiny import tiny_model

VOCAB = [str(i % 10) for i in range(50)]  # tiny vocab: token i reads as digit i % 10


def one_at_a_time(model, tokens, span, cs):
    rows = []
    for c in cs.tolist():
        d = Durations.from_spans(tokens.shape[-1], [span], value=c)
        with continuous(model, d):
            rows.append(model(tokens)[0, -1].softmax(-1))
    return torch.stack(rows)


@pytest.mark.parametrize("kind", ["rotary", "rotary-partial", "learned"])
@pytest.mark.parametrize("batch_size", [1, 3, 100])
def test_batched_duration_sweep_equals_single_forwards(make_tiny, kind, batch_size):
    model = make_tiny(kind)
    tokens = torch.tensor([[3, 7, 7, 7, 9, 11, 2]])
    cs = torch.linspace(0.1, 1.0, 7)
    want = one_at_a_time(model, tokens, (1, 3), cs)
    durations = Durations.from_spans(7, [(1, 3)], value=cs).values
    got = duration_sweep_probs(model, tokens, durations, batch_size=batch_size, progress=False)
    assert torch.allclose(got, want, atol=1e-5)


def test_shrink_tokens_readout_sums_token_groups(any_rotary):
    model = any_rotary
    tokens = torch.tensor([[3, 7, 7, 7, 9]])
    cs = torch.tensor([0.25, 0.5, 1.0])
    sweep = shrink_tokens(model, tokens, (1, 3), cs, vocab=VOCAB, progress=False, expected=3)
    full = one_at_a_time(model, tokens, (1, 3), cs)
    by_digit = torch.stack([full[:, d::10].sum(-1) for d in range(10)], -1)
    assert torch.allclose(sweep.probs["exact"].float(), by_digit, atol=1e-5)
    assert sweep.span == (1, 3) and sweep.grid.tolist() == pytest.approx(cs.tolist())
    assert len(model.hook_dict["hook_embed"].fwd_hooks) == 0


# bfloat16 keeps 8 significant bits (unit roundoff 2^-8 = 0.0039); log-probabilities of the
# bfloat16 model may differ from those of the same weights in float32 by a few such roundings.
# TransformerLens runs everything in bfloat16: 0.05 nats (measured 0.026); Hugging Face's
# Llama under the bridge takes softmax and RMS norm in float32: 0.005 nats (measured 0.0024).
BF16_NATS = {"hooked": 0.05, "bridge": 0.005}


def test_float64_and_bfloat16_models(make_tiny, backend):
    tokens = torch.tensor([[3, 7, 7, 9]])
    cs = torch.tensor([0.5, 1.0])
    d = Durations.from_spans(4, [(1, 2)], value=cs).values
    m64 = make_tiny("rotary", dtype=torch.float64)
    p64 = duration_sweep_probs(m64, tokens, d, progress=False)
    assert p64.dtype == torch.float64
    assert torch.allclose(p64, one_at_a_time(m64, tokens, (1, 2), cs), atol=1e-10)
    mbf = make_tiny("rotary", dtype=torch.bfloat16)
    pbf = duration_sweep_probs(mbf, tokens, d, progress=False)
    assert pbf.dtype == torch.float32 and torch.allclose(pbf.sum(-1), torch.ones(2), atol=1e-4)
    # against float32 with the same weights (the bfloat16 model is their cast)
    p32 = duration_sweep_probs(make_tiny("rotary"), tokens, d, progress=False)
    tol = BF16_NATS[backend]
    torch.testing.assert_close(pbf.log(), p32.log(), atol=tol, rtol=0)
    # the tolerance tells the two durations apart: it could fail
    assert (pbf.flip(0).log() - p32.log()).abs().max() > tol


def test_last_position_only_keeps_user_hooks_and_removes_its_own(any_rotary):
    model = any_rotary
    seen = []
    model.add_hook("blocks.0.hook_resid_post", lambda x, hook: seen.append(x.shape))
    tokens = torch.tensor([[1, 2, 3]])
    with last_position_only(model):
        assert model(tokens).shape == (1, 1, 50)
    assert model(tokens).shape == (1, 3, 50)
    assert len(seen) == 2
    hooked = {id(hp) for hp in model.hook_dict.values() if hp.fwd_hooks}
    assert hooked == {id(model.hook_dict["blocks.0.hook_resid_post"])}  # only the user's
    model.reset_hooks()


def test_blend_sweep_equals_blend_embeddings(any_rotary):
    model = any_rotary
    a, b = torch.tensor([[1, 2, 3, 4]]), torch.tensor([[1, 9, 3, 4]])
    lam = torch.linspace(0, 1, 5)
    want = blend_embeddings(model, a, b, lam)[:, -1].softmax(-1)
    got = blend_sweep_probs(model, a, b, lam, batch_size=2, progress=False)
    assert torch.allclose(got, want, atol=1e-5)


def test_bad_shapes_raise():
    model = tiny_model("rotary")
    with pytest.raises((ValueError, TypeError), match=r"tokens|durations"):
        duration_sweep_probs(model, torch.tensor([[1, 2]]), torch.ones(2, 3), progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        duration_sweep_probs(
            model, torch.tensor([[1, 2]]), torch.ones(2, 2), batch_size=0, progress=False
        )


@pytest.mark.parametrize("kind", ["learned", "rotary"])
def test_per_row_starts_equal_one_forward_per_start(make_tiny, kind):
    """Translation is batched through continuous.hook_positions; it must equal Durations.start."""
    model = make_tiny(kind)
    model(torch.tensor([[1, 2]]))  # a first forward: a bridge may register hooks lazily
    before = _hook_snapshot(model)
    tokens = torch.tensor([[3, 7, 7, 7, 9, 11, 2]])
    starts = torch.tensor([0.0, 0.5, 2.0, 3.25, 6.0])
    want = []
    for s in starts.tolist():
        with continuous(model, Durations(torch.ones(7), start=s)):
            want.append(model(tokens)[0, -1].softmax(-1))
    durations = torch.ones(5, 7)
    got = duration_sweep_probs(model, tokens, durations, start=starts, batch_size=2, progress=False)
    assert torch.allclose(got, torch.stack(want), atol=1e-6)
    if kind == "learned":  # a learned table sees the shift: the rows really differ
        assert (got[0] - got[-1]).abs().max() > 1e-3
    # jaxtyping (on under the suite) sees the grid mismatch first; both name the argument
    with pytest.raises((ValueError, TypeError), match=r"start must be a float|parameter 'start'"):
        duration_sweep_probs(model, tokens, durations, start=starts[:3], progress=False)
    assert _hook_snapshot(model) == before  # nothing left: no HookPoint, no hook
    assert not hasattr(model, "continuous")
    assert not any(h._forward_hooks for h in model.hook_dict.values())


def _hook_snapshot(model):
    """The model's hook names and every PyTorch forward (pre-)hook, by module and identity."""
    hooks = {
        name: (tuple(m._forward_hooks), tuple(m._forward_pre_hooks))
        for name, m in model.named_modules()
    }
    return sorted(model.hook_dict), hooks
