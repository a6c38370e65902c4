"""Result dataclasses: validation, metrics, JSON round trips."""

from __future__ import annotations

import pytest
import torch

from tl_continuous.experiments.results import Sweep, SweepSet


def make(expected=4, experiment="counting", knob="c", steps=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    grid = torch.linspace(0.1, 1.0, steps, dtype=torch.float64)
    probs = torch.rand(steps, 10, generator=g, dtype=torch.float64).softmax(-1)
    return Sweep(
        experiment=experiment,
        model_name="m",
        prompt="p",
        knob=knob,
        grid=grid,
        labels=tuple(str(d) for d in range(10)),
        probs={"exact": probs, "contains": probs.flip(-1)},
        expected=expected,
        span=(3, 6),
        distance=torch.rand(steps, dtype=torch.float64),
        meta={"word": "apple"},
    )


def test_round_trip(tmp_path):
    s = make()
    back = Sweep.load(s.save(tmp_path / "a" / "s.json"))
    assert back.labels == s.labels and back.span == (3, 6) and back.meta == s.meta
    for rule in s.rules:
        assert torch.equal(back.probs[rule], s.probs[rule])
    assert torch.equal(back.distance, s.distance)
    assert back.summary() == s.summary()
    ss = SweepSet("counting", [s, make(seed=1)], meta={"x": 1})
    back_set = SweepSet.load(ss.save(tmp_path / "set.json"))
    assert back_set.peak_summary() == ss.peak_summary()


def test_rules_give_different_answers():
    s = make()
    assert s.argmax("exact") != s.argmax("contains")
    with pytest.raises(ValueError, match="rule"):
        s.argmax("prefix")


def test_shapes_are_checked():
    s = make()
    # jaxtyping (under pytest) or our own check (at run time) catches shape errors
    with pytest.raises((ValueError, TypeError), match="probs"):
        Sweep("counting", "m", "p", "c", s.grid, s.labels, {"exact": s.probs["exact"][:, :3]})
    with pytest.raises((ValueError, TypeError), match="distance"):
        Sweep("counting", "m", "p", "c", s.grid, s.labels, s.probs, distance=torch.zeros(2))
    with pytest.raises(ValueError, match="expected"):
        Sweep("counting", "m", "p", "c", s.grid, s.labels, s.probs, expected=12)
    with pytest.raises(ValueError, match="at least one"):
        SweepSet("counting", [])


def test_peak_summary_on_known_curves():
    grid = torch.tensor([0.2, 0.6, 1.0], dtype=torch.float64)

    def curve(tops, n):
        probs = torch.full((3, 10), 0.01, dtype=torch.float64)
        for i, t in enumerate(tops):
            probs[i, t] = 0.9
        return Sweep(
            "counting", "m", "p", "c", grid, tuple("0123456789"), {"exact": probs}, expected=n
        )

    ss = SweepSet("counting", [curve([1, 2, 3], 3), curve([4, 4, 4], 4)])
    summary = ss.peak_summary()
    assert summary["peak_fraction"] == pytest.approx((1.0 + 0.25) / 2)
    assert summary["baseline"] == pytest.approx((1 / 3 + 1 / 4) / 2)
    assert summary["correct_at_end"] == 1.0
    assert summary["by_n"]["3"]["peak_fraction"] == 1.0
    assert summary["mean_first_argmax"]["4"] == {"items": 1, "mean": 0.2}
    assert summary["mean_first_argmax"]["2"]["mean"] == 0.6


def test_interpolation_summary_and_endpoint_accuracy():
    lam = torch.linspace(0, 1, 5, dtype=torch.float64)
    yes = torch.tensor([0.9, 0.7, 0.6, 0.3, 0.1], dtype=torch.float64)
    probs = torch.stack([yes, 1 - yes], -1)
    s = Sweep(
        "interpolation",
        "m",
        "a",
        "lambda",
        lam,
        ("Yes", "No"),
        {"exact": probs},
        prompt_b="b",
        distance=torch.zeros(5, dtype=torch.float64),
        meta={"answer_a": "Yes", "answer_b": "Yes"},
    )
    summary = SweepSet("interpolation", [s]).interpolation_summary()
    assert summary["lipschitz_max"] == pytest.approx(0.3 / 0.25)
    assert summary["excursion_max"] == 0.0 and summary["flagged_fraction"] == 0.0
    assert summary["endpoint_accuracy"] == 0.5
