"""Readouts: which tokens count, and their summed probabilities."""

from __future__ import annotations

import pytest
import torch

from tl_continuous.experiments.readouts import Readout

VOCAB = [str(d) for d in range(10)] + [" 4", "42", "x4y", " Yes", "yes", "NO", "Nothing", "4 "]


def test_exact_rule_strips_whitespace_only():
    r = Readout.digits(VOCAB, "exact")
    assert r.token_ids[4] == [4, 10, 17]
    assert r.token_ids[2] == [2]


def test_contains_and_prefix_rules():
    contains = Readout.digits(VOCAB, "contains")
    assert contains.token_ids[4] == [4, 10, 11, 12, 17]
    assert contains.token_ids[2] == [2, 11]
    prefix = Readout.digits(VOCAB, "prefix")
    assert prefix.token_ids[4] == [4, 10, 11, 17]
    assert prefix.token_ids[2] == [2]


def test_sums_match_an_independent_loop():
    torch.manual_seed(1)
    probs = torch.rand(5, len(VOCAB)).softmax(-1)
    for rule in ("exact", "contains", "prefix"):
        r = Readout.digits(VOCAB, rule)
        got = r(probs)
        for d in range(10):
            want = sum(probs[:, i] for i in r.token_ids[d])
            assert torch.allclose(got[:, d], want)


def test_yes_no_case_insensitive_by_default():
    r = Readout.yes_no(VOCAB)
    assert r.token_ids == ([13, 14], [15])
    strict = Readout.from_texts(VOCAB, {"Yes": ["Yes"]}, case_sensitive=True)
    assert strict.token_ids[0] == [13]
    with pytest.raises(ValueError, match="'No'"):
        Readout.yes_no(VOCAB, case_sensitive=True)


def test_float64_is_kept_and_batch_dims_broadcast():
    r = Readout.binary(VOCAB)
    probs = torch.rand(2, 3, len(VOCAB), dtype=torch.float64)
    out = r(probs)
    assert out.dtype == torch.float64 and out.shape == (2, 3, 2)
    assert r(probs.to(torch.bfloat16)).dtype == torch.float32


def test_bad_input():
    with pytest.raises((ValueError, TypeError), match="rule"):
        Readout.digits(VOCAB, "fuzzy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="vocabulary"):
        Readout.binary(VOCAB)(torch.rand(3, 5))
    with pytest.raises(TypeError, match="model_or_texts"):
        Readout.binary(object())
    with pytest.raises(ValueError, match="token_ids"):
        Readout(("a",), ([99],), "exact", 10)
