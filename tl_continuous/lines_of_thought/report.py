"""Reproduce the lines-of-thought results table (spectra, KL knees, baseline) for a model.

Run from a checkout::

    python -m tl_continuous.lines_of_thought.report                 # SmolLM2, 2000 x 50 tokens
    python -m tl_continuous.lines_of_thought.report --worker 1 --n-workers 2   # split the work

Collection goes into a resumable shard folder (default under the cache directory, see
:func:`tl_continuous.models.cache_root`), so an interrupted run continues where it stopped and
several workers can share it; the analysis runs once every batch is there. The table is
written to ``docs/results_lines_of_thought.md`` and the numbers to a JSON file beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from tl_continuous.lines_of_thought.bases import TrajectoryBases
from tl_continuous.lines_of_thought.collect import IncompleteShardsError, collect_shards
from tl_continuous.lines_of_thought.corpus import pseudo_sentences
from tl_continuous.lines_of_thought.ensemble import LinesOfThought
from tl_continuous.lines_of_thought.truncation import (
    truncation_kl_every_layer,
    truncation_kl_last_layer,
)

__all__ = ["build_parser", "main", "render_markdown"]

DEFAULT_KS = [1, 2, 4, 8, 16, 32, 64, 96, 128, 192, 256, 320, 384, 448, 512, 576]


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (``--help`` lists them)."""
    p = argparse.ArgumentParser(prog="python -m tl_continuous.lines_of_thought.report")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--corpus", default=None, help="a text file (default: pydoc_data.topics)")
    p.add_argument("--n", type=int, default=2000, help="pseudo-sentences")
    p.add_argument("--n-tokens", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--every-layer-n", type=int, default=128, help="trajectories re-run per K")
    p.add_argument("--ks", type=int, nargs="*", default=None, help="K grid (default: coarse)")
    p.add_argument("--shard-dir", default=None)
    p.add_argument("--worker", type=int, default=0)
    p.add_argument("--n-workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--out", default="docs/results_lines_of_thought.md")
    p.add_argument("--no-progress", action="store_true")
    return p


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def render_markdown(results: dict[str, Any], command: str) -> str:
    """The results table as markdown."""
    r = results
    lines = [
        "# Lines of thought: results",
        "",
        f"Model `{r['model']}` (L = {r['n_layers']} blocks, D = {r['d_model']}); corpus "
        f"`{r['corpus']['source']}` (sha256 `{r['corpus']['text_sha256'][:16]}...`, "
        f"{r['corpus']['n_chunks_total']} chunks of N_k = {r['n_tokens']} tokens, "
        f"{r['n_trajectories']} sampled with seed {r['seed']}, no BOS). Trajectories: "
        "`blocks.{i}.hook_resid_post` of the last token, t = 1..L (embedding and the "
        "post-final-norm residual excluded). SVDs uncentred, float64; KL in nats, float64.",
        "",
        "Reproduce:",
        "",
        "```",
        command,
        "```",
        "",
        "## Headline",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| trajectories (bases, last-layer KL) | {r['n_trajectories']} |",
        f"| trajectories (every-layer KL; a seeded random subset) | "
        f"{r['every_layer']['n_trajectories']} |",
        f"| knee K, last layer only (90% of the KL drop) | {r['last_layer']['knee_k']} "
        f"({100 * r['last_layer']['knee_k'] / r['d_model']:.0f}% of D) |",
        f"| knee K, every layer (90% of the KL drop) | {r['every_layer']['knee_k']} "
        f"({100 * r['every_layer']['knee_k'] / r['d_model']:.0f}% of D) |",
        f"| baseline: median KL(p_i ‖ p_i+1), consecutive pseudo-sentences | "
        f"{_fmt(r['last_layer']['baseline'])} |",
        f"| collection time | {r['timing']['collect_s']:.0f} s (resumed runs count only "
        "their own part) |",
        "",
        "The knee is the smallest K of the grid where the mean KL has fallen by 90% of its "
        "drop from the first K of the grid (K = 1) to the last (K = D, KL = 0).",
        "",
        "## KL(p_K ‖ p) against K",
        "",
        "| K | last layer: mean | last layer: median | every layer: mean | every layer: median |",
        "|---|---|---|---|---|",
    ]
    a, b = r["last_layer"], r["every_layer"]
    for i, k in enumerate(a["ks"]):
        lines.append(
            f"| {k} | {_fmt(a['kl_mean'][i])} | {_fmt(a['kl_median'][i])} | "
            f"{_fmt(b['kl_mean'][i])} | {_fmt(b['kl_median'][i])} |"
        )
    lines += [
        "",
        "## Singular spectra (uncentred) per layer",
        "",
        "σ_i / σ_1 for a few i; K90 = directions holding 90% of the squared norm; "
        "angle = mean angle (degrees) between realigned u_1..u_3 at t-1 and t.",
        "",
        "| t | σ_1 | σ_2/σ_1 | σ_10/σ_1 | σ_100/σ_1 | K90 | angle u1..u3 vs t-1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["spectra"]:
        lines.append(
            f"| {row['t']} | {_fmt(row['s1'])} | {_fmt(row['s2'])} | {_fmt(row['s10'])} | "
            f"{_fmt(row['s100'])} | {row['k90']} | "
            + ("" if row["angle"] is None else f"{row['angle']:.1f}")
            + " |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Collect (resumably), analyse, write the table; returns a process exit code."""
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from tl_continuous.models import cache_root, load_model

    progress = not args.no_progress
    model = load_model(args.model)
    corpus = pseudo_sentences(
        model,
        path=args.corpus,
        n_tokens=args.n_tokens,
        limit=args.n,
        seed=args.seed,
    )
    tag = "pydoc" if args.corpus is None else Path(args.corpus).stem
    shard_dir = Path(
        args.shard_dir
        or cache_root()
        / "lot-shards"
        / f"{args.model}-{tag}-n{args.n_tokens}-{args.n}-s{args.seed}"
    )
    t0 = time.perf_counter()
    collect_shards(
        model,
        corpus,
        shard_dir,
        worker=args.worker,
        n_workers=args.n_workers,
        batch_size=args.batch_size,
        progress=progress,
    )
    collect_s = time.perf_counter() - t0
    try:
        lot = LinesOfThought.from_shards(shard_dir)
    except IncompleteShardsError as err:
        print(f"worker {args.worker} done; waiting for the others: {err}")
        return 0

    bases = TrajectoryBases.from_ensemble(lot, realign=True)
    d = lot.d_model
    ks = args.ks or [k for k in DEFAULT_KS if k < d] + [d]
    t1 = time.perf_counter()
    last = truncation_kl_last_layer(model, lot, bases, ks, progress=progress)
    t2 = time.perf_counter()
    gen = torch.Generator().manual_seed(args.seed)
    picked = torch.randperm(lot.n_trajectories, generator=gen)[: args.every_layer_n].sort().values
    sub = lot.subset(picked)
    every = truncation_kl_every_layer(
        model, sub, bases, ks, batch_size=args.batch_size, progress=progress
    )
    t3 = time.perf_counter()

    spectra = bases.spectra()
    angles = torch.rad2deg(bases.rotation_angles(3)).mean(dim=1)
    k90 = [int((torch.cumsum(s**2, 0) / (s**2).sum() < 0.9).sum()) + 1 for s in spectra]
    rows = []
    for t in range(lot.n_layers):
        s = spectra[t]
        rows.append(
            {
                "t": t + 1,
                "s1": float(s[0]),
                "s2": float(s[1] / s[0]),
                "s10": float(s[9] / s[0]) if s.numel() > 9 else float("nan"),
                "s100": float(s[99] / s[0]) if s.numel() > 99 else float("nan"),
                "k90": k90[t],
                "angle": None if t == 0 else float(angles[t - 1]),
            }
        )
    results: dict[str, Any] = {
        "model": args.model,
        "n_layers": int(model.cfg.n_layers),
        "d_model": d,
        "n_tokens": args.n_tokens,
        "seed": args.seed,
        "n_trajectories": lot.n_trajectories,
        "corpus": corpus.metadata(),
        "last_layer": last.to_dict(),
        "every_layer": every.to_dict(),
        "spectra": rows,
        "singular_values": spectra.tolist(),
        "timing": {
            "collect_s": collect_s,
            "kl_last_layer_s": t2 - t1,
            "kl_every_layer_s": t3 - t2,
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    given = sys.argv[1:] if argv is None else argv
    command = "python -m tl_continuous.lines_of_thought.report " + " ".join(given)
    out.write_text(render_markdown(results, command.strip()))
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    print(
        f"knee K: last layer {last.knee_k}, every layer {every.knee_k}; "
        f"baseline {last.baseline:.3g}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
