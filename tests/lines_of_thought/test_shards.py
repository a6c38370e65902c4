"""Resumable, sharded collection: interruption, workers, integrity.

Interruption, the manifest's model facts and ``collect(shard_dir=...)`` run on both backends
(``make_tiny`` of ``conftest.py``); worker sharing and corruption checks concern the files only
and run on a ``HookedTransformer``.
"""

from __future__ import annotations

import json

import pytest
import torch

from tl_continuous.lines_of_thought.collect import (
    CorruptShardError,
    IncompleteShardsError,
    collect_shards,
    load_shards,
)
from tl_continuous.lines_of_thought.ensemble import LinesOfThought
from tl_continuous.tiny import tiny_model


def _setup(model):
    tokens = torch.randint(0, 50, (11, 6), generator=torch.Generator().manual_seed(1))
    reference = LinesOfThought.collect(model, tokens, batch_size=3, progress=False)
    return model, tokens, reference


@pytest.fixture
def setup(make_tiny):
    """The model on each backend, its tokens and the ensemble collected in memory."""
    return _setup(make_tiny("rotary"))


@pytest.fixture
def setup_hooked():
    return _setup(tiny_model("rotary"))


def _same(a: LinesOfThought, b: LinesOfThought) -> None:
    assert torch.equal(a.trajectories, b.trajectories)
    assert torch.equal(a.tokens, b.tokens) and a.layer_names == b.layer_names


def test_interrupted_collection_resumes_to_the_same_ensemble(setup, tmp_path) -> None:
    model, tokens, reference = setup
    calls = {"n": 0}

    def crash_on_third_batch(act, hook):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected failure")

    handle = model.blocks[0].hook_resid_pre.add_hook(crash_on_third_batch)
    with pytest.raises(RuntimeError, match="injected"):
        collect_shards(model, tokens, tmp_path, batch_size=3, progress=False)
    assert sorted(p.name for p in tmp_path.glob("batch-*")) == [
        "batch-00000.safetensors",
        "batch-00001.safetensors",
    ]
    assert not list(tmp_path.glob(".*tmp"))  # no half-written shard
    with pytest.raises(IncompleteShardsError, match="2-3") as info:
        load_shards(tmp_path)
    assert info.value.missing == [2, 3]
    model.blocks[0].hook_resid_pre.remove_hooks()
    del handle
    ran = collect_shards(model, tokens, tmp_path, batch_size=3, progress=False)
    assert ran == [2, 3]
    _same(LinesOfThought.from_shards(tmp_path), reference)


def test_workers_share_batches_deterministically(setup_hooked, tmp_path) -> None:
    model, tokens, reference = setup_hooked
    runs = [
        collect_shards(model, tokens, tmp_path, worker=w, n_workers=3, batch_size=3, progress=False)
        for w in (2, 0, 1)
    ]
    assert runs == [[2], [0, 3], [1]]
    _same(load_shards(tmp_path), reference)


def test_corrupt_shard_is_detected_and_recomputed(setup_hooked, tmp_path) -> None:
    model, tokens, reference = setup_hooked
    collect_shards(model, tokens, tmp_path, batch_size=3, progress=False)
    path = tmp_path / "batch-00001.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # flip bits in the payload, header intact
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptShardError, match="batch-00001"):
        load_shards(tmp_path)
    assert collect_shards(model, tokens, tmp_path, batch_size=3, progress=False) == [1]
    _same(load_shards(tmp_path), reference)


def test_a_folder_of_another_collection_is_refused(setup, tmp_path) -> None:
    model, tokens, _ = setup
    collect_shards(model, tokens, tmp_path, batch_size=3, progress=False)
    with pytest.raises(ValueError, match="different collection"):
        collect_shards(model, tokens + 1, tmp_path, batch_size=3, progress=False)
    with pytest.raises(ValueError, match="worker must be"):
        collect_shards(model, tokens, tmp_path, worker=2, n_workers=2)
    meta = json.loads((tmp_path / "manifest.json").read_text())
    assert meta["n_batches"] == 4 and meta["metadata"]["model_config"]["n_layers"] == 2


def test_collect_with_shard_dir_and_metadata(setup, tmp_path) -> None:
    model, tokens, reference = setup
    lot = LinesOfThought.collect(model, tokens, batch_size=3, shard_dir=tmp_path, progress=False)
    _same(lot, reference)
    assert lot.metadata["model_name"] == model.cfg.model_name
    assert lot.metadata["hook"] == "resid_post"
