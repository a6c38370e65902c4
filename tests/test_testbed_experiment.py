"""The continuity effect on the counting testbed, and tests that a broken mechanism fails.

The bound: over ``n`` in 1..8 and ``c`` in 0.1..2.0, E[count] under the plugin's
``continuous()`` must stay within ``MAE_BOUND`` of ``clip(n·c, 0, 9)``. A model that ignores
durations (always answering ``n``) misses by ``ignoring_durations_mae()`` (1.77 on this grid),
more than four times the bound; the broken variants below miss it too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import pytest
import torch
from testbed_reference import reference_continuous
from transformer_lens import HookedTransformer

from tl_continuous.testbed import experiment
from tl_continuous.testbed.experiment import (
    VARIANTS,
    CountingContinuityResult,
    count_distribution,
    experiment_prompts,
)
from tl_continuous.testbed.model import load_testbed
from tl_continuous.testbed.task import VOCAB

MAE_BOUND = 0.4
NS = list(range(1, 9))
CS = [0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0]


@pytest.fixture(scope="module")
def testbed() -> HookedTransformer:
    return load_testbed()


def _run(model, variants=("full",), **kwargs) -> CountingContinuityResult:
    settings = {"ns": NS, "cs": CS, "n_prompts": 4, "uneven_trials": 16, "progress": False}
    return CountingContinuityResult.from_model(model, variants=variants, **(settings | kwargs))


def _with_reference(sign: float = 1.0, use_plugin_positions: bool = False):
    """A replacement for the experiment's mechanism seam built on the reference hooks."""

    def logits(model, tokens, values, attention, positions):
        stack = contextlib.ExitStack()
        with stack:
            if use_plugin_positions:
                from tl_continuous import Durations, continuous

                stack.enter_context(
                    continuous(model, Durations(values), attention=False, positions=positions)
                )
                positions = False
            stack.enter_context(
                reference_continuous(
                    model, values, attention=attention, positions=positions, sign=sign
                )
            )
            return model(tokens)

    return logits


# --------------------------------------------------------------------------- the effect


@pytest.mark.slow
def test_expected_count_tracks_summed_durations(testbed):
    result = _run(testbed)
    baseline = result.ignoring_durations_mae()
    assert baseline > 4 * MAE_BOUND  # the bound means something on this grid
    assert result.mae() < MAE_BOUND
    assert result.monotonicity(tol=0.05) >= 0.95
    # at c = 1 the mechanism is the identity: the model counts exactly
    at_one = result.expected[0, :, CS.index(1.0)]
    torch.testing.assert_close(at_one, torch.tensor(NS, dtype=torch.float32), atol=0.15, rtol=0)
    vs_sum, _ = result.uneven_mae()
    assert vs_sum < MAE_BOUND


def test_plugin_matches_the_independent_reference(testbed):
    """Logits under the plugin's continuous() equal those under the reference hooks."""
    example = experiment_prompts(5, 1, __import__("random").Random(3))[0]
    tokens = torch.tensor([example.tokens]).expand(3, -1)
    values = torch.ones(tokens.shape)
    values[0, list(example.target_positions)] = 0.4
    values[1, list(example.target_positions)] = torch.tensor([0.3, 1.7, 0.9, 1.2, 0.5])
    values[2, 1::2] = 1.5
    for attention, positions in [(True, True), (True, False), (False, True)]:
        plugin = experiment._continuous_logits(testbed, tokens, values, attention, positions)
        with reference_continuous(testbed, values, attention=attention, positions=positions):
            reference = testbed(tokens)
        torch.testing.assert_close(plugin, reference, atol=2e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(
    "broken",
    ["attention term with the wrong sign", "positions without the attention term"],
)
def test_a_broken_mechanism_fails_the_bound(testbed, monkeypatch, broken):
    """The bound of the test above rejects deliberately broken implementations."""
    if broken == "attention term with the wrong sign":
        seam = _with_reference(sign=-1.0, use_plugin_positions=True)
    else:
        plugin = experiment._continuous_logits

        def seam(model, tokens, values, attention, positions):
            return plugin(model, tokens, values, False, positions)

    monkeypatch.setattr(experiment, "_continuous_logits", seam)
    result = _run(testbed, uneven_trials=0)
    assert result.mae() > 2 * MAE_BOUND, broken


@pytest.mark.slow
def test_reference_passes_and_its_broken_twin_fails(testbed, monkeypatch):
    """The same bound, with no plugin at all: correct reference hooks pass, sign -1 fails.

    Runs even before ``continuous()`` lands, so the experiment code itself is exercised.
    """
    monkeypatch.setattr(experiment, "_continuous_logits", _with_reference(sign=1.0))
    good = _run(testbed, variants=("full", "positions-only"), n_prompts=2, uneven_trials=8)
    assert good.mae("full") < MAE_BOUND
    assert good.uneven_mae()[0] < MAE_BOUND
    # positions alone do not count durations
    assert good.mae("positions-only") > 2 * MAE_BOUND
    monkeypatch.setattr(experiment, "_continuous_logits", _with_reference(sign=-1.0))
    bad = _run(testbed, n_prompts=2, uneven_trials=0)
    assert bad.mae("full") > 2 * MAE_BOUND


@pytest.mark.slow
def test_ablations(testbed):
    result = _run(testbed, variants=tuple(VARIANTS), ns=[2, 4, 6, 8], n_prompts=2, uneven_trials=0)
    summary = result.summary()["variants"]
    # the attention term carries most of the effect; positions alone much less of it
    assert summary["attention-only"]["mae"] < summary["positions-only"]["mae"] / 2
    assert summary["positions-only"]["mae"] > 2 * MAE_BOUND
    assert summary["full"]["mae"] <= summary["attention-only"]["mae"] + 0.05
    # durations on fillers leave the count of targets about where it was
    fillers = result.expected[result.variants.index("fillers")]
    n = torch.tensor(result.ns, dtype=torch.float32)[:, None].expand_as(fillers)
    assert float((fillers - n).abs().mean()) < MAE_BOUND


# --------------------------------------------------------------------------- plumbing


def test_count_distribution_is_a_distribution_and_checks_shapes(testbed, monkeypatch):
    monkeypatch.setattr(experiment, "_continuous_logits", _with_reference())
    tokens = VOCAB.encode("<bos> fig pear fig how-many fig")[None].expand(2, -1)
    probs, mass = count_distribution(testbed, tokens, torch.ones(2, tokens.shape[1]))
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))
    assert ((mass > 0) & (mass <= 1)).all()
    assert int(probs[0].argmax()) == 2
    # a ValueError without the jaxtyping import hook, its TypeCheckError (a TypeError) with it
    with pytest.raises((ValueError, TypeError), match="values"):
        count_distribution(testbed, tokens, torch.ones(2, 3))


