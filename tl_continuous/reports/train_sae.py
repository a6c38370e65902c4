"""``tl-continuous train-sae``: train the bundled SAE and record its quality.

Regenerate the shipped SAE with::

    tl-continuous train-sae               # writes tl_continuous/features/checkpoint/
    tl-continuous train-sae --out DIR     # anywhere else

Steps: load SmolLM2-135M, collect the residual stream after block 15 on every 128-token chunk
of the default corpus (``pydoc_data.topics``; 10% of the chunks held out, seeded; the first
position of each chunk left out), train a TopK SAE with SAELens' ``SAETrainer``
(:func:`~tl_continuous.features.train.train_sae`), then measure it and its random control on
the held-out chunks (:class:`~tl_continuous.features.quality.SAEQuality`: explained variance,
L0, dead features, next-token loss with the SAE spliced in). The checkpoint folder gets
SAELens' ``cfg.json`` and ``sae_weights.safetensors`` and ``training.json`` (settings,
timings, both quality records, the command). Needs SAELens (``pip install -e '.[sae]'``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The program's options (defaults: :class:`~tl_continuous.features.train.SAETrainConfig`)."""
    parser.add_argument(
        "--out", type=Path, default=None, help="checkpoint folder (default: the shipped one)"
    )
    parser.add_argument("--layer", type=int, default=None, help="block read (default: 15)")
    parser.add_argument("--d-sae", type=int, default=None, help="features (default: 2048)")
    parser.add_argument("--k", type=int, default=None, help="active features per token (32)")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps")
    parser.add_argument("--batch-size", type=int, default=None, help="activations per step")
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=None, help="split, init and batch order")
    parser.add_argument(
        "--limit", type=int, default=None, help="use only LIMIT chunks of the corpus (tests)"
    )
    parser.add_argument(
        "--loss-chunks",
        type=int,
        default=32,
        help="held-out chunks for the spliced next-token loss (0: skip it)",
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="CPU threads (fixed: it changes float sums)"
    )
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Collect, train, measure, write the checkpoint."""
    import os
    import platform
    import time

    import torch

    from tl_continuous.features.quality import SAEQuality
    from tl_continuous.features.sae import CHECKPOINT_DIR, random_sae_like
    from tl_continuous.features.train import (
        SAETrainConfig,
        config_dict,
        save_checkpoint,
        train_sae,
        training_activations,
    )
    from tl_continuous.lines_of_thought.corpus import pseudo_sentences
    from tl_continuous.models import load_model

    torch.set_num_threads(args.threads)
    given = {
        "layer": args.layer,
        "d_sae": args.d_sae,
        "k": args.k,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
    }
    config = SAETrainConfig(**{k: v for k, v in given.items() if v is not None})
    started = time.perf_counter()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    model = load_model("smollm2-135m", backend="hooked")
    corpus = pseudo_sentences(model, n_tokens=config.n_tokens, limit=args.limit, seed=0)
    data = training_activations(model, config, corpus, progress=not args.no_progress)
    print(
        f"collected {data.train.shape[0]} training and {data.held_out.shape[0]} held-out "
        f"activations of {config.hook_name} in {data.metadata['collect_seconds']} s"
    )
    t0 = time.perf_counter()
    sae = train_sae(data.train, config, model_name=str(model.cfg.model_name))
    train_seconds = time.perf_counter() - t0
    loss_tokens = data.held_out_tokens[: args.loss_chunks] if args.loss_chunks > 0 else None
    loss_args = {"model": model, "tokens": loss_tokens} if loss_tokens is not None else {}
    t0 = time.perf_counter()
    qualities = [
        SAEQuality.measure(sae, data.held_out, label="trained", **loss_args),
        SAEQuality.measure(
            random_sae_like(sae, seed=0), data.held_out, label="random init (seed 0)", **loss_args
        ),
    ]
    measure_seconds = time.perf_counter() - t0
    for q in qualities:
        lr = q.loss_recovered
        print(
            f"{q.label}: explained variance {q.explained_variance:.4f}, L0 {q.l0:.1f}, dead "
            f"{q.dead}/{q.d_sae} on {q.n_tokens} held-out tokens"
            + ("" if lr is None else f", loss recovered {lr:.4f} (CE {q.ce_sae:.3f} vs clean "
               f"{q.ce_clean:.3f}, zero {q.ce_zero:.3f})")
        )  # fmt: skip
    options = [f"--{k.replace('_', '-')} {v}" for k, v in given.items() if v is not None]
    options += [f"--limit {args.limit}"] if args.limit is not None else []
    options += [f"--loss-chunks {args.loss_chunks}"] if args.loss_chunks != 32 else []
    record = {
        "command": " ".join(["tl-continuous train-sae", *options]),  # --out: where, not what
        "config": config_dict(config),
        "data": data.metadata | {"n_train": int(data.train.shape[0]),
                                 "n_held_out": int(data.held_out.shape[0]),
                                 "loss_chunks": 0 if loss_tokens is None else len(loss_tokens)},
        "quality": [q.summary() for q in qualities],
        "train_seconds": round(train_seconds, 1),
        "measure_seconds": round(measure_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(),
        "load_average": {"start": load_at_start, "end": [round(x, 2) for x in os.getloadavg()]},
        "torch": torch.__version__,
        "sae_lens": __import__("sae_lens").__version__,
        "machine": platform.machine(),
    }  # fmt: skip
    out = save_checkpoint(sae, args.out or CHECKPOINT_DIR, record)
    print(f"trained in {record['train_seconds']} s ({config.steps} steps); wrote {out}")
    return 0
