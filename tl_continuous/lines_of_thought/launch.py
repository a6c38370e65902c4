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
3. under torchrun, waits until every batch of the collection is in the folder; then rank 0
   verifies the folder as one collection, one shard at a time
   (:func:`~tl_continuous.lines_of_thought.collect.verify_shards`), and writes
   ``complete.json``, which the other ranks wait for before they leave. Outside torchrun the
   worker that finds every batch present verifies and marks it.

The wait is on the shard folder itself, which every rank shares anyway (rank 0 reads all of
it), and not on a ``torch.distributed`` process group: torchrun keeps one rendezvous store
(``MASTER_ADDR:MASTER_PORT``) across ``--max-restarts`` restarts, so a gloo group joined by a
restarted rank could read the listening address a killed rank had left there and connect to a
dead port (``Connection refused``), or two ranks could both wait to be connected to (a hang for
the whole process-group timeout). A folder holds no such state: the shards present are the
truth whatever the order in which ranks die, restart and finish. Each wait is bounded by
``barrier_timeout``; a rank of a torchrun job also stops, with a message, when its launcher
sends SIGTERM or dies, so a failed launch leaves no process behind.

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
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jaxtyping import Int
from torch import Tensor

from tl_continuous._io import write_text
from tl_continuous.lines_of_thought.collect import (
    COMPLETE,
    MANIFEST,
    _ranges,
    _shard_path,
    batch_owner,
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


_FIRST_PAUSE, _LONGEST_PAUSE = 0.05, 0.5  # seconds between two looks at the folder
_PARENT_CHECK = 0.5  # seconds between two checks that the launcher is alive


def _wait_until(ready: Callable[[], bool], timeout: datetime.timedelta) -> bool:
    """Call ``ready`` with growing pauses (0.05 s up to 0.5 s) until it returns true or
    ``timeout`` has passed; return its last answer."""
    deadline = time.monotonic() + timeout.total_seconds()
    pause = _FIRST_PAUSE
    while not ready():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 1.5, _LONGEST_PAUSE)
    return True


def _missing_batches(folder: Path, n_batches: int) -> list[int]:
    """The batches without a shard file in ``folder`` (one directory listing)."""
    names = set(os.listdir(folder))
    return [b for b in range(n_batches) if _shard_path(folder, b).name not in names]


def _resume_hint(folder: Path) -> str:
    return (
        f"the finished shards in {folder} are kept: rerun the same command to resume "
        "(raise --barrier-timeout / barrier_timeout if a rank is only slow; ranks on several "
        "nodes need the folder on a file system they all see)"
    )


def _await_batches(
    folder: Path, n_batches: int, place: WorkerPlace, timeout: datetime.timedelta
) -> None:
    """Wait until every batch of the collection has its shard in ``folder``.

    Each look checks the first batch not yet seen (shards only ever appear), so it costs one
    ``stat`` however large the folder and however many ranks wait on a shared file system.

    Raises:
        TimeoutError: some are still missing after ``timeout`` (named, with their ranks).
    """
    first_missing = 0

    def ready() -> bool:
        nonlocal first_missing
        while first_missing < n_batches and _shard_path(folder, first_missing).is_file():
            first_missing += 1
        return first_missing == n_batches

    missing = [] if _wait_until(ready, timeout) else _missing_batches(folder, n_batches)
    if missing:  # (empty too when the last one came just as the time ran out)
        ranks = sorted({batch_owner(b, place.n_workers) for b in missing})
        raise TimeoutError(
            f"rank {place.worker} of {place.n_workers} waited {timeout} (barrier_timeout) for "
            f"the other ranks: {len(missing)} of {n_batches} batches are still missing "
            f"({_ranges(missing)}; rank(s) {_ranges(ranks)}); {_resume_hint(folder)}"
        )


