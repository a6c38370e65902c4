"""One worker of the launcher tests (``test_launch.py``), started by torchrun or directly.

Builds the same tiny model and token ids in every process (fixed seeds), collects through
:func:`~tl_continuous.lines_of_thought.launch.collect_launched` and writes what this worker did
to ``LOG_DIR/rank{R}-restart{C}.json``. With ``--kill-rank R`` the worker of rank ``R`` kills
itself with SIGKILL right after writing its first shard, on torchrun's first attempt only
(``TORCHELASTIC_RESTART_COUNT`` 0): test-side fault injection, the library has none.

    python -m torch.distributed.run --standalone --nproc_per_node=2 torchrun_worker.py \\
        SHARD_DIR LOG_DIR [--kill-rank R]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

N_SEQUENCES, SEQ_LEN, BATCH_SIZE = 23, 6, 3


def inputs():  # torch is imported here: pytest also collects this file for doctests
    """The tiny model and token ids every process builds alike."""
    import torch

    from tl_continuous.tiny import tiny_model

    torch.set_num_threads(1)  # identical arithmetic in every process and in the reference
    model = tiny_model("rotary", n_layers=3, seed=0)
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 50, (N_SEQUENCES, SEQ_LEN), generator=generator)
    return model, tokens


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("shard_dir", type=Path)
    p.add_argument("log_dir", type=Path)
    p.add_argument("--kill-rank", type=int, default=None)
    args = p.parse_args()

    from tl_continuous.lines_of_thought import collect
    from tl_continuous.lines_of_thought.launch import collect_launched

    rank = int(os.environ.get("RANK", "0"))
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if args.kill_rank == rank and restart == 0:
        write = collect._write_safetensors

        def write_then_die(*a, **kw):
            write(*a, **kw)
            os.kill(os.getpid(), signal.SIGKILL)

        collect._write_safetensors = write_then_die

    model, tokens = inputs()
    done = collect_launched(model, tokens, args.shard_dir, batch_size=BATCH_SIZE, progress=False)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "worker": done.place.worker,
        "n_workers": done.place.n_workers,
        "launcher": done.place.launcher,
        "local_rank": done.place.local_rank,
        "restart": done.restart,
        "ran": done.ran,
        "verified": done.verified,
    }
    (args.log_dir / f"rank{rank}-restart{restart}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
