"""Peak memory and time: out-of-core (streamed) analysis against the in-memory path, at growing N.

    python -m benchmarks.lot_streaming [--n 4000] [--factors 1 2 4 8]

A tiny random ``HookedTransformer`` (``tl_continuous.tiny.tiny_model("rotary")`` with
``--n-layers`` blocks and ``--d-model``, float32) collects shard folders of ``n * factor``
sequences of ``--n-tokens`` random token ids in shards of ``--shard-size``. For every size,
each analysis runs in its own fresh subprocess (one thread): a warm-up run of the same
analysis on a two-shard folder (imports, lazily loaded libraries), ``malloc_trim``, read the
resident set size (RSS), then run the analysis once while a thread samples the RSS every
millisecond; the number reported is the largest RSS seen minus the RSS before (MiB). The
child runs with ``MALLOC_MMAP_THRESHOLD_=131072`` so that glibc returns every large freed
buffer to the OS at once (its default threshold adapts upwards and then lets freed shard
buffers pile up in the heap, which the RSS would count as if they were live).

* ``in_memory``: ``LinesOfThought.from_shards`` + ``TrajectoryBases.from_ensemble`` +
  ``ResidualStatistics.from_lines``;
* ``streamed``: ``streamed_bases`` + ``streamed_residual_statistics`` on the folder.

Both give the same numbers (the JSON records the largest relative difference of the
variances). The streamed peak should not grow with N; the in-memory one grows linearly. JSON
goes to ``benchmarks/results/lot_streaming.json``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * 4096 / 2**20


class _RssSampler:
    """Largest resident set size seen while the ``with`` body runs."""

    def __enter__(self) -> _RssSampler:
        self.peak = _rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, _rss_mib())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mib())


def _analyse(method: str, folder: str) -> Any:
    from tl_continuous.lines_of_thought.bases import TrajectoryBases
    from tl_continuous.lines_of_thought.dynamics import ResidualStatistics
    from tl_continuous.lines_of_thought.ensemble import LinesOfThought
    from tl_continuous.lines_of_thought.streaming import (
        streamed_bases,
        streamed_residual_statistics,
    )

    if method == "in_memory":
        lot = LinesOfThought.from_shards(folder)
        bases = TrajectoryBases.from_ensemble(lot)
        return ResidualStatistics.from_lines(lot, bases, progress=False)
    bases = streamed_bases(folder, progress=False)
    return streamed_residual_statistics(folder, bases, progress=False)


def child(method: str, folder: str, warmup: str) -> None:
    """One measurement, printed as a JSON line.

    The method first runs once on the small ``warmup`` folder (same model, few sequences) so
    that imports, lazily loaded libraries and first-call allocations are not counted.
    """
    import torch

    torch.set_num_threads(1)
    _analyse(method, warmup)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _rss_mib()
    start = time.perf_counter()
    with _RssSampler() as sampler:
        stats = _analyse(method, folder)
    seconds = time.perf_counter() - start
    record = {
        "method": method,
        "peak_growth_mib": sampler.peak - before,
        "rss_before_mib": before,
        "seconds": seconds,
        "variance": stats.variance.tolist(),
    }
    print(json.dumps(record))


def _collect(folder: Path, n: int, args: argparse.Namespace) -> float:
    import torch

    from tl_continuous.lines_of_thought.collect import collect_shards
    from tl_continuous.tiny import tiny_model

    model = tiny_model("rotary", n_layers=args.n_layers, d_model=args.d_model, seed=0)
    tokens = torch.randint(0, 50, (n, args.n_tokens), generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    collect_shards(model, tokens, folder, batch_size=args.shard_size, progress=False)
    return time.perf_counter() - start


def _measure(method: str, folder: Path, warmup: Path) -> dict[str, Any]:
    code = "import sys; from benchmarks.lot_streaming import child; child(*sys.argv[1:])"
    out = subprocess.run(
        [sys.executable, "-c", code, method, str(folder), str(warmup)],
        env={**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**17)},
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, write its JSON and return it."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.lot_streaming", description=__doc__)
    p.add_argument("--n", type=int, default=4000, help="smallest N (default: %(default)s)")
    p.add_argument("--factors", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--n-layers", type=int, default=8, help="blocks (default: %(default)s)")
    p.add_argument("--d-model", type=int, default=64, help="width (default: %(default)s)")
    p.add_argument("--n-tokens", type=int, default=6, help="tokens per sequence")
    p.add_argument("--shard-size", type=int, default=64, help="sequences per shard")
    p.add_argument("--name", default="lot_streaming", help="JSON name in benchmarks/results")
    args = p.parse_args(argv)

    from benchmarks._lot_common import write_result

    points = []
    with tempfile.TemporaryDirectory(prefix="lot-streaming-") as tmp:
        warmup = Path(tmp) / "warmup"
        _collect(warmup, 2 * args.shard_size, args)
        for factor in args.factors:
            n = args.n * factor
            folder = Path(tmp) / f"n{n}"
            collect_s = _collect(folder, n, args)
            row: dict[str, Any] = {"n": n, "collect_s": collect_s}
            for method in ("in_memory", "streamed"):
                row[method] = _measure(method, folder, warmup)
            a, b = row["in_memory"].pop("variance"), row["streamed"].pop("variance")
            row["max_rel_diff_variance"] = max(
                abs(x - y) / abs(x) for x, y in zip(a, b, strict=True)
            )
            points.append(row)
            print(
                f"N={n}: in memory {row['in_memory']['peak_growth_mib']:.1f} MiB "
                f"{row['in_memory']['seconds']:.2f} s; streamed "
                f"{row['streamed']['peak_growth_mib']:.1f} MiB {row['streamed']['seconds']:.2f} s"
            )
    first, last = points[0], points[-1]
    data = {
        "benchmark": "lot_streaming",
        "command": "python -m benchmarks.lot_streaming " + " ".join(argv or sys.argv[1:]),
        "model": f"tiny_model('rotary', n_layers={args.n_layers}, d_model={args.d_model}), "
        "random weights, float32",
        "settings": vars(args),
        "points": points,
        "streamed_peak_ratio_last_to_first": last["streamed"]["peak_growth_mib"]
        / max(first["streamed"]["peak_growth_mib"], 1e-9),
        "in_memory_peak_ratio_last_to_first": last["in_memory"]["peak_growth_mib"]
        / max(first["in_memory"]["peak_growth_mib"], 1e-9),
    }
    path = write_result(args.name, data)
    print(f"wrote {path}")
    return data


if __name__ == "__main__":
    main()
