"""The experiments on the bundled SmolLM2-135M, on small grids, against plain forwards."""

from __future__ import annotations

import itertools

import pytest
import torch

from tl_continuous.experiments import (
    boolean_all_pairs,
    boolean_interpolation,
    count_curve,
    interpolate_prompts,
    scaling_sweep,
    sum_curve,
    translation_sweep,
)
from tl_continuous.experiments.interpolation import (
    BOOLEAN_OPS,
    aligned_operator_prompts,
    operator_alignment,
)
from tl_continuous.experiments.prompts import counting_prompt
from tl_continuous.experiments.readouts import Readout

pytestmark = pytest.mark.model


def plain_digit_probs(model, prompt):
    probs = model(prompt)[0, -1].softmax(-1)
    ids = [model.to_single_token(str(d)) for d in range(10)]
    return probs[ids]


def test_digit_rules_coincide_on_smollm2(smollm2):
    exact = Readout.digits(smollm2, "exact")
    contains = Readout.digits(smollm2, "contains")
    assert exact.token_ids == contains.token_ids
    assert all(len(ids) == 1 for ids in exact.token_ids)


def test_counting_span_and_c_equal_one(smollm2):
    sweep = count_curve(smollm2, "apple", 4, torch.tensor([0.3, 1.0]), progress=False)
    tokens = smollm2.to_str_tokens(sweep.prompt)
    first, last = sweep.span
    assert "".join(tokens[first : last + 1]) == "apple apple apple apple"
    # c = 1 is the unmodified model
    want = plain_digit_probs(smollm2, counting_prompt("apple", 4)[0])
    assert torch.allclose(sweep.probs["exact"][-1].float(), want, atol=1e-4)
    # c < 1 changes the distribution
    assert not torch.allclose(sweep.probs["exact"][0], sweep.probs["exact"][-1], atol=1e-3)


def test_sums_span_is_the_operand_digits(smollm2):
    text = "Mia delivered 82 packages on Monday and 38 packages on Tuesday."
    sweep = sum_curve(
        smollm2,
        text,
        "How many packages did Mia deliver in total?",
        82,
        38,
        torch.tensor([0.5, 1.0]),
        progress=False,
    )
    tokens = smollm2.to_str_tokens(sweep.prompt)
    first, last = sweep.span
    assert "".join(tokens[first : last + 1]).strip() == "82"
    assert sweep.expected == 1 and set(sweep.rules) == {"exact", "contains", "prefix"}


def test_interpolation_endpoints_are_the_prompts(smollm2):
    a = "Question: Is a dog an animal? Reply with Yes or No.\nAnswer:"
    b = "Question: Is a rock an animal? Reply with Yes or No.\nAnswer:"
    sweep = interpolate_prompts(smollm2, a, b, torch.linspace(0, 1, 3), progress=False)
    readout = Readout.yes_no(smollm2)
    for prompt, row in ((a, 0), (b, -1)):
        want = readout(smollm2(prompt)[0, -1].softmax(-1))
        assert torch.allclose(sweep.probs["exact"][row].float(), want, atol=1e-4)
    assert sweep.distance[0] < 1e-5 and sweep.distance[-1] < 1e-5
    with pytest.raises(ValueError, match="same length"):
        interpolate_prompts(smollm2, a, "Question: Is it?", progress=False)


def test_boolean_operator_alignment_on_smollm2(smollm2):
    # AND, OR, NOR are one token, NAND and XOR two: only same-count operators line up
    same = operator_alignment(smollm2, "NAND", "XOR")
    assert same["aligned"] and same["reason"] is None
    assert same["tokens"] == {"NAND": [" N", "AND"], "XOR": [" X", "OR"]}
    assert operator_alignment(smollm2, "AND", "NOR")["tokens"] == {"AND": [" AND"], "NOR": [" NOR"]}
    mixed = operator_alignment(smollm2, "AND", "NAND")
    assert not mixed["aligned"] and "'AND' (1 token" in mixed["reason"]
    assert "'NAND' (2 tokens" in mixed["reason"]
    with pytest.raises(ValueError, match=r"exactly once"):
        operator_alignment(smollm2, "AND", "OR", template="{a} {b} = ")


