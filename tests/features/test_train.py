"""Training with SAELens' trainer on given activations, and the checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from features.sae_testing import needs_sae_lens
from tl_continuous.features.quality import SAEQuality
from tl_continuous.features.sae import load_sae, random_sae_like
from tl_continuous.features.train import (
    SAETrainConfig,
    batches,
    read_record,
    save_checkpoint,
    split_chunks,
    train_sae,
)


def sparse_data(n: int = 3000, d: int = 32, n_atoms: int = 64, seed: int = 0) -> torch.Tensor:
    """Rows that are sums of 3 of ``n_atoms`` random directions, plus an offset."""
    gen = torch.Generator().manual_seed(seed)
    atoms = torch.nn.functional.normalize(torch.randn(n_atoms, d, generator=gen), dim=1)
    which = torch.rand(n, n_atoms, generator=gen).argsort(dim=1)[:, :3]
    coef = torch.rand(n, 3, generator=gen) * 3 + 1
    return (coef[..., None] * atoms[which]).sum(dim=1) + 0.5


@needs_sae_lens
@pytest.mark.usefixtures("one_thread")
def test_training_learns_a_dictionary_and_the_checkpoint_loads(tmp_path) -> None:
    import sae_lens

    data = sparse_data()
    config = SAETrainConfig(layer=1, d_sae=64, k=4, steps=250, batch_size=64, lr=3e-3)
    sae = train_sae(data[:2500], config, model_name="tiny")
    assert isinstance(sae, sae_lens.TopKSAE)
    assert sae.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    assert sae.cfg.metadata.model_name == "tiny" and sae.cfg.normalize_activations == "none"
    held = data[2500:]
    trained = SAEQuality.measure(sae, held, label="trained")
    random = SAEQuality.measure(random_sae_like(sae), held, label="random")
    assert trained.explained_variance > 0.6 > random.explained_variance
    assert trained.l0 == pytest.approx(4.0)
    folder = save_checkpoint(sae, tmp_path / "sae", {"quality": [trained.summary()]})
    back = load_sae(folder)
    assert torch.equal(back.W_enc, sae.W_enc) and torch.equal(back.b_dec, sae.b_dec)
    assert read_record(folder)["quality"][0]["label"] == "trained"
    assert (folder / "sae_weights.safetensors").stat().st_mode & 0o044  # readable by others


def test_split_and_batches_are_seeded() -> None:
    a, b = split_chunks(50, 0.1, seed=3)
    assert len(b) == 5 and not set(a.tolist()) & set(b.tolist())
    assert torch.equal(split_chunks(50, 0.1, seed=3)[1], b)
    rows = torch.arange(10.0)[:, None]
    first = [next(batches(rows, 4, seed=1)) for _ in range(2)]
    assert torch.equal(first[0], first[1])
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(rows, 11, seed=0))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"k": 0}, "k must be"),
        ({"hook": "attn"}, "hook must be"),
        ({"held_out_fraction": 1.0}, "held_out_fraction"),
        ({"warm_up": 0.5, "decay": 0.6}, "warm_up and decay"),
    ],
)
def test_config_checks(changes, message) -> None:
    with pytest.raises(ValueError, match=message):
        SAETrainConfig(**changes)


def test_load_sae_names_what_is_missing(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="train-sae"):
        load_sae(tmp_path)
