"""Every-layer KL sweep: frozen key/value cache (prefix once) against naive full recompute.

    python -m benchmarks.lot_truncation [--n 8 --ks 1 2 4 ... 576]

SmolLM2, N_k = 50 default-corpus pseudo-sentences, the report's K grid by default. The bases
come from the report's 2000-trajectory shard folder when it exists (``--shards``), otherwise
from ``--bases-n`` (600) other pseudo-sentences; the point is speed and agreement, not the
curve. Both methods produce the full
curve; the maximum difference of the mean KL is printed with the speed-up (target >= 10x).
JSON goes to ``benchmarks/results/lot_truncation.json``.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks._lot_common import time_once, write_result


def main() -> None:
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
    args = p.parse_args()
    torch.set_num_threads(args.threads)

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
                model, lot, bases, ks, batch_size=args.batch_size, method=method, progress=False
            )

        return go

    t_fast = time_once(run("kv_cache"))
    t_naive = time_once(run("naive"))
    diff = float((curves["kv_cache"].kl_mean - curves["naive"].kl_mean).abs().max())
    speedup = t_naive / t_fast
    print(
        f"kv_cache {t_fast:.1f} s, naive {t_naive:.1f} s: speed-up {speedup:.1f}x "
        f"over {len(ks)} K values, {args.n} trajectories; max |diff| of mean KL {diff:.1e}"
    )
    path = write_result(
        "lot_truncation",
        {
            "n_trajectories": args.n,
            "bases_from": bases_from,
            "max_rows": 256,
            "n_tokens": 50,
            "ks": ks,
            "kv_cache_s": t_fast,
            "naive_s": t_naive,
            "speedup": speedup,
            "max_abs_diff_kl_mean": diff,
            "kl_mean": curves["kv_cache"].kl_mean.tolist(),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
