"""Train the counting testbed (plain PyTorch over a ``HookedTransformer``), deterministically.

Regenerate the shipped checkpoint with::

    tl-continuous train-testbed            # writes tl_continuous/testbed/checkpoint/
    tl-continuous train-testbed --out DIR  # anywhere else

Determinism: the data come from Python's ``random.Random(seed)``, the initial weights from
``torch.manual_seed``, ``torch.use_deterministic_algorithms(True)`` is on during training and
the command fixes the number of CPU threads (``--threads``, default 1), because the thread
count can change the order of float summations. Same seed + same threads + same torch build
-> the same weights, bit for bit (compare ``sha256`` in ``training.json``).

Training sees whole tokens only: every duration is 1, positions are 0, 1, 2, ...; the loss is
the cross-entropy of the answer token after the prompt's last token.

>>> result = train(TrainConfig(steps=2, batch_size=8, eval_size=16), progress=False)
>>> result.record["steps"], 0.0 <= result.record["held_out_accuracy"] <= 1.0
(2, True)
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tl_continuous._progress import progress_bar
from tl_continuous.backends.base import Model
from tl_continuous.testbed.model import (
    build_model,
    state_dict_sha256,
    testbed_config,
)
from tl_continuous.testbed.task import VOCAB, CountingExample, CountingTask, collate

__all__ = ["TrainConfig", "TrainResult", "evaluate", "save_checkpoint", "train"]

_HELD_OUT_SEED_OFFSET = 1_000_003


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (the defaults made the shipped checkpoint).

    Attributes:
        seed: seeds the data stream and the initial weights.
        steps: optimiser steps.
        batch_size: prompts per step.
        lr: peak learning rate of AdamW (linear warm-up, cosine decay to 10 %).
        warmup: warm-up steps.
        weight_decay: AdamW weight decay.
        eval_size: held-out prompts drawn from a different seed, minus any prompt seen in
            training.
    """

    seed: int = 0
    steps: int = 3000
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.01
    eval_size: int = 4000

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (got {getattr(self, name)})")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0 (got {self.lr})")


@dataclass
class TrainResult:
    """The trained model and its training record (what ``training.json`` holds)."""

    model: Model
    record: dict[str, Any]


def _lr_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup:
        return (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _length_bucketed_batches(
    task: CountingTask, rng: random.Random, batch_size: int, group: int = 8
) -> Iterator[list[CountingExample]]:
    """Endless batches; each group of ``group`` batches is drawn at once and sorted by length,
    so a batch holds prompts of similar length and little padding is computed."""
    while True:
        pool = sorted((task.sample(rng) for _ in range(group * batch_size)), key=_length)
        chunks = [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]
        rng.shuffle(chunks)
        yield from chunks


def _length(example: CountingExample) -> int:
    return len(example.tokens)


def _answer_logits(model: Model, tokens: torch.Tensor, last: torch.Tensor):
    logits = model(tokens)
    return logits[torch.arange(tokens.shape[0]), last]


@torch.no_grad()
def evaluate(
    model: Model, examples: Sequence[CountingExample], batch_size: int = 500
) -> dict[str, Any]:
    """Accuracy of the argmax answer: overall, per count, contiguous vs scattered.

    >>> from tl_continuous.testbed.model import load_testbed
    >>> task = CountingTask()
    >>> examples = [task.sample(random.Random(i)) for i in range(50)]
    >>> evaluate(load_testbed(), examples)["accuracy"] > 0.9
    True
    """
    correct: list[bool] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        tokens, last, answer = collate(chunk)
        predicted = _answer_logits(model, tokens, last).argmax(-1)
        correct += (predicted == answer).tolist()

    def rate(keep: list[bool]) -> float | None:
        hits = [c for c, k in zip(correct, keep, strict=True) if k]
        return sum(hits) / len(hits) if hits else None

    return {
        "accuracy": sum(correct) / len(correct),
        "n_examples": len(correct),
        "accuracy_by_count": {
            str(n): rate([e.count == n for e in examples]) for n in range(len(VOCAB.count_ids))
        },
        "accuracy_contiguous": rate([e.contiguous for e in examples]),
        "accuracy_scattered": rate([not e.contiguous for e in examples]),
    }


def train(config: TrainConfig | None = None, *, progress: bool = True) -> TrainResult:
    """Train a testbed model from scratch.

    Turns on ``torch.use_deterministic_algorithms`` for the duration of the call (and restores
    the previous setting). The caller fixes the thread count (see :func:`main`).

    Args:
        config: training settings (default: those of the shipped checkpoint).
        progress: show a tqdm bar.
    """
    config = config or TrainConfig()
    task = CountingTask()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(config.seed)
        model = build_model(testbed_config(), seed=config.seed)
        model.train()
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "W_" in n]
        rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "W_" in n)]
        optimiser = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": config.weight_decay},
                {"params": rest, "weight_decay": 0.0},
            ],
            lr=config.lr,
            betas=(0.9, 0.98),
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda step: _lr_factor(step, config)
        )
        batches = _length_bucketed_batches(task, random.Random(config.seed), config.batch_size)
        seen: set[tuple[int, ...]] = set()
        losses: list[float] = []
        start = time.perf_counter()
        bar = progress_bar(range(config.steps), desc="training", enabled=progress)
        for step in bar:
            examples = next(batches)
            seen.update(e.tokens for e in examples)
            tokens, last, answer = collate(examples)
            loss = torch.nn.functional.cross_entropy(_answer_logits(model, tokens, last), answer)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            if step % 50 == 0:
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
        seconds = time.perf_counter() - start
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    model.eval()

    held_rng = random.Random(config.seed + _HELD_OUT_SEED_OFFSET)
    held_out: list[CountingExample] = []
    drawn = 0
    while len(held_out) < config.eval_size:
        example = task.sample(held_rng)
        drawn += 1
        if example.tokens not in seen:
            held_out.append(example)
    scores = evaluate(model, held_out)
    record: dict[str, Any] = {
        **asdict(config),
        "task": asdict(task),
        "train_seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "final_loss_mean_last_100": sum(losses[-100:]) / len(losses[-100:]),
        "loss_every_50_steps": [round(v, 5) for v in losses[::50]],
        "held_out_accuracy": scores["accuracy"],
        "held_out": scores | {"drawn": drawn, "dropped_as_seen_in_training": drawn - len(held_out)},
        "sha256": state_dict_sha256(model),
    }
    return TrainResult(model=model, record=record)


def save_checkpoint(result: TrainResult, folder: str | Path) -> Path:
    """Write ``model.safetensors``, ``config.json`` and ``training.json`` into ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fields = {k: v for k, v in testbed_config().items() if k != "device"}
    state = {k: v.detach().contiguous() for k, v in result.model.state_dict().items()}
    files = {
        "model.safetensors": None,
        "config.json": {"hooked_transformer_config": fields, "vocabulary": list(VOCAB.words)},
        "training.json": result.record,
    }
    for name, content in files.items():
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
        os.close(fd)
        if content is None:
            save_file(state, tmp, metadata={"sha256": result.record["sha256"]})
        else:
            Path(tmp).write_text(json.dumps(content, indent=1) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, folder / name)
    return folder
