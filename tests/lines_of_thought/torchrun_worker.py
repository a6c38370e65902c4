"""One worker of the launcher tests (``test_launch.py``), started by torchrun or directly.

Builds the same tiny model and token ids in every process (fixed seeds), collects through
:func:`~tl_continuous.lines_of_thought.launch.collect_launched` and writes what this worker did
to ``LOG_DIR/rank{R}-restart{C}.json``. It also appends to ``LOG_DIR/events.txt`` a line
``A R wrote B`` for every shard it writes and ``A R waiting`` when it starts waiting for the
other ranks (``A`` is torchrun's attempt, ``TORCHELASTIC_RESTART_COUNT``; ``R`` the rank).

``--fault R@A:WHEN`` (repeatable) makes the worker of rank ``R`` misbehave on torchrun's attempt
``A`` only (test-side fault injection, the library has none); ``WHEN`` is one of

* ``first-shard``: SIGKILL right after writing its first shard of the attempt;
* ``peers-done``: after its first shard, wait until every other rank's batches are in the
  folder (they then wait for this one), then SIGKILL;
* ``verify``: SIGKILL when verification starts (rank 0 verifies);
* ``exit``: once done and logged, wait until every other rank of the attempt has exited, then
  SIGKILL (a rank that finished dies after its peers left with exit code 0);
* ``hang``: after its first shard, sleep for good (the test then kills the launcher).

::

    python -m torch.distributed.run --standalone --nproc_per_node=2 torchrun_worker.py \\
        SHARD_DIR LOG_DIR [--fault 1@0:first-shard ...]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

N_SEQUENCES, SEQ_LEN, BATCH_SIZE = 23, 6, 3
N_BATCHES = -(-N_SEQUENCES // BATCH_SIZE)
FAULTS = ("first-shard", "peers-done", "verify", "exit", "hang")


def inputs():  # torch is imported here: pytest also collects this file for doctests
    """The tiny model and token ids every process builds alike."""
    import torch

    from tl_continuous.tiny import tiny_model

    torch.set_num_threads(1)  # identical arithmetic in every process and in the reference
    model = tiny_model("rotary", n_layers=3, seed=0)
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 50, (N_SEQUENCES, SEQ_LEN), generator=generator)
    return model, tokens


def parse_fault(text: str) -> tuple[int, int, str]:
    """``"R@A:WHEN"`` as ``(rank, attempt, when)``.

    >>> parse_fault("1@0:peers-done")
    (1, 0, 'peers-done')
    """
    where, _, when = text.partition(":")
    rank, _, attempt = where.partition("@")
    if when not in FAULTS:
        raise argparse.ArgumentTypeError(f"--fault WHEN must be one of {FAULTS} (got {when!r})")
    return int(rank), int(attempt), when


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _wait_for(ready) -> None:
    while not ready():
        time.sleep(0.02)


def _exited(pid: int) -> bool:
    """Whether process ``pid`` has ended (gone, or a zombie its parent has not reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state in ("Z", "X")


def _instrument(when: str | None, rank: int, world: int, attempt: int, args) -> None:
    """Log every shard write and the start of the wait; arm this attempt's fault (``when``)."""
    from tl_continuous.lines_of_thought import collect, launch

    def event(text: str) -> None:
        with open(args.log_dir / "events.txt", "a") as log:
            log.write(f"{attempt} {rank} {text}\n")

    write, wait = collect._write_safetensors, launch._await_batches

    def others_done() -> bool:
        return all(
            collect._shard_path(args.shard_dir, b).is_file()
            for b in range(N_BATCHES)
            if collect.batch_owner(b, world) != rank
        )

    def logged_write(path, tensors, header) -> None:
        write(path, tensors, header)
        event(f"wrote {header['batch']}")
        if when == "first-shard":
            _die()
        if when == "peers-done":
            _wait_for(others_done)
            _die()
        if when == "hang":
            while True:
                time.sleep(1)

    def logged_wait(*a, **kw) -> None:
        event("waiting")
        wait(*a, **kw)

    collect._write_safetensors, launch._await_batches = logged_write, logged_wait
    if when == "verify":

        def die_verifying(*a, **kw):
            _die()

        launch.verify_shards = die_verifying


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("shard_dir", type=Path)
    p.add_argument("log_dir", type=Path)
    p.add_argument("--fault", type=parse_fault, action="append", default=[])
    args = p.parse_args()

    from tl_continuous.lines_of_thought.launch import collect_launched

    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    when = next((w for r, a, w in args.fault if (r, a) == (rank, attempt)), None)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    _instrument(when, rank, world, attempt, args)

    model, tokens = inputs()
    done = collect_launched(model, tokens, args.shard_dir, batch_size=BATCH_SIZE, progress=False)
    record = {
        "worker": done.place.worker,
        "n_workers": done.place.n_workers,
        "launcher": done.place.launcher,
        "local_rank": done.place.local_rank,
        "restart": done.restart,
        "ran": done.ran,
        "verified": done.verified,
        "pid": os.getpid(),
    }
    log = args.log_dir / f"rank{rank}-restart{attempt}.json"
    log.with_suffix(".tmp").write_text(json.dumps(record))
    log.with_suffix(".tmp").replace(log)  # whole or absent: a peer may be reading it
    if when == "exit":
        logs = [args.log_dir / f"rank{r}-restart{attempt}.json" for r in range(world) if r != rank]
        _wait_for(lambda: all(p.is_file() for p in logs))
        pids = [json.loads(p.read_text())["pid"] for p in logs]
        _wait_for(lambda: all(_exited(pid) for pid in pids))
        _die()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip the interpreter's shutdown (seconds with torch loaded): tests wait on it


if __name__ == "__main__":
    main()
