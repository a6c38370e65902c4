"""``tl-continuous train-testbed``: train the counting testbed and write its checkpoint.

Regenerate the shipped checkpoint with::

    tl-continuous train-testbed            # writes tl_continuous/testbed/checkpoint/
    tl-continuous train-testbed --out DIR  # anywhere else

The training itself is :func:`tl_continuous.testbed.train.train`; the thread count is fixed
(``--threads``, default 1) because it can change the order of float summations.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The program's options (defaults: :class:`~tl_continuous.testbed.train.TrainConfig`)."""
    parser.add_argument(
        "--out", type=Path, default=None, help="checkpoint folder (default: the shipped one)"
    )
    parser.add_argument("--seed", type=int, default=None, help="default: TrainConfig's (0)")
    parser.add_argument("--steps", type=int, default=None, help="default: TrainConfig's (3000)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: TrainConfig's (64)")
    parser.add_argument("--lr", type=float, default=None, help="default: TrainConfig's (3e-3)")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (fixed for determinism)"
    )
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Train with the given settings and write the checkpoint."""
    import torch

    from tl_continuous.testbed.model import CHECKPOINT_DIR
    from tl_continuous.testbed.train import TrainConfig, save_checkpoint, train

    torch.set_num_threads(args.threads)
    given = {
        "seed": args.seed,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
    }
    config = TrainConfig(**{k: v for k, v in given.items() if v is not None})
    result = train(config, progress=not args.no_progress)
    out = args.out or CHECKPOINT_DIR
    save_checkpoint(result, out)
    rec = result.record
    print(
        f"trained {rec['n_parameters']} parameters in {rec['train_seconds']} s "
        f"({rec['threads']} thread(s)); held-out accuracy {rec['held_out_accuracy']:.4f} on "
        f"{rec['held_out']['n_examples']} prompts; sha256 {rec['sha256']}; wrote {out}"
    )
    return 0