def _completion(folder: Path, tokens_sha256: str) -> dict[str, Any] | None:
    """The record of ``complete.json`` if it marks this collection (same token hash), else
    None."""
    try:
        record = json.loads((folder / COMPLETE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return record if record.get("tokens_sha256") == tokens_sha256 else None


def _await_completion(
    folder: Path, tokens_sha256: str, place: WorkerPlace, timeout: datetime.timedelta
) -> None:
    """Wait until rank 0 has verified the folder and written ``complete.json``.

    Raises:
        TimeoutError: no ``complete.json`` of this collection after ``timeout``.
    """
    if not _wait_until(lambda: _completion(folder, tokens_sha256) is not None, timeout):
        raise TimeoutError(
            f"rank {place.worker} of {place.n_workers} waited {timeout} (barrier_timeout) for "
            f"rank 0 to verify {folder} and write {COMPLETE}; every batch is there: rerun the "
            "same command to verify it"
        )


def _shards_present(folder: Path) -> int:
    return len(list(folder.glob("batch-*.safetensors"))) if folder.is_dir() else 0


def _stopped_message(place: WorkerPlace, folder: Path, environ: Mapping[str, str]) -> str:
    """What a torchrun rank says when SIGTERM stops it (from torchrun, or from the watcher
    of ``_launcher_watch`` once torchrun is gone)."""
    restart = int(environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    most = int(environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0)
    left = max(most - restart, 0)
    then = (
        f"if another rank failed, torchrun restarts every rank ({left} restart(s) left) and "
        "each resumes from them; otherwise rerun the same command to resume"
        if left
        else "no restart is left (--max-restarts): rerun the same command to resume from them"
    )
    return (
        f"tl-continuous: rank {place.worker} of {place.n_workers} stopped by SIGTERM "
        f"(torchrun attempt {restart + 1} of {most + 1}); the {_shards_present(folder)} "
        f"finished shard(s) in {folder} are kept; {then}"
    )


def _watch_parent(parent: int, stop: threading.Event, who: str) -> None:
    """Send this process SIGTERM once its parent (the torchrun agent) is gone."""
    while not stop.wait(_PARENT_CHECK):
        if os.getppid() != parent:
            print(
                f"tl-continuous: {who}: its launcher (pid {parent}) is gone; stopping",
                file=sys.stderr,
                flush=True,
            )
            os.kill(os.getpid(), signal.SIGTERM)
            return


class _Stopped(BaseException):
    """Raised by the SIGTERM handler of ``_launcher_watch`` to unwind the rank's work."""


def _die_by_sigterm() -> None:
    """End this process the way SIGTERM's default action does (status -15 for the launcher)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
    os._exit(128 + signal.SIGTERM)  # not reached: the signal ends the process first


@contextmanager
def _launcher_watch(place: WorkerPlace, folder: Path, environ: Mapping[str, str]) -> Iterator[None]:
    """Under torchrun, tie this rank's life to its launcher's while the block runs.

    SIGTERM (torchrun stopping or restarting its ranks) prints a message naming the kept
    shards and what comes next, unwinds the block (a shard being written is removed, not left
    as a temporary file) and ends the process as SIGTERM would, without the seconds an
    interpreter takes to shut down. The handler is installed only in the main thread and
    only over the default one. If the torchrun agent dies (killed with SIGKILL, say), a
    watcher thread sends this process SIGTERM: an orphaned rank would otherwise wait for
    ``barrier_timeout`` (24 h by default) for ranks that are gone.
    """
    if place.launcher != "torchrun" or "TORCHELASTIC_RUN_ID" not in environ:
        yield
        return

    def stop_rank(signum: int, frame: object) -> None:
        print(_stopped_message(place, folder, environ), file=sys.stderr, flush=True)
        raise _Stopped

    ours = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    )
    if ours:
        signal.signal(signal.SIGTERM, stop_rank)
    stop = threading.Event()
    who = f"rank {place.worker} of {place.n_workers}"
    watcher = threading.Thread(
        target=_watch_parent, args=(os.getppid(), stop, who), name="launcher-watch", daemon=True
    )
    watcher.start()
    try:
        yield
    except _Stopped:
        sys.stdout.flush()
        _die_by_sigterm()
    finally:
        if ours:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        stop.set()
        watcher.join()


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
        barrier_timeout: under torchrun, how long a rank waits for the other ranks' batches,
            and then (ranks other than 0) for rank 0's verification; each wait at most this.
        **options: passed to :func:`~tl_continuous.lines_of_thought.collect.collect_shards`
            (``batch_size``, ``hook``, ``layers``, ``progress``, ...).

    Returns:
        What this worker ran, and the verification summary if it verified the folder.

    Raises:
        ValueError: a bad worker index or count (named), a ``barrier_timeout`` that is not a
            positive ``timedelta``, or as ``collect_shards``.
        TimeoutError: under torchrun, a wait outlasted ``barrier_timeout`` (the message names
            the missing batches and their ranks; the finished shards stay, a rerun resumes).

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
    if not isinstance(barrier_timeout, datetime.timedelta) or barrier_timeout.total_seconds() <= 0:
        raise ValueError(
            f"barrier_timeout must be a positive datetime.timedelta (got {barrier_timeout!r})"
        )
    folder = Path(shard_dir).expanduser()
    with _launcher_watch(place, folder, env):
        ran = collect_shards(
            model,
            tokens_or_corpus,
            folder,
            worker=place.worker,
            n_workers=place.n_workers,
            **options,
        )
        manifest = json.loads((folder / MANIFEST).read_text())
        n_batches = int(manifest["n_batches"])
        verified = None
        if place.launcher == "torchrun" and place.n_workers > 1:
            _await_batches(folder, n_batches, place, barrier_timeout)
            if place.worker == 0:
                verified = _mark_complete(folder, place)
            else:  # no rank leaves before rank 0 has verified
                _await_completion(folder, manifest["tokens_sha256"], place, barrier_timeout)
            present = n_batches
        else:
            present = n_batches - len(_missing_batches(folder, n_batches))
            if present == n_batches:  # the last worker to finish checks and marks the folder
                verified = _mark_complete(folder, place)
    restart = int(env.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    return LaunchedCollection(place, folder, ran, verified, present, n_batches, restart)
