"""The bundled SAE on SmolLM2-135M: what it is, that its readout of the counting sweep is its
encoder on the residuals TransformerLens caches, and that its recorded quality holds on the
held-out chunks (against the random control)."""

from __future__ import annotations

import pytest
import torch

from features.sae_testing import needs_sae_lens
from tl_continuous.features.counting import CountFeatures, count_residuals
from tl_continuous.features.quality import SAEQuality
from tl_continuous.features.sae import CHECKPOINT_DIR, load_sae, random_sae_like
from tl_continuous.features.train import read_record

HOOK = "blocks.15.hook_resid_post"


@pytest.fixture(scope="module")
def bundled():
    return load_sae()


@needs_sae_lens
def test_the_bundled_sae_is_a_saelens_topk_sae(bundled) -> None:
    import sae_lens

    assert isinstance(bundled, sae_lens.TopKSAE)
    assert (bundled.cfg.d_in, bundled.cfg.d_sae, bundled.cfg.k) == (576, 2048, 32)
    assert bundled.cfg.metadata.hook_name == HOOK
    assert bundled.cfg.metadata.model_name == "smollm2-135m"
    assert (CHECKPOINT_DIR / "sae_weights.safetensors").stat().st_size < 10_000_000
    record = read_record(CHECKPOINT_DIR)
    trained, random = record["quality"]
    assert trained["label"] == "trained" and random["label"].startswith("random init")
    assert trained["explained_variance"] > 0.5 > random["explained_variance"]
    assert trained["ce_sae"] < random["ce_sae"]


@needs_sae_lens
@pytest.mark.model
def test_count_readout_is_the_encoder_on_the_cached_residuals(smollm2, bundled) -> None:
    from tl_continuous.continuous.durations import Durations
    from tl_continuous.continuous.signal import continuous

    values = torch.tensor([0.3, 0.45, 0.6, 0.75, 0.9, 1.0])  # two batches
    got = CountFeatures.collect(smollm2, bundled, values=values, counts=(1, 4), batch_size=4)
    tokens = smollm2.to_tokens(got.metadata["prompt"])
    first, last = got.token_span
    durations = Durations.from_spans(tokens.shape[1], [(first, last)], value=values).values
    cached = []
    for rows in (slice(0, 4), slice(4, 6)):  # the same batches as the readout's
        d = durations[rows]
        with continuous(smollm2, Durations(d)), torch.no_grad():
            _, cache = smollm2.run_with_cache(
                tokens.expand(len(d), -1), names_filter=HOOK, stop_at_layer=16
            )
        cached.append(cache[HOOK])
    resid = torch.cat(cached)  # [6, pos, d_model]
    span_rows = resid[:, first : last + 1].reshape(-1, resid.shape[-1])
    with torch.no_grad():  # the encoder on all rows at once, as the readout applies it
        want = bundled.encode(resid[:, -1])
        span = bundled.encode(span_rows).reshape(len(values), last + 1 - first, -1).mean(dim=1)
    assert torch.allclose(got.last, want, atol=1e-6, rtol=0)
    assert torch.allclose(got.span_mean, span, atol=1e-6, rtol=0)
    # one prompt at a time: the same features up to the float error of another batch size
    # (the encoder's matmul alone moves them by ~5e-7 of their size between batch sizes)
    with continuous(smollm2, Durations(durations[4])), torch.no_grad():
        _, cache = smollm2.run_with_cache(tokens, names_filter=HOOK, stop_at_layer=16)
        one = bundled.encode(cache[HOOK][0, -1])
    assert torch.allclose(got.last[4], one, atol=1e-3 * float(one.abs().max()))
    # c = 1 is the plain prompt with four repetitions
    assert torch.allclose(got.last[-1], got.count_last[1], atol=1e-4)
    assert got.nearest_count()[-1] == 4 and got.residual_nearest[-1] == 4
    residuals = count_residuals(smollm2, HOOK, values=[0.3, 1.0], counts=(1, 4))
    assert torch.allclose(
        CountFeatures.from_residuals(residuals, bundled, label="t").last, got.last[[0, -1]]
    )
    control = CountFeatures.from_residuals(residuals, random_sae_like(bundled), label="random")
    trained = got.last[[0, -1]]
    assert not torch.allclose(control.last, trained)
    overlap = ((control.last != 0) & (trained != 0)).sum(dim=1)
    assert int(overlap.max()) < 32


@needs_sae_lens
@pytest.mark.model
def test_recorded_quality_holds_on_held_out_chunks(smollm2, bundled) -> None:
    from tl_continuous.features.activations import token_activations
    from tl_continuous.lines_of_thought.corpus import pseudo_sentences

    record = read_record(CHECKPOINT_DIR)
    chunks = pseudo_sentences(smollm2, n_tokens=record["config"]["n_tokens"])
    held = torch.tensor(record["data"]["held_out_chunks"][:6])
    acts = token_activations(smollm2, chunks.tokens[held], HOOK)
    trained = SAEQuality.measure(bundled, acts, label="trained")
    random = SAEQuality.measure(random_sae_like(bundled), acts, label="random")
    recorded = record["quality"][0]["explained_variance"]
    assert trained.explained_variance == pytest.approx(recorded, abs=0.1)
    assert trained.l0 == pytest.approx(32.0)
    assert random.explained_variance < 0 < trained.explained_variance
