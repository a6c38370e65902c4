"""Every-layer KL sweep: frozen key/value cache (prefix once) against naive full recompute.

    python -m benchmarks.lot_truncation [--n 8 --ks 1 2 4 ... 576 --result lot_truncation]
    python -m benchmarks.lot_truncation --n 4 --batch-size 4 --ks $(seq 2 2 576) \
        --result lot_truncation_spec_grid

SmolLM2, N_k = 50 default-corpus pseudo-sentences, the report's K grid by default. The bases
come from the report's 2000-trajectory shard folder when it exists (``--shards``), otherwise
from ``--bases-n`` (600) other pseudo-sentences; the point is speed and agreement, not the
curve. Both methods produce the full
curve; the maximum difference of the mean KL is printed with the speed-up (target >= 10x on
the report's grid, >= 20x on the spec's every-even-K grid), and both speeds against the
machine's limit (``benchmarks/_limits.py``; the FLOPs each method actually runs: the naive
path 1 + len(ks) full forwards with logits at every position, the fast path one prefix pass
without logits per batch plus its branch passes; the float64 projections and KL are not
counted). JSON goes to ``benchmarks/results/RESULT.json`` (default ``lot_truncation``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from benchmarks._limits import forward_flops, limit_entry, sgemm_peak
from benchmarks._lot_common import time_once, write_result


def kl_flops(
    model: Any, n: int, batch_size: int, n_tokens: int, n_ks: int, max_rows: int
) -> dict[str, int]:
    """FLOPs of the every-layer KL sweep, ``{"kv_cache": ..., "naive": ...}``."""
    from tl_continuous.backends import backend_name

    cfg, prefix = model.cfg, n_tokens - 1
    if backend_name(model) == "hooked":
        from tl_continuous.backends.hooked import _branches_along_positions
    else:
        from tl_continuous.backends.bridge import _branches_along_positions
    along_positions = _branches_along_positions(model)
    fast = naive = 0
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        naive += (1 + n_ks) * forward_flops(cfg, b, n_tokens)
        fast += forward_flops(cfg, b, prefix, unembed_positions=0)
        branches, per_pass = 1 + n_ks, max(1, max_rows // b)
        for first in range(0, branches, per_pass):
            m = min(per_pass, branches - first)
            if along_positions and m > 1:
                fast += forward_flops(cfg, b, m, n_past=prefix)
            else:
                fast += forward_flops(cfg, b * m, 1, n_past=prefix)
    return {"kv_cache": fast, "naive": naive}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--ks", type=int, nargs="*", default=None)
    p.add_argument("--shards", default=None, help="shard folder whose ensemble gives the bases")
    p.add_argument(
        "--bases-n",
        type=int,
        default=600,
        help="without shards: pseudo-sentences collected for the bases (>= d_model for full rank)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-rows", type=int, default=256)
    p.add_argument("--result", default="lot_truncation", help="writes results/RESULT.json")
    args = p.parse_args(argv or [])
    torch.set_num_threads(args.threads)
    peak = sgemm_peak()

    from tl_continuous.lines_of_thought.bases import TrajectoryBases
    from tl_continuous.lines_of_thought.corpus import pseudo_sentences
    from tl_continuous.lines_of_thought.ensemble import LinesOfThought
    from tl_continuous.lines_of_thought.truncation import truncation_kl_every_layer
    from tl_continuous.models import load_model

    model = load_model()
    ps = pseudo_sentences(model, n_tokens=50, limit=args.n, seed=0)
    lot = LinesOfThought.collect(model, ps, batch_size=args.batch_size, progress=False)
    from tl_continuous.reports.settings import (
        DEFAULT_KS,
        DEFAULT_MODEL,
        shard_folder,
        shard_root,
        shard_stem,
    )

    # the shard folder of `tl-continuous report lines-of-thought` (and `tl-continuous collect`)
    shards = args.shards or shard_folder(shard_root(), shard_stem(DEFAULT_MODEL, None, 50), 2000, 0)
    try:
        source = LinesOfThought.from_shards(shards)
        bases_from = str(shards)
    except (FileNotFoundError, ValueError):
        more = pseudo_sentences(model, n_tokens=50, limit=args.bases_n, seed=1)
        source = LinesOfThought.collect(model, more, batch_size=32, progress=False)
        bases_from = f"{args.bases_n} pseudo-sentences (seed 1)"
    bases = TrajectoryBases.from_ensemble(source)
    ks = [k for k in (args.ks or DEFAULT_KS) if k <= bases.rank]
    curves = {}

    def run(method: str):
        def go() -> None:
            curves[method] = truncation_kl_every_layer(
                model,
                lot,
                bases,
                ks,
                batch_size=args.batch_size,
                method=method,
                max_rows=args.max_rows,
                progress=False,
            )

        return go

    t_fast = time_once(run("kv_cache"))
    t_naive = time_once(run("naive"))
    diff = float((curves["kv_cache"].kl_mean - curves["naive"].kl_mean).abs().max())
    # float32 forwards that sum in another order: agreement to ~1e-7 of the curve's scale
    rel = diff / float(curves["naive"].kl_mean.abs().max())
    speedup = t_naive / t_fast
    peak = max(peak, sgemm_peak())
    work = kl_flops(model, args.n, args.batch_size, 50, len(ks), args.max_rows)
    limits = {
        "kv_cache": limit_entry(work["kv_cache"], t_fast, peak),
        "naive": limit_entry(work["naive"], t_naive, peak),
    }
    print(
        f"kv_cache {t_fast:.1f} s, naive {t_naive:.1f} s: speed-up {speedup:.1f}x "
        f"over {len(ks)} K values, {args.n} trajectories; max |diff| of mean KL {diff:.1e} "
        f"({rel:.1e} of its largest value)"
    )
    print(
        f"arithmetic limit of the speed-up (FLOPs naive / fast): "
        f"{work['naive'] / work['kv_cache']:.1f}x; sgemm peak {peak:.1f} GFLOP/s"
    )
    for k, e in limits.items():
        print(
            f"{k:9s} {e['gflops']:6.1f} GFLOP/s = {e['fraction_of_peak']:.2f} of the peak "
            f"({e['gflop']:.1f} GFLOP)"
        )
    path = write_result(
        args.result,
        {
            "command": "python -m benchmarks.lot_truncation " + " ".join(argv or []),
            "sgemm_peak_gflops": peak,
            "limits": limits,
            "flop_ratio_naive_over_kv_cache": work["naive"] / work["kv_cache"],
            "max_rows": args.max_rows,
            "n_trajectories": args.n,
            "bases_from": bases_from,
            "n_tokens": 50,
            "ks": ks,
            "kv_cache_s": t_fast,
            "naive_s": t_naive,
            "speedup": speedup,
            "max_abs_diff_kl_mean": diff,
            "max_abs_diff_over_largest_kl": rel,
            "kl_mean": curves["kv_cache"].kl_mean.tolist(),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
