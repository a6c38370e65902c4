"""Run settings shared by the programs: defined once, read by every report.

* the K grid of the truncation KL curves (:data:`DEFAULT_KS`, :func:`ks_for`, and the coarse
  :func:`k_grid` of the demo page);
* the layer range of the variance-law fit (:func:`fit_range`) and the source layers of the
  predicted-vs-true comparisons (:func:`default_sources`);
* the names of the resumable shard folders (:func:`shard_root`, :func:`shard_stem`,
  :func:`shard_folder`): the lines-of-thought report, the dynamics report and
  ``tl-continuous collect`` share one collection through them;
* the command-line options the programs share (:func:`add_backend_argument`,
  :func:`add_report_arguments`, :func:`add_output_arguments`), the collection of one
  worker's batches from them (:func:`collect_worker_shards`) and the opening and closing of
  a report's run (:func:`start_report`, :func:`write_report`).

>>> ks_for(20)
[1, 2, 4, 8, 16, 20]
>>> fit_range(30), default_sources(30)
((5, 25), [10, 12])
>>> shard_folder("/cache/lot-shards", shard_stem("smollm2-135m", None, 50), 2000, 0).name
'smollm2-135m-pydoc-n50-2000-s0'
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_KS",
    "DEFAULT_MODEL",
    "add_backend_argument",
    "add_output_arguments",
    "add_report_arguments",
    "collect_worker_shards",
    "corpus_tag",
    "default_sources",
    "fit_range",
    "k_grid",
    "ks_for",
    "shard_folder",
    "shard_root",
    "shard_stem",
    "start_report",
    "write_report",
]

DEFAULT_MODEL = "smollm2-135m"
"""The model every program runs unless told otherwise."""

DEFAULT_KS = [1, 2, 4, 8, 16, 32, 64, 96, 128, 192, 256, 320, 384, 448, 512, 576]
"""The K grid of the lines-of-thought results (KL of the rank-K truncation against K)."""


def ks_for(d_model: int, ks: list[int] | None = None) -> list[int]:
    """``ks`` (default :data:`DEFAULT_KS`) below ``d_model``, then ``d_model`` itself."""
    return [k for k in (ks or DEFAULT_KS) if k < d_model] + [d_model]


def k_grid(rank: int) -> list[int]:
    """Powers of two below ``rank``, then ``rank`` (the demo page's coarse K grid).

    >>> k_grid(20)
    [1, 2, 4, 8, 16, 20]
    """
    return [2**i for i in range(rank.bit_length()) if 2**i < rank] + [rank]


def fit_range(n_layers: int) -> tuple[int, int]:
    """Layer indices ``[start, stop)`` of the variance-law fit: the middle two thirds."""
    return n_layers // 6, n_layers - n_layers // 6


def default_sources(n_layers: int) -> list[int]:
    """Source layer indices of the predicted-vs-true comparisons (about L/3 and L/2 - 3)."""
    return [n_layers // 3, n_layers // 2 - 3]


def corpus_tag(path: str | os.PathLike[str] | None) -> str:
    """Short name of a corpus in folder names: ``"pydoc"`` (default corpus) or the file stem."""
    return "pydoc" if path is None else Path(path).stem


def shard_root(shard_dir: str | os.PathLike[str] | None = None) -> Path:
    """``shard_dir``, or ``lot-shards`` under the cache root (see ``models.cache_root``)."""
    if shard_dir is not None:
        return Path(shard_dir)
    from tl_continuous.models import cache_root

    return cache_root() / "lot-shards"


def shard_stem(model: str, corpus: str | os.PathLike[str] | None, n_tokens: int) -> str:
    """Common prefix of a run's shard folders: model, corpus tag and tokens per sentence."""
    return f"{model}-{corpus_tag(corpus)}-n{n_tokens}"


def shard_folder(
    root: str | os.PathLike[str], stem: str, n: int, seed: int, kind: str | None = None
) -> Path:
    """The shard folder of ``n`` sequences (``kind``: a control such as ``"gibberish"``)."""
    return Path(root) / f"{stem}-{kind + '-' if kind else ''}{n}-s{seed}"


def add_backend_argument(p: argparse.ArgumentParser) -> None:
    """``--backend``: HookedTransformer or TransformerBridge (default: the installed one)."""
    p.add_argument(
        "--backend",
        choices=("hooked", "bridge"),
        default=None,
        help="HookedTransformer or TransformerBridge (default: bridge on TransformerLens 4)",
    )


def add_report_arguments(
    p: argparse.ArgumentParser, *, n_help: str, more: Sequence[tuple[str, dict[str, Any]]] = ()
) -> None:
    """The model and corpus options of the lines-of-thought and dynamics reports.

    ``--model``, ``--backend``, ``--corpus``, ``--n`` (help ``n_help``), then the options
    ``more`` names (flag and keywords), then ``--n-tokens``, ``--seed`` and ``--batch-size``.
    """
    p.add_argument("--model", default=DEFAULT_MODEL)
    add_backend_argument(p)
    p.add_argument("--corpus", default=None, help="a text file (default: pydoc_data.topics)")
    p.add_argument("--n", type=int, default=2000, help=n_help)
    for flag, kwargs in more:
        p.add_argument(flag, **kwargs)
    p.add_argument("--n-tokens", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)


def add_output_arguments(p: argparse.ArgumentParser, out: str) -> None:
    """The closing options of the reports: ``--threads``, ``--out`` (default ``out``),
    ``--render-only`` and ``--no-progress``."""
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--out", default=out)
    p.add_argument(
        "--render-only",
        action="store_true",
        help="only rewrite the markdown from the JSON beside --out (no model, no computation)",
    )
    p.add_argument("--no-progress", action="store_true")


def collect_worker_shards(
    model: Any, corpus: Any, folder: str | os.PathLike[str], args: argparse.Namespace, **kwargs: Any
) -> Any:
    """This worker's batches of a shard folder, under whatever launcher started it.

    :func:`~tl_continuous.lines_of_thought.launch.collect_launched`: ``--worker`` and
    ``--n-workers`` come from ``args`` where given, else from the launcher's environment
    (torchrun's ``RANK``/``WORLD_SIZE``, a SLURM array's task id and count); ``--batch-size``,
    ``--no-progress`` and ``--barrier-timeout`` (seconds, where the program has it) from
    ``args`` too; ``kwargs`` (such as ``hook``) are passed on. Under torchrun rank 0 verifies
    the folder once every rank is done.

    Returns:
        The :class:`~tl_continuous.lines_of_thought.launch.LaunchedCollection` (``.ran``:
        the batches run).
    """
    from tl_continuous.lines_of_thought.launch import collect_launched

    seconds = getattr(args, "barrier_timeout", None)
    if seconds is not None:
        kwargs["barrier_timeout"] = datetime.timedelta(seconds=seconds)
    return collect_launched(
        model,
        corpus,
        folder,
        worker=getattr(args, "worker", None),
        n_workers=getattr(args, "n_workers", None),
        batch_size=args.batch_size,
        progress=not args.no_progress,
        **kwargs,
    )


def start_report(
    args: argparse.Namespace, command: str, render: Callable[[Any, str], str]
) -> Path | None:
    """The opening of a report's ``run``: the ``--out`` path, or ``None`` once done.

    With ``--render-only`` the markdown is rewritten by ``render(results, command)`` from the
    JSON beside ``--out`` and ``None`` returned; otherwise ``--threads`` is applied.
    """
    from tl_continuous._io import write_text

    out = Path(args.out)
    if args.render_only:
        results = json.loads(out.with_suffix(".json").read_text())
        write_text(out, render(results, command))
        print(f"wrote {out} from {out.with_suffix('.json')}")
        return None
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return out


def write_report(out: Path, results: Any, markdown: str) -> None:
    """Write a report's markdown to ``out`` and its numbers to the JSON beside it."""
    from tl_continuous._io import write_text

    write_text(out, markdown)
    write_text(out.with_suffix(".json"), json.dumps(results, indent=1))
    print(f"wrote {out} and {out.with_suffix('.json')}")
