"""Activation patching across durations against hand-written patches.

The patching tests run on both backends (``make_tiny`` / ``any_rotary`` of ``conftest.py``):
``transformer_lens.patching`` on a ``HookedTransformer`` and on a ``TransformerBridge``.
"""

from __future__ import annotations

import pytest
import torch

from tl_continuous.continuous.durations import Durations
from tl_continuous.continuous.signal import continuous
from tl_continuous.patching import (
    logit_diff_metric,
    patch_across_durations,
    patch_all_across_durations,
)

TOKENS = torch.tensor([[5, 9, 9, 9, 3, 7]])
SHRUNK = Durations(torch.tensor([1.0, 0.3, 0.3, 0.3, 1.0, 1.0]))


def _metric(logits: torch.Tensor) -> torch.Tensor:
    return logits[0, -1, 11] - logits[0, -1, 2]


def _hand_patch(model, name, clean, corrupt, index) -> float:
    """Run under ``corrupt`` with ``name[index]`` replaced by its value under ``clean``."""
    if clean is None:
        _, cache = model.run_with_cache(TOKENS)
    else:
        with continuous(model, clean):
            _, cache = model.run_with_cache(TOKENS)
    clean_act = cache[name]

    def hook(act, hook):
        act = act.clone()
        act[index] = clean_act[index]
        return act

    if corrupt is None:
        logits = model.run_with_hooks(TOKENS, fwd_hooks=[(name, hook)])
    else:
        with continuous(model, corrupt):
            logits = model.run_with_hooks(TOKENS, fwd_hooks=[(name, hook)])
    return float(_metric(logits))


@pytest.mark.parametrize("kind", ["rotary", "learned"])
def test_resid_and_attn_out_match_hand_patch(make_tiny, kind) -> None:
    model = make_tiny(kind)
    out = patch_all_across_durations(
        model, TOKENS, None, SHRUNK, _metric, kinds=("resid_pre", "attn_out"), progress=False
    )
    n_layers, n_pos = model.cfg.n_layers, TOKENS.shape[1]
    assert out["resid_pre"].shape == (n_layers, n_pos)
    for layer, pos in [(0, 2), (1, 3), (1, 5)]:
        want = _hand_patch(model, f"blocks.{layer}.hook_resid_pre", None, SHRUNK, (0, pos))
        assert out["resid_pre"][layer, pos].item() == pytest.approx(want, abs=1e-4)
        want = _hand_patch(model, f"blocks.{layer}.hook_attn_out", None, SHRUNK, (0, pos))
        assert out["attn_out"][layer, pos].item() == pytest.approx(want, abs=1e-4)
    assert not hasattr(model, "continuous")


def test_heads_match_hand_patch_both_directions(any_rotary) -> None:
    d2 = Durations(torch.tensor([1.0, 2.0, 2.0, 2.0, 1.0, 1.0]))
    heads = patch_across_durations(
        any_rotary, TOKENS, SHRUNK, d2, _metric, kind="heads", progress=False
    )
    assert heads.shape == (any_rotary.cfg.n_layers, any_rotary.cfg.n_heads)
    for layer, head in [(0, 1), (1, 3)]:
        want = _hand_patch(
            any_rotary, f"blocks.{layer}.attn.hook_z", SHRUNK, d2, (slice(None), slice(None), head)
        )
        assert heads[layer, head].item() == pytest.approx(want, abs=1e-4)


def test_durations_matter_and_full_patch_restores_clean(any_rotary) -> None:
    # rotary durations act inside attention only: the embeddings are the same in both runs
    out = patch_across_durations(
        any_rotary, TOKENS, None, SHRUNK, _metric, kind="resid_pre", progress=False
    )
    with continuous(any_rotary, SHRUNK):
        corrupt = float(_metric(any_rotary(TOKENS)))
    clean = float(_metric(any_rotary(TOKENS)))
    assert abs(clean - corrupt) > 1e-3  # the durations change the metric
    assert torch.isfinite(out).all()
    # so patching layer 0's input changes nothing, while after the last attention only the
    # position-wise MLP remains: patching resid_mid there at the last position restores clean
    assert torch.allclose(out[0], torch.full_like(out[0], corrupt), atol=1e-4)
    mid = patch_across_durations(
        any_rotary, TOKENS, None, SHRUNK, _metric, kind="resid_mid", progress=False
    )
    assert mid[-1, -1].item() == pytest.approx(clean, abs=1e-4)  # only the MLP follows


def test_bad_input_leaves_model_clean(any_rotary) -> None:
    with pytest.raises(ValueError, match="kind"):
        patch_across_durations(any_rotary, TOKENS, None, SHRUNK, _metric, kind="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="corrupt has 3 values"):
        patch_across_durations(any_rotary, TOKENS, None, Durations(torch.ones(3)), _metric)
    with pytest.raises(TypeError, match=r"parameter 'clean'|clean must be Durations or None"):
        patch_across_durations(any_rotary, TOKENS, torch.ones(6), None, _metric)  # type: ignore[arg-type]
    assert not hasattr(any_rotary, "continuous")
    assert all(not hp.fwd_hooks for hp in any_rotary.hook_dict.values())


def test_logit_diff_metric_normalises() -> None:
    clean = torch.randn(1, 3, 10)
    corrupt = torch.randn(1, 3, 10)
    m = logit_diff_metric(clean, corrupt, 4, 7)
    assert float(m(clean)) == pytest.approx(1.0)
    assert float(m(corrupt)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="same logit difference"):
        logit_diff_metric(clean, clean, 4, 7)
