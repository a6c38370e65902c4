"""The feature readouts are the SAE's encoder applied to the cached residuals, on both
backends; the random control reads differently; the bundled SAE reads SmolLM2 as recorded."""

from __future__ import annotations

import pytest
import torch

from features.sae_testing import TINY_HOOK, needs_sae_lens
from tl_continuous.features.counting import CountFeatures, CountResiduals
from tl_continuous.features.lines import LinesOfThoughtFeatures
from tl_continuous.features.sae import encode, random_sae_like, sae_hook_name
from tl_continuous.lines_of_thought.bases import TrajectoryBases
from tl_continuous.lines_of_thought.ensemble import LinesOfThought

pytestmark = pytest.mark.usefixtures("one_thread")


def _ensemble(model):
    tokens = torch.randint(0, 50, (80, 7), generator=torch.Generator().manual_seed(0))
    lot = LinesOfThought.collect(model, tokens, progress=False)
    return tokens, lot, TrajectoryBases.from_ensemble(lot)


@needs_sae_lens
def test_lines_readout_is_the_encoder_on_the_cached_residuals(make_tiny, sae) -> None:
    model = make_tiny("rotary")
    tokens, lot, bases = _ensemble(model)
    got = LinesOfThoughtFeatures.from_ensemble(lot, bases, sae, label="trained", k=4, m=5)
    _, cache = model.run_with_cache(tokens)
    with torch.no_grad():
        want = sae.encode(cache[TINY_HOOK][:, -1])
    assert got.acts.shape == (80, 128)
    assert torch.allclose(got.acts, want, atol=1e-6, rtol=0)
    assert got.sae_layer == 1 and got.hook_name == TINY_HOOK
    # the readouts follow from the acts: L0 at the SAE layer, the tracked features' means
    assert got.l0[1] == pytest.approx(float((want != 0).sum(dim=1).double().mean()))
    assert torch.allclose(got.tracked_mean[1], want.mean(dim=0)[got.tracked], atol=1e-6)
    # the alignment is the cosine of the bases' top directions with the decoder rows
    u = bases.top(0, 4).double()
    w = sae.W_dec.detach().double()
    cos = (u.T @ (w / w.norm(dim=1, keepdim=True)).T).float()
    assert torch.allclose(got.alignment[0], cos, atol=1e-5)
    assert got.kept[-1] == pytest.approx(1.0, abs=1e-6)  # K = rank: nothing truncated


@needs_sae_lens
def test_the_random_control_reads_differently(tiny_rotary, sae) -> None:
    _, lot, bases = _ensemble(tiny_rotary)
    control = random_sae_like(sae, seed=0)
    assert type(control) is type(sae) and sae_hook_name(control) == TINY_HOOK
    assert not torch.equal(control.W_dec, sae.W_dec)
    trained = LinesOfThoughtFeatures.from_ensemble(lot, bases, sae, label="trained", k=4, m=5)
    random = LinesOfThoughtFeatures.from_ensemble(lot, bases, control, label="random", k=4, m=5)
    assert (trained.acts - random.acts).abs().max() > 1e-2
    same_active = ((trained.acts != 0) == (random.acts != 0)).all(dim=1)
    assert float(same_active.double().mean()) < 0.5
    # seeded: the same seed gives the same control, another seed another one
    assert torch.equal(random_sae_like(sae, seed=0).W_enc, control.W_enc)
    assert not torch.equal(random_sae_like(sae, seed=1).W_enc, control.W_enc)
    # and the global generator is left as it was
    torch.manual_seed(5)
    a = torch.rand(3)
    torch.manual_seed(5)
    random_sae_like(sae, seed=3)
    assert torch.equal(torch.rand(3), a)


@needs_sae_lens
def test_count_features_encode_the_residuals(sae) -> None:
    gen = torch.Generator().manual_seed(0)
    residuals = CountResiduals(
        values=torch.linspace(0.1, 1.0, 5, dtype=torch.float64),
        last=torch.randn(5, 64, generator=gen),
        span=torch.randn(5, 3, 64, generator=gen),
        counts=torch.tensor([1, 2, 3, 4]),
        count_last=torch.randn(4, 64, generator=gen),
        hook_name=TINY_HOOK,
        word="apple",
        n=4,
        prompt="p",
        token_span=(2, 4),
    )
    got = CountFeatures.from_residuals(residuals, sae, label="trained")
    with torch.no_grad():
        assert torch.allclose(got.last, sae.encode(residuals.last), atol=1e-6, rtol=0)
        span = torch.stack([sae.encode(residuals.span[:, j]) for j in range(3)]).mean(dim=0)
        assert torch.allclose(got.span_mean, span, atol=1e-6)
    # the nearest count of the residuals themselves: the plain count's own row is nearest
    residuals.last[2] = residuals.count_last[1]
    again = CountFeatures.from_residuals(residuals, sae, label="trained")
    assert int(again.residual_nearest[2]) == 2 and int(again.nearest_count()[2]) == 2
    variation = (got.last[1:] - got.last[:-1]).abs().sum(dim=0)
    assert torch.allclose(got.variation(), variation.double(), atol=1e-6)
    assert int(got.top_varying(1)[0]) == int(variation.argmax())
    control = CountFeatures.from_residuals(residuals, random_sae_like(sae), label="random")
    assert not torch.allclose(control.last, got.last)
    with pytest.raises(ValueError, match="reads"):
        residuals.hook_name = "blocks.0.hook_resid_post"
        CountFeatures.from_residuals(residuals, sae, label="x")


@needs_sae_lens
def test_encode_checks_the_width(sae) -> None:
    with pytest.raises(ValueError, match="d_in=64"):
        encode(sae, torch.zeros(2, 10))
    assert encode(sae, torch.zeros(3, 2, 64)).shape == (3, 2, 128)
