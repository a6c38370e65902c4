"""Collection throughput under torchrun: one process against two, on the same cores.

    python -m benchmarks.lot_torchrun [--n 256] [--n-tokens 50] [--batch-size 16]

Each configuration runs ``python -m torch.distributed.run --standalone --nproc_per_node=P
-m tl_continuous collect --threads T ...`` (the real command, SmolLM2-135M by default) into a
fresh shard folder, and is timed from the launch to the end (so the model load of every rank
and rank 0's verification are included: that is what a user waits for), after one untimed
warm-up run (file caches). Configurations:

* ``1x2``: one process, two threads (one process using both cores);
* ``2x1``: two processes (torchrun ranks), one thread each;
* ``1x1``: one process, one thread (the per-core reference).

``--load-only`` also times each configuration on ``--batch-size`` sequences (one batch per
rank), whose wall time is mostly start-up; the difference is the collection proper. JSON goes
to ``benchmarks/results/lot_torchrun.json`` with sequences per second for each.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]

CONFIGS = {"1x2": (1, 2), "2x1": (2, 1), "1x1": (1, 1)}


def _run(procs: int, threads: int, n: int, args: argparse.Namespace, folder: Path) -> float:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={procs}", "-m", "tl_continuous", "collect",
        "--model", args.model, "--n-sentences", str(n), "--n-tokens", str(args.n_tokens),
        "--batch-size", str(args.batch_size), "--threads", str(threads),
        "--out", str(folder), "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run(
        command, env=env, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1]
    )
    seconds = time.perf_counter() - start
    if not (folder / "complete.json").is_file():
        raise RuntimeError(f"{folder} was not verified (no complete.json)")
    return seconds


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, write its JSON and return it."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.lot_torchrun", description=__doc__)
    p.add_argument("--model", default="smollm2-135m", help="default: %(default)s")
    p.add_argument("--n", type=int, default=256, help="pseudo-sentences (default: %(default)s)")
    p.add_argument("--n-tokens", type=int, default=50, help="tokens each (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=16, help="default: %(default)s")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--load-only", action="store_true", help="also time one batch per rank")
    p.add_argument("--name", default="lot_torchrun", help="JSON name in benchmarks/results")
    args = p.parse_args(argv)

    from benchmarks._lot_common import write_result

    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lot-torchrun-") as tmp:
        _run(1, 1, args.batch_size, args, Path(tmp) / "warmup")  # file caches, untimed
        for name in args.configs:
            procs, threads = CONFIGS[name]
            seconds = _run(procs, threads, args.n, args, Path(tmp) / name)
            row: dict[str, Any] = {
                "processes": procs,
                "threads_each": threads,
                "wall_s": seconds,
                "sequences_per_s": args.n / seconds,
            }
            if args.load_only:
                small = procs * args.batch_size
                start_s = _run(procs, threads, small, args, Path(tmp) / f"{name}-small")
                row["startup_wall_s"] = start_s
                row["collection_sequences_per_s"] = (args.n - small) / max(seconds - start_s, 1e-9)
            rows[name] = row
            print(f"{name}: {seconds:.1f} s, {args.n / seconds:.2f} sequences/s")
    data = {
        "benchmark": "lot_torchrun",
        "command": "python -m benchmarks.lot_torchrun " + " ".join(argv or sys.argv[1:]),
        "settings": vars(args),
        "configs": rows,
        "note": "wall time from launch to the verified folder, model loading included",
    }
    if "1x2" in rows and "2x1" in rows:
        data["speedup_2x1_over_1x2"] = rows["1x2"]["wall_s"] / rows["2x1"]["wall_s"]
    path = write_result(args.name, data)
    print(f"wrote {path}")
    return data


if __name__ == "__main__":
    main()
