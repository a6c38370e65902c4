"""Time of the 100-point counting sweep (four apples) on the bundled SmolLM2-135M.

    python -m benchmarks.counting_sweep [--threads N] [--batch-size B] [--steps S]

Prints wall time and process CPU time (on a shared machine the CPU time with one thread is
close to what the sweep takes with nothing else running), and writes JSON to
benchmarks/results/counting_sweep.json. ``python -m benchmarks`` runs it with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from benchmarks._results_io import write_result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[25, 50, 100])
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args(argv or [])
    if args.threads:
        torch.set_num_threads(args.threads)

    from tl_continuous.experiments import count_curve
    from tl_continuous.experiments.span_sweep import default_grid
    from tl_continuous.models import load_model

    model = load_model(device="cpu")
    cs = default_grid(args.steps)
    count_curve(model, "apple", 4, cs[:2], progress=False)  # warm-up
    rows = []
    for bs in args.batch_size:
        wall, cpu = time.perf_counter(), time.process_time()
        count_curve(model, "apple", 4, cs, batch_size=bs, progress=False)
        row = {
            "batch_size": bs,
            "steps": args.steps,
            "threads": torch.get_num_threads(),
            "wall_s": time.perf_counter() - wall,
            "cpu_s": time.process_time() - cpu,
            "load_avg_1min": os.getloadavg()[0],
        }
        rows.append(row)
        print(json.dumps(row))
    write_result("counting_sweep", {"runs": rows})


if __name__ == "__main__":
    main(sys.argv[1:])
