"""The counting testbed: vocabulary, seeded task, deterministic training, shipped checkpoint."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from transformer_lens import HookedTransformer

from tl_continuous.testbed.model import (
    CHECKPOINT_DIR,
    load_testbed,
    state_dict_sha256,
    training_record,
)
from tl_continuous.testbed.task import (
    FILLERS,
    OBJECTS,
    VOCAB,
    CountingTask,
    collate,
)
from tl_continuous.testbed.train import TrainConfig, evaluate, save_checkpoint, train


@pytest.fixture(scope="module")
def testbed() -> HookedTransformer:
    return load_testbed()


# --------------------------------------------------------------------------- vocabulary


def test_vocabulary_round_trip_and_layout():
    text = "<bos> apple , pear apple and how-many apple"
    assert VOCAB.decode(VOCAB.encode(text)) == text
    assert VOCAB.encode(text.split()).tolist() == VOCAB.encode(text).tolist()
    assert [VOCAB.words[i] for i in VOCAB.count_ids] == [str(k) for k in range(10)]
    assert [VOCAB.words[i] for i in VOCAB.object_ids] == list(OBJECTS)
    assert [VOCAB.words[i] for i in VOCAB.filler_ids] == list(FILLERS)
    assert len(VOCAB) == len(set(VOCAB.words)) == 28


def test_unknown_word_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="banana"):
        VOCAB.encode("<bos> banana")


# --------------------------------------------------------------------------- task


def test_examples_say_what_they_hold():
    task = CountingTask()
    rng = random.Random(123)
    seen_layouts = set()
    for _ in range(300):
        e = task.sample(rng)
        body = e.tokens[1:-2]
        assert e.tokens[0] == VOCAB.id("<bos>")
        assert e.tokens[-2] == VOCAB.id("how-many") and e.tokens[-1] == e.target
        assert body.count(e.target) == e.count
        assert [i for i, t in enumerate(e.tokens[:-1]) if t == e.target] == list(e.target_positions)
        if e.contiguous and e.count:
            first = e.target_positions[0]
            assert list(e.target_positions) == list(range(first, first + e.count))
        assert len(e.tokens) <= task.max_len
        seen_layouts.add(e.contiguous)
    assert seen_layouts == {True, False}


def test_counts_are_roughly_uniform_and_distractors_appear():
    task = CountingTask()
    rng = random.Random(7)
    examples = [task.sample(rng) for _ in range(2000)]
    histogram = torch.bincount(torch.tensor([e.count for e in examples]), minlength=10)
    assert int(histogram.min()) > 150  # 200 expected per count
    objects = set(VOCAB.object_ids)
    with_distractor = [
        e for e in examples if any(t in objects and t != e.target for t in e.tokens[1:-2])
    ]
    assert len(with_distractor) > 1200


def test_task_is_seeded():
    task = CountingTask()
    first = [task.sample(random.Random(5)) for _ in range(3)]
    again = [task.sample(random.Random(5)) for _ in range(3)]
    other = [task.sample(random.Random(6)) for _ in range(3)]
    assert first == again
    assert first != other


def test_collate_pads_right_and_points_at_the_last_token():
    task = CountingTask()
    rng = random.Random(0)
    examples = [task.sample(rng) for _ in range(6)]
    tokens, last, answer = collate(examples)
    for row, e in enumerate(examples):
        assert tokens[row, : len(e.tokens)].tolist() == list(e.tokens)
        assert (tokens[row, len(e.tokens) :] == VOCAB.id("<pad>")).all()
        assert int(last[row]) == len(e.tokens) - 1
        assert VOCAB.words[int(answer[row])] == str(e.count)


@pytest.mark.parametrize(
    "kwargs, word",
    [({"max_count": 10}, "max_count"), ({"p_contiguous": 2.0}, "p_contiguous")],
)
def test_bad_task_settings_are_named(kwargs, word):
    with pytest.raises(ValueError, match=word):
        CountingTask(**kwargs)


# --------------------------------------------------------------------------- training


def test_training_is_deterministic_under_a_seed():
    """Same seed and thread count -> the same weights bit for bit; another seed differs."""
    config = TrainConfig(steps=12, batch_size=16, eval_size=32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = train(config, progress=False)
        b = train(config, progress=False)
        c = train(TrainConfig(seed=1, steps=12, batch_size=16, eval_size=32), progress=False)
    finally:
        torch.set_num_threads(threads)
    assert a.record["sha256"] == b.record["sha256"] == state_dict_sha256(b.model)
    assert a.record["loss_every_50_steps"] == b.record["loss_every_50_steps"]
    assert c.record["sha256"] != a.record["sha256"]
    assert not torch.are_deterministic_algorithms_enabled()  # restored


def test_checkpoint_round_trip(tmp_path: Path):
    result = train(TrainConfig(steps=2, batch_size=8, eval_size=8), progress=False)
    save_checkpoint(result, tmp_path)
    loaded = load_testbed(tmp_path)
    assert state_dict_sha256(loaded) == result.record["sha256"]
    assert training_record(tmp_path)["steps"] == 2
    tokens = VOCAB.encode("<bos> fig fig how-many fig")[None]
    torch.testing.assert_close(loaded(tokens), result.model(tokens), rtol=0, atol=0)


def test_missing_checkpoint_says_how_to_regenerate(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"tl-continuous train-testbed"):
        load_testbed(tmp_path)


# --------------------------------------------------------------------------- shipped model


def test_load_model_returns_the_trained_testbed(testbed):
    from tl_continuous import load_model

    model = load_model("counting-testbed")
    assert isinstance(model, HookedTransformer)
    assert model.tokenizer is None
    assert model.cfg.model_name == "counting-testbed"
    assert model.cfg.n_layers == 2 and model.cfg.d_model == 96
    assert model.cfg.positional_embedding_type == "rotary"
    assert model.cfg.d_vocab == len(VOCAB)
    assert not model.training
    assert state_dict_sha256(model) == training_record()["sha256"]
    assert 150_000 < sum(p.numel() for p in model.parameters()) < 300_000


def test_checkpoint_is_small():
    total = sum(f.stat().st_size for f in CHECKPOINT_DIR.iterdir())
    assert total < 3_000_000


def test_shipped_model_counts_on_fresh_prompts(testbed):
    """Held-out prompts from a seed unlike training's: the argmax answer is the count."""
    task = CountingTask()
    rng = random.Random(2024)
    examples = [task.sample(rng) for _ in range(600)]
    scores = evaluate(testbed, examples)
    assert scores["accuracy"] >= 0.97
    assert min(v for v in scores["accuracy_by_count"].values() if v is not None) >= 0.9
    # an independent check of evaluate(): one prompt by hand
    logits = testbed(VOCAB.encode("<bos> plum . kiwi plum , plum how-many plum")[None])
    assert VOCAB.words[int(logits[0, -1].argmax())] == "3"


def test_training_record_holds_the_acceptance_numbers():
    record = training_record()
    assert record["held_out_accuracy"] >= 0.97
    assert record["held_out"]["n_examples"] == record["eval_size"]
    assert record["train_seconds"] > 0 and record["threads"] == 1


def test_bfloat16_and_float64_load(testbed):
    tokens = VOCAB.encode("<bos> lime lime a lime how-many lime")[None]
    reference = testbed(tokens)[0, -1].argmax()
    for dtype in (torch.float64, torch.bfloat16):
        model = load_testbed(dtype=dtype)
        assert model.W_E.dtype == dtype
        assert model(tokens)[0, -1].argmax() == reference