def test_boolean_interpolation_blends_aligned_operators_only(smollm2):
    result = boolean_interpolation(smollm2, "NAND", "XOR", torch.tensor([0.0, 1.0]), progress=False)
    assert len(result) == 4
    assert {(s.meta["a"], s.meta["b"]) for s in result.sweeps} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    # the plain template, no padding: the endpoints are the two operators' own prompts
    assert {(s.prompt, s.prompt_b) for s in result.sweeps} == {
        (f"{a} NAND {b} = ", f"{a} XOR {b} = ") for a in (0, 1) for b in (0, 1)
    }
    assert result.meta["tokens"] == {"NAND": [" N", "AND"], "XOR": [" X", "OR"]}
    with pytest.raises(ValueError, match=r"'AND' \(1 token.*'XOR' \(2 tokens.*align='pad'"):
        boolean_interpolation(smollm2, "AND", "XOR", torch.tensor([0.0, 1.0]), progress=False)
    with pytest.raises(ValueError, match=r"operators must be among"):
        boolean_interpolation(smollm2, "AND", "IMPLIES", progress=False)
    # padding on request (the old behaviour): equal lengths, recorded in meta
    pa, pb = aligned_operator_prompts(smollm2, "AND", "NAND", 1, 0)
    assert pa == "1  AND 0 = " and len(smollm2.to_str_tokens(pa)) == len(smollm2.to_str_tokens(pb))
    padded = boolean_interpolation(
        smollm2, "AND", "XOR", torch.tensor([0.0, 1.0]), align="pad", progress=False
    )
    assert len(padded) == 4 and padded.meta["align"] == "pad"
    assert all(s.prompt.startswith(f"{s.meta['a']}  AND") for s in padded.sweeps)


def test_boolean_all_pairs_runs_aligned_pairs_and_reports_the_others(smollm2):
    result = boolean_all_pairs(smollm2, torch.tensor([0.0, 1.0]), progress=False)
    seen = {(s.meta["op_a"], s.meta["op_b"], s.meta["a"], s.meta["b"]) for s in result.sweeps}
    aligned = {("AND", "OR"), ("AND", "NOR"), ("OR", "NOR"), ("NAND", "XOR")}
    assert len(result) == len(seen) == 16  # 4 token-aligned operator pairs x 4 input pairs
    assert {(a, b) for a, b, _, _ in seen} == aligned
    assert {tuple(p) for p in result.meta["pairs"]} == aligned
    assert all(s.grid.tolist() == [0.0, 1.0] for s in result.sweeps)
    # the 6 misaligned pairs (one of NAND/XOR with one of AND/OR/NOR) are reported, not blended
    skipped = {(s["op_a"], s["op_b"]): s for s in result.meta["skipped"]}
    every = set(itertools.combinations(BOOLEAN_OPS, 2))
    assert set(skipped) == every - aligned and len(skipped) == 6
    for (op_a, op_b), s in skipped.items():
        assert not s["aligned"] and f"'{op_a}' (" in s["reason"] and f"'{op_b}' (" in s["reason"]
        assert {len(t) for t in s["tokens"].values()} == {1, 2}
    assert not any(
        s.meta["op_a"] in ("NAND", "XOR") and s.meta["op_b"] in ("AND", "OR", "NOR")
        for s in result.sweeps
    )
    with pytest.raises(ValueError, match=r"no pair of \['AND', 'XOR'\] is token-aligned"):
        boolean_all_pairs(smollm2, torch.tensor([0.0, 1.0]), ops=("AND", "XOR"), progress=False)


def test_translation_is_a_no_op_and_unit_scale_is_the_model(smollm2):
    prompt = counting_prompt("dog", 3)[0]
    moved = translation_sweep(smollm2, prompt, torch.tensor([0.0, 3.5, 10.0]), progress=False)
    assert float(moved.distance.max()) < 1e-3
    scaled = scaling_sweep(smollm2, prompt, torch.tensor([0.5, 1.0]), progress=False)
    assert float(scaled.distance[1]) < 1e-4
    assert float(scaled.distance[0]) > float(scaled.distance[1])
