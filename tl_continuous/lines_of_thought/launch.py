"""Collection under an existing launcher: torchrun (torch.distributed elastic) and SLURM arrays.

Nothing here starts processes: a launcher does, and each process calls
:func:`collect_launched`, which

1. takes its worker index and count from the launcher's environment unless given
   (:func:`worker_from_env`): ``RANK``/``WORLD_SIZE`` under torchrun,
   ``SLURM_ARRAY_TASK_ID``/``SLURM_ARRAY_TASK_COUNT`` (minus ``SLURM_ARRAY_TASK_MIN``, divided by
   ``SLURM_ARRAY_TASK_STEP``) in a SLURM job array, else worker 0 of 1;
2. collects that worker's batches into the shared shard folder
   (:func:`~tl_continuous.lines_of_thought.collect.collect_shards`: finished, intact shards
   are skipped, so a worker restarted by ``torchrun --max-restarts`` resumes);
3. under torchrun, waits at a process-group barrier (gloo) for every rank; then rank 0
   verifies the folder as one collection, one shard at a time
   (:func:`~tl_continuous.lines_of_thought.collect.verify_shards`), and writes
   ``complete.json``. Outside torchrun the worker that finds every batch present verifies
   and marks it.

Under torchrun each rank should run its model on :func:`worker_device` (``cuda:LOCAL_RANK``
when CUDA is available, the CPU otherwise).

>>> worker_from_env(environ={"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
WorkerPlace(worker=1, n_workers=4, launcher='torchrun', local_rank=1)
>>> worker_from_env(environ={"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5",
...                          "SLURM_ARRAY_TASK_COUNT": "3"})
WorkerPlace(worker=2, n_workers=3, launcher='slurm', local_rank=None)
>>> worker_from_env(worker=0, n_workers=2, environ={"RANK": "1", "WORLD_SIZE": "4"})
WorkerPlace(worker=0, n_workers=2, launcher='explicit', local_rank=None)
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jaxtyping import Int
from torch import Tensor

from tl_continuous._io import write_text
from tl_continuous.lines_of_thought.collect import (
    COMPLETE,
    MANIFEST,
    _shard_path,
    collect_shards,
    verify_shards,
)

if TYPE_CHECKING:
    from tl_continuous.backends.base import Model
    from tl_continuous.lines_of_thought.corpus import PseudoSentences

__all__ = [
    "LaunchedCollection",
    "WorkerPlace",
    "collect_launched",
    "worker_device",
    "worker_from_env",
]


_TORCHRUN = ("RANK", "WORLD_SIZE")
_SLURM = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT")


@dataclass(frozen=True)
class WorkerPlace:
    """Where a worker stands: its index, the worker count and where they came from.

    Attributes:
        worker: this worker's index, ``0 <= worker < n_workers``.
        n_workers: how many workers share the batches.
        launcher: ``"torchrun"``, ``"slurm"``, ``"explicit"`` (given) or ``"single"``.
        local_rank: ``LOCAL_RANK`` under torchrun (the device index on this node), else None.
    """

    worker: int
    n_workers: int
    launcher: str
    local_rank: int | None = None


def _env_int(environ: Mapping[str, str], name: str, *, minimum: int) -> int:
    raw = environ[name]
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer (got {raw!r})") from None
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} (got {value})")
    return value


def _from_torchrun(environ: Mapping[str, str]) -> tuple[int, int, int | None]:
    worker = _env_int(environ, "RANK", minimum=0)
    count = _env_int(environ, "WORLD_SIZE", minimum=1)
    if worker >= count:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE={count}) (got {worker})")
    local = _env_int(environ, "LOCAL_RANK", minimum=0) if "LOCAL_RANK" in environ else None
    return worker, count, local


def _from_slurm(environ: Mapping[str, str]) -> tuple[int, int]:
    task = _env_int(environ, "SLURM_ARRAY_TASK_ID", minimum=0)
    count = _env_int(environ, "SLURM_ARRAY_TASK_COUNT", minimum=1)
    low = (
        _env_int(environ, "SLURM_ARRAY_TASK_MIN", minimum=0)
        if ("SLURM_ARRAY_TASK_MIN" in environ)
        else 0
    )
    step = (
        _env_int(environ, "SLURM_ARRAY_TASK_STEP", minimum=1)
        if ("SLURM_ARRAY_TASK_STEP" in environ)
        else 1
    )
    offset = task - low
    if offset < 0 or offset % step or offset // step >= count:
        raise ValueError(
            f"SLURM_ARRAY_TASK_ID={task} is not one of the {count} tasks "
            f"SLURM_ARRAY_TASK_MIN={low} + i * SLURM_ARRAY_TASK_STEP={step}: use a regular "
            "array (--array=0-N or A-B:S), or pass the worker index and count explicitly"
        )
    return offset // step, count


def worker_from_env(
    worker: int | None = None,
    n_workers: int | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> WorkerPlace:
    """This worker's index and the worker count: given, or from the launcher's environment.

    Explicit values win (each on its own); what is not given comes from torchrun's
    ``RANK``/``WORLD_SIZE``, else from a SLURM job array's ``SLURM_ARRAY_TASK_ID`` and
    ``SLURM_ARRAY_TASK_COUNT`` (offset by ``SLURM_ARRAY_TASK_MIN``, divided by
    ``SLURM_ARRAY_TASK_STEP``), else worker 0 of 1.

    Args:
        worker: this worker's index (default: from the environment).
        n_workers: the worker count (default: from the environment).
        environ: the environment to read (default ``os.environ``).

    Raises:
        ValueError: a bad value, named with what was expected; both torchrun's and a SLURM
            array's variables set while ``worker``/``n_workers`` are not both given.

    >>> worker_from_env(environ={})
    WorkerPlace(worker=0, n_workers=1, launcher='single', local_rank=None)
    """
    env = os.environ if environ is None else environ
    for name, value in (("worker", worker), ("n_workers", n_workers)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name} must be an integer or None (got {value!r})")
    local: int | None = None
    if worker is not None and n_workers is not None:
        launcher, found = "explicit", (worker, n_workers)
    else:
        torchrun = all(k in env for k in _TORCHRUN)
        slurm = all(k in env for k in _SLURM)
        if torchrun and slurm:
            raise ValueError(
                "both torchrun (RANK, WORLD_SIZE) and a SLURM array (SLURM_ARRAY_TASK_ID, "
                "SLURM_ARRAY_TASK_COUNT) are in the environment; give worker and n_workers "
                "(--worker, --n-workers) explicitly"
            )
        if torchrun:
            rank, world, local = _from_torchrun(env)
            launcher, found = "torchrun", (rank, world)
        elif slurm:
            launcher, found = "slurm", _from_slurm(env)
        else:
            launcher, found = "single", (0, 1)
        if worker is not None or n_workers is not None:
            launcher, local = "explicit", None
    w = found[0] if worker is None else worker
    n = found[1] if n_workers is None else n_workers
    if n < 1:
        raise ValueError(f"n_workers must be a positive integer (got {n})")
    if not 0 <= w < n:
        raise ValueError(f"worker must be in [0, n_workers={n}) (got {w})")
    return WorkerPlace(w, n, launcher, local)


def worker_device(place: WorkerPlace, *, cuda: bool | None = None) -> str:
    """The device a worker runs its model on: ``cuda:LOCAL_RANK`` under torchrun when CUDA is
    available, ``cuda`` for another worker with CUDA, else ``cpu`` (never required).

    Args:
        place: from :func:`worker_from_env`.
        cuda: whether CUDA is usable (default ``torch.cuda.is_available()``).

    >>> worker_device(WorkerPlace(1, 2, "torchrun", 1), cuda=True)
    'cuda:1'
    >>> worker_device(WorkerPlace(1, 2, "torchrun", 1), cuda=False)
    'cpu'
    """
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if not cuda:
        return "cpu"
    return f"cuda:{place.local_rank}" if place.local_rank is not None else "cuda"


@dataclass
class LaunchedCollection:
    """What one worker of a launched collection did.

    Attributes:
        place: its index, the count and the launcher.
        folder: the shard folder.
        ran: the batches this worker computed (finished ones were skipped).
        verified: the summary of :func:`~.collect.verify_shards` if this worker verified the
            complete folder and wrote ``complete.json``, else None.
        present: batches present in the folder when this worker finished.
        n_batches: batches of the whole collection.
        restart: torchrun's ``TORCHELASTIC_RESTART_COUNT`` (0 on the first attempt).
    """

    place: WorkerPlace
    folder: Path
    ran: list[int]
    verified: dict[str, Any] | None
    present: int
    n_batches: int
    restart: int = 0


def _barrier(timeout: datetime.timedelta) -> bool:
    """Join torchrun's process group (gloo) if needed and wait for every rank; return whether
    this call created the group (the caller then destroys it)."""
    import torch.distributed as dist

    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo", timeout=timeout)
        created = True
    dist.barrier()
    return created


def _mark_complete(folder: Path, place: WorkerPlace) -> dict[str, Any]:
    summary = verify_shards(folder)
    record = {"format": "tl_continuous.lines_of_thought.complete/1", **summary}
    record |= {"n_workers": place.n_workers, "launcher": place.launcher}
    write_text(folder / COMPLETE, json.dumps(record, indent=1))
    return summary


def collect_launched(
    model: Model,
    tokens_or_corpus: Int[Tensor, "n pos"] | PseudoSentences,
    shard_dir: str | os.PathLike[str],
    *,
    worker: int | None = None,
    n_workers: int | None = None,
    environ: Mapping[str, str] | None = None,
    barrier_timeout: datetime.timedelta = datetime.timedelta(hours=24),
    **options: Any,
) -> LaunchedCollection:
    """One worker's part of a collection started by a launcher, then the merge check.

    Args:
        model: the model, already on this worker's device (:func:`worker_device`).
        tokens_or_corpus: the same token ids or pseudo-sentences in every worker.
        shard_dir: the folder every worker shares.
        worker: this worker's index (default: from the environment, :func:`worker_from_env`).
        n_workers: the worker count (default: from the environment).
        environ: the environment to read (default ``os.environ``).
        barrier_timeout: how long rank 0 waits for the slowest rank under torchrun.
        **options: passed to :func:`~tl_continuous.lines_of_thought.collect.collect_shards`
            (``batch_size``, ``hook``, ``layers``, ``progress``, ...).

    Returns:
        What this worker ran, and the verification summary if it verified the folder.

    Raises:
        ValueError: a bad worker index or count (named), or as ``collect_shards``.

    >>> import tempfile, torch
    >>> from tl_continuous.tiny import tiny_model
    >>> with tempfile.TemporaryDirectory() as d:
    ...     done = collect_launched(tiny_model(), torch.randint(0, 50, (5, 4)), d, environ={},
    ...                             batch_size=2, progress=False)
    >>> done.ran, done.verified["n_sequences"]
    ([0, 1, 2], 5)
    """
    env = os.environ if environ is None else environ
    place = worker_from_env(worker, n_workers, environ=env)
    folder = Path(shard_dir).expanduser()
    ran = collect_shards(
        model,
        tokens_or_corpus,
        folder,
        worker=place.worker,
        n_workers=place.n_workers,
        **options,
    )
    n_batches = int(json.loads((folder / MANIFEST).read_text())["n_batches"])
    verified = None
    if place.launcher == "torchrun" and place.n_workers > 1:
        created = _barrier(barrier_timeout)
        if place.worker == 0:
            verified = _mark_complete(folder, place)
        import torch.distributed as dist

        dist.barrier()  # no rank leaves before rank 0 has verified
        if created:
            dist.destroy_process_group()
        present = n_batches
    else:
        present = sum(_shard_path(folder, b).is_file() for b in range(n_batches))
        if present == n_batches:  # the last worker to finish checks and marks the folder
            verified = _mark_complete(folder, place)
    restart = int(env.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    return LaunchedCollection(place, folder, ran, verified, present, n_batches, restart)