def _small_result() -> CountingContinuityResult:
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(2, 3, 4, 10, generator=g)
    return CountingContinuityResult(
        ns=[1, 2, 3],
        cs=[0.5, 1.0, 1.5, 2.0],
        variants=["full", "fillers"],
        probs=probs / probs.sum(-1, keepdim=True),
        expected_std=torch.rand(2, 3, 4, generator=g),
        count_mass=torch.rand(2, 3, 4, generator=g),
        uneven_n=[1, 2],
        uneven_sum=torch.tensor([0.7, 2.2]),
        uneven_expected=torch.tensor([1.0, 2.0]),
        even_expected=torch.tensor([1.1, 2.1]),
        n_prompts=2,
        seed=0,
    )


def test_metrics_against_hand_computed_values():
    result = _small_result()
    probs = result.probs.clone()
    probs.zero_()
    # full: E = n·c exactly where it is an integer, else floor; fillers: always n
    for i, n in enumerate(result.ns):
        for j, c in enumerate(result.cs):
            probs[0, i, j, min(9, math.floor(n * c))] = 1.0
            probs[1, i, j, n] = 1.0
    result.probs = probs
    target = torch.tensor([[0.5, 1, 1.5, 2], [1, 2, 3, 4], [1.5, 3, 4.5, 6]])
    torch.testing.assert_close(result.target, target)
    floor_error = float((target - target.floor()).mean())
    assert math.isclose(result.mae("full"), floor_error, rel_tol=1e-6)
    n = torch.tensor([1.0, 2, 3])[:, None]
    assert math.isclose(result.ignoring_durations_mae(), float((target - n).abs().mean()))
    assert math.isclose(result.mae("fillers"), result.ignoring_durations_mae(), rel_tol=1e-6)
    assert result.monotonicity("full") == 1.0 and result.largest_drop("full") == 0.0
    assert result.argmax_agreement("fillers") == pytest.approx(
        float((torch.round(target) == n).float().mean())
    )
    vs_sum, vs_even = result.uneven_mae()
    assert vs_sum == pytest.approx((0.3 + 0.2) / 2) and vs_even == pytest.approx(0.1)


def test_save_load_round_trip(tmp_path):
    result = _small_result()
    loaded = CountingContinuityResult.load(result.save(tmp_path / "r.json"))
    assert loaded.to_dict() == result.to_dict()
    torch.testing.assert_close(loaded.expected, result.expected)


def test_bad_shapes_and_names_are_rejected():
    with pytest.raises(ValueError, match="probs"):
        dataclasses.replace(_small_result(), probs=torch.zeros(2, 3, 4, 9))
    with pytest.raises(ValueError, match="uneven"):
        dataclasses.replace(_small_result(), uneven_n=[1, 2, 3])
    with pytest.raises(ValueError, match="variants"):
        CountingContinuityResult.from_model(load_testbed(), variants=["nope"], progress=False)
    with pytest.raises(ValueError, match="ns"):
        CountingContinuityResult.from_model(load_testbed(), ns=[12], progress=False)


def test_figures_build():
    from tl_continuous.views import testbed as views

    result = _small_result()
    assert len(views.expected_count_figure(result).data) == 2 * len(result.ns)
    assert len(views.count_distribution_figure(result, n=2).data) == 2
    assert len(views.variants_figure(result).data) == len(result.variants) + 1
    assert len(views.uneven_durations_figure(result).data) == 3
