"""Bundled datasets and prompt templates."""

from __future__ import annotations

import pytest

from tl_continuous.experiments.prompts import (
    counting_prompt,
    events_prompt,
    load_dataset,
    sums_prompt,
)


def test_datasets_are_large_enough_and_well_formed():
    counting = load_dataset("counting")
    assert len(counting) >= 30 and {it["n"] for it in counting} == {3, 4, 5}
    assert len({it["word"] for it in counting}) >= 10
    events = load_dataset("events")
    assert len(events) >= 30 and all(2 <= len(it["steps"]) <= 9 for it in events)
    sums = load_dataset("sums")
    assert len(sums) >= 30
    for it in sums:
        assert str(it["a"]) in it["text"] and str(it["b"]) in it["text"]
    pairs = load_dataset("interpolation")
    assert {it["kind"] for it in pairs} == {"both", "neither", "first", "second"}
    with pytest.raises(ValueError, match="name"):
        load_dataset("nope")


def test_counting_prompt_is_the_papers():
    prompt, (lo, hi) = counting_prompt("apple", 4)
    assert prompt == (
        'Question: In the sentence "apple apple apple apple", how many times is apple '
        "mentioned? Reply with a single-digit number\nAnswer: "
    )
    assert prompt[lo:hi] == "apple apple apple apple"
    with pytest.raises(ValueError, match="n must"):
        counting_prompt("apple", 0)


def test_events_and_sums_spans():
    prompt, (lo, hi) = events_prompt("make tea", ["Boil water", "Pour it."])
    assert prompt[lo] == "-" and prompt[hi - 1] == "."
    assert prompt[lo:hi].count("\n- ") == 1
    prompt, (lo, hi) = sums_prompt("Mia has 82 pens and 38 pens.", "How many?", 38)
    assert prompt[lo:hi] == "38"
    with pytest.raises(ValueError, match="a=7"):
        sums_prompt("no digits", "q", 7)
