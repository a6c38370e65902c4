"""Peak memory: pilot-slicing collection against ``run_with_cache`` then slicing.

    python -m benchmarks.lot_memory [--batch-size 8]

Each method runs in its own subprocess: load SmolLM2, run one warm-up forward, return freed
memory to the OS (``malloc_trim``), read the resident set size, then run the method once on
one batch of N_k = 50 default-corpus tokens while a thread samples the RSS every millisecond.
The reported number is the largest RSS seen during the method minus the RSS before it (MiB),
i.e. the extra memory the method needed on top of the loaded model. (The process's lifetime
peak, ``ru_maxrss``, is useless here: loading the weights peaks higher than either method.)
RSS counts what the allocator took from the OS, so it is an upper bound on live tensors,
measured the same
way for both methods. Both results agree to float tolerance (checked). JSON goes to
``benchmarks/results/lot_memory.json``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import subprocess
import sys
import threading
from typing import Any

import torch


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


def child(method: str, batch_size: int) -> None:
    torch.set_num_threads(1)
    from benchmarks._lot_common import batches
    from tl_continuous.models import load_model

    model = load_model()
    toks = batches(model, 1, batch_size)[0]
    with torch.inference_mode():
        model(toks[:1, :8])
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _rss_mib()
    with _RssSampler() as sampler:
        out = _run_method(method, model, toks, batch_size)
    print(
        json.dumps(
            {
                "method": method,
                "peak_growth_mib": sampler.peak - before,
                "rss_before_mib": before,
                "checksum": float(out.double().sum()),
            }
        )
    )


def _run_method(method: str, model: Any, toks: torch.Tensor, batch_size: int) -> torch.Tensor:
    from tl_continuous.lines_of_thought.collect import collect_trajectories

    if method == "collect":
        out = collect_trajectories(model, toks, batch_size=batch_size, progress=False).trajectories
    else:
        with torch.inference_mode():
            _, cache = model.run_with_cache(toks)
            names = [f"blocks.{i}.hook_resid_post" for i in range(model.cfg.n_layers)]
            out = torch.stack([cache[n][:, -1] for n in names], dim=1).float()
            del cache
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--child", choices=["collect", "run_with_cache"], default=None)
    args = p.parse_args(argv or [])
    if args.child:
        child(args.child, args.batch_size)
        return
    from benchmarks._lot_common import write_result

    res = {}
    for method in ("collect", "run_with_cache"):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.lot_memory",
                "--child",
                method,
                "--batch-size",
                str(args.batch_size),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        res[method] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{method:15s} peak RSS growth {res[method]['peak_growth_mib']:8.1f} MiB")
    a, b = res["collect"], res["run_with_cache"]
    same = abs(a["checksum"] - b["checksum"]) <= 1e-3 * abs(b["checksum"])
    ratio = b["peak_growth_mib"] / max(a["peak_growth_mib"], 1e-9)
    print(f"run_with_cache / collect peak growth: {ratio:.1f}x (same values: {same})")
    path = write_result(
        "lot_memory",
        {
            "batch_size": args.batch_size,
            "n_tokens": 50,
            "results": res,
            "ratio_cache_over_collect": ratio,
            "same_values": same,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
