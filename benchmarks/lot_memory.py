"""Peak memory: pilot-slicing collection against ``run_with_cache`` then slicing.

    python -m benchmarks.lot_memory [--batch-size 8]

Each method runs in its own subprocess: load SmolLM2, run one warm-up forward, read the peak
resident set size (``ru_maxrss``), run the method once on one batch of N_k = 50 default-corpus
tokens, read the peak again. The reported number is the growth of the process's peak RSS
(MiB), i.e. the extra memory the method needed on top of the loaded model. RSS counts what
the allocator took from the OS, so it is an upper bound on live tensors, measured the same
way for both methods. Both results agree to float tolerance (checked). JSON goes to
``benchmarks/results/lot_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(method: str, batch_size: int) -> None:
    torch.set_num_threads(1)
    from benchmarks._lot_common import batches
    from tl_continuous.lines_of_thought.collect import collect_trajectories
    from tl_continuous.models import load_model

    model = load_model()
    toks = batches(model, 1, batch_size)[0]
    with torch.inference_mode():
        model(toks[:1, :8])
    before = _peak_mib()
    if method == "collect":
        out = collect_trajectories(model, toks, batch_size=batch_size, progress=False).trajectories
    else:
        with torch.inference_mode():
            _, cache = model.run_with_cache(toks)
            names = [f"blocks.{i}.hook_resid_post" for i in range(model.cfg.n_layers)]
            out = torch.stack([cache[n][:, -1] for n in names], dim=1).float()
            del cache
    after = _peak_mib()
    print(
        json.dumps(
            {
                "method": method,
                "peak_growth_mib": after - before,
                "peak_mib": after,
                "checksum": float(out.double().sum()),
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--child", choices=["collect", "run_with_cache"], default=None)
    args = p.parse_args()
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
    main()
