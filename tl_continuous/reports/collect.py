"""``tl-continuous collect``: a corpus's lines of thought into a resumable shard folder.

::

    tl-continuous collect                              # SmolLM2, 2000 x 50 tokens, pydoc corpus
    tl-continuous collect --text my.txt --n 500        # another text
    tl-continuous collect --worker 1 --n-workers 2     # split the work between two processes
    torchrun --nproc_per_node=2 -m tl_continuous collect --out shards  # the same, launched
    sbatch --array=0-7 --wrap "tl-continuous collect --out shards"       # a SLURM job array

A text file (``--text``) or the default corpus is cut into pseudo-sentences
(:func:`~tl_continuous.lines_of_thought.corpus.pseudo_sentences`) whose trajectories go into a
shard folder (:func:`~tl_continuous.lines_of_thought.collect.collect_shards`). Finished
batches are skipped, so a rerun resumes. The default folder is the one the lines-of-thought and
dynamics reports read (:mod:`tl_continuous.reports.settings`), so collecting first with several
workers speeds those up.

Without ``--worker``/``--n-workers`` the worker's place comes from its launcher
(:func:`~tl_continuous.lines_of_thought.launch.worker_from_env`): torchrun's
``RANK``/``WORLD_SIZE`` (each rank on ``cuda:LOCAL_RANK`` when CUDA is available; rank 0
verifies the folder once every rank is done and writes ``complete.json``), or a SLURM job
array's task id and count (the last task to finish verifies). Under torchrun each rank waits
at most ``--barrier-timeout`` seconds for the others, then for rank 0's verification. See
``docs/scale.md``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from tl_continuous.reports.settings import (
    DEFAULT_MODEL,
    add_backend_argument,
    collect_worker_shards,
    shard_folder,
    shard_root,
    shard_stem,
)

__all__ = ["add_arguments", "run"]

_HOOKS = ("resid_pre", "resid_mid", "resid_post")  # lines_of_thought.hooks.HookKind


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The program's options (``--help`` lists them)."""
    p.add_argument("--model", default=DEFAULT_MODEL, help="default: %(default)s")
    add_backend_argument(p)
    p.add_argument(
        "--text", default=None, metavar="PATH", help="a text file (default: pydoc_data.topics)"
    )
    p.add_argument(
        "--n",
        "--n-sentences",
        dest="n",
        type=int,
        default=2000,
        help="pseudo-sentences (default: %(default)s; under torchrun write --n-sentences, "
        "which torchrun does not mistake for its own --nnodes)",
    )
    p.add_argument(
        "--n-tokens", type=int, default=50, help="tokens per pseudo-sentence (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="default: %(default)s")
    p.add_argument(
        "--hook",
        choices=_HOOKS,
        default="resid_post",
        help="residual read per block (default: %(default)s)",
    )
    p.add_argument(
        "--worker",
        type=int,
        default=None,
        help="this worker's index (default: torchrun's RANK, a SLURM array's task index, or 0)",
    )
    p.add_argument(
        "--n-workers",
        type=int,
        default=None,
        help="workers sharing the batches (default: WORLD_SIZE, SLURM_ARRAY_TASK_COUNT, or 1)",
    )
    p.add_argument(
        "--device",
        default=None,
        help="torch device (default: cuda:LOCAL_RANK under torchrun with CUDA, else cuda or cpu)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="shard folder (default: the reports' folder in the cache)",
    )
    p.add_argument(
        "--barrier-timeout",
        type=_positive_seconds,
        default=24 * 3600.0,
        metavar="SECONDS",
        help="under torchrun, how long a rank waits for the other ranks' batches, then for "
        "rank 0's verification (default: %(default)g = 24 h)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _positive_seconds(text: str) -> float:
    """``--barrier-timeout``'s value: a positive number of seconds."""
    try:
        seconds = float(text)
        valid = seconds > 0 and datetime.timedelta(seconds=seconds) > datetime.timedelta(0)
    except (ValueError, OverflowError):  # not a number, inf or nan, or beyond a timedelta
        valid = False
    if not valid:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds (got {text!r})")
    return seconds


def default_folder(args: argparse.Namespace) -> Path:
    """The shard folder of these settings when ``--out`` is not given."""
    stem = shard_stem(args.model, args.text, args.n_tokens)
    if args.hook != "resid_post":
        stem += f"-{args.hook}"
    return shard_folder(shard_root(), stem, args.n, args.seed)


def run(args: argparse.Namespace) -> int:
    """Collect this worker's batches and print what was written."""
    from tl_continuous.lines_of_thought.collect import COMPLETE
    from tl_continuous.lines_of_thought.launch import worker_device, worker_from_env

    try:
        place = worker_from_env(args.worker, args.n_workers)
    except ValueError as err:
        print(f"tl-continuous collect: error: {err}", file=sys.stderr)
        return 2
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from tl_continuous.lines_of_thought.corpus import pseudo_sentences
    from tl_continuous.models import load_model

    device = args.device or worker_device(place)
    model = load_model(args.model, backend=args.backend, device=device)
    corpus = pseudo_sentences(
        model, path=args.text, n_tokens=args.n_tokens, limit=args.n, seed=args.seed
    )
    folder = args.out or default_folder(args)
    done = collect_worker_shards(model, corpus, folder, args, hook=args.hook)
    who = f"worker {place.worker} of {place.n_workers} ({place.launcher}, {device})"
    print(
        f"{who}: wrote {len(done.ran)} batch(es) of {args.batch_size} pseudo-sentences "
        f"({len(corpus)} x {args.n_tokens} tokens, {args.hook}) into {folder}; "
        f"{done.present} of {done.n_batches} batches present"
        + ("" if done.present >= done.n_batches else " (other workers' batches missing)")
    )
    if done.verified is not None:
        v = done.verified
        print(
            f"verified {v['n_sequences']} trajectories x {v['n_layers']} layers x "
            f"{v['d_model']} in {v['n_batches']} shards; wrote {folder / COMPLETE}"
        )
    return 0
