"""``tl-continuous report lines-of-thought``: the lines-of-thought results table.

Spectra, KL knees and the baseline for a model::

    tl-continuous report lines-of-thought                        # SmolLM2, 2000 x 50 tokens
    tl-continuous report lines-of-thought --worker 1 --n-workers 2   # split the work
    tl-continuous report lines-of-thought --render-only          # markdown from the JSON

Collection goes into a resumable shard folder (:func:`~tl_continuous.reports.settings.
shard_folder`, under the cache directory by default), so an interrupted run continues where it
stopped and several workers can share it; the analysis runs once every batch is there. The
table is written to ``docs/results_lines_of_thought.md`` and the numbers to a JSON file beside
it. The markdown is generated whole; analysis written by hand lives in
``docs/analysis_lines_of_thought.md``, which it links.

Importing this module is cheap (``tl-continuous --help`` builds its options); the computation
imports torch when it runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from tl_continuous.reports.settings import (
    add_output_arguments,
    add_report_arguments,
    collect_worker_shards,
    ks_for,
    shard_folder,
    shard_root,
    shard_stem,
    start_report,
    write_report,
)

__all__ = ["ANALYSIS", "add_arguments", "build_results", "render_markdown", "run"]

ANALYSIS = "analysis_lines_of_thought.md"
"""The hand-written companion of the generated file, in the same folder."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The program's options (``--help`` lists them)."""
    add_report_arguments(p, n_help="pseudo-sentences")
    p.add_argument("--every-layer-n", type=int, default=128, help="trajectories re-run per K")
    p.add_argument("--ks", type=int, nargs="*", default=None, help="K grid (default: coarse)")
    p.add_argument("--shard-dir", default=None, help="the shard folder (default: in the cache)")
    p.add_argument("--worker", type=int, default=0)
    p.add_argument("--n-workers", type=int, default=1)
    add_output_arguments(p, "docs/results_lines_of_thought.md")


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
    lines += [
        "",
        "## Analysis",
        "",
        f"Notes on this run and further results, written by hand: [{ANALYSIS}]({ANALYSIS}).",
        "",
    ]
    return "\n".join(lines)


def build_results(model: Any, args: argparse.Namespace) -> dict[str, Any] | None:
    """Collect (resumably) and analyse; ``None`` while other workers' batches are missing."""
    import torch

    from tl_continuous.lines_of_thought.bases import TrajectoryBases
    from tl_continuous.lines_of_thought.collect import IncompleteShardsError
    from tl_continuous.lines_of_thought.corpus import pseudo_sentences
    from tl_continuous.lines_of_thought.ensemble import LinesOfThought
    from tl_continuous.lines_of_thought.truncation import (
        truncation_kl_every_layer,
        truncation_kl_last_layer,
    )

    progress = not args.no_progress
    corpus = pseudo_sentences(
        model, path=args.corpus, n_tokens=args.n_tokens, limit=args.n, seed=args.seed
    )
    folder = (
        Path(args.shard_dir)
        if args.shard_dir
        else shard_folder(
            shard_root(), shard_stem(args.model, args.corpus, args.n_tokens), args.n, args.seed
        )
    )
    t0 = time.perf_counter()
    collect_worker_shards(model, corpus, folder, args)
    collect_s = time.perf_counter() - t0
    try:
        lot = LinesOfThought.from_shards(folder)
    except IncompleteShardsError as err:
        print(f"worker {args.worker} done; waiting for the others: {err}")
        return None

    bases = TrajectoryBases.from_ensemble(lot, realign=True)
    d = lot.d_model
    ks = ks_for(d, args.ks)
    t1 = time.perf_counter()
    last = truncation_kl_last_layer(model, lot, bases, ks, progress=progress)
    t2 = time.perf_counter()
    gen = torch.Generator().manual_seed(args.seed)
    picked = torch.randperm(lot.n_trajectories, generator=gen)[: args.every_layer_n].sort().values
    every = truncation_kl_every_layer(
        model, lot.subset(picked), bases, ks, batch_size=args.batch_size, progress=progress
    )
    t3 = time.perf_counter()
    return {
        "model": args.model,
        "n_layers": int(model.cfg.n_layers),
        "d_model": d,
        "n_tokens": args.n_tokens,
        "seed": args.seed,
        "n_trajectories": lot.n_trajectories,
        "corpus": corpus.metadata(),
        "last_layer": last.to_dict(),
        "every_layer": every.to_dict(),
        "spectra": _spectra_rows(bases, lot.n_layers),
        "singular_values": bases.spectra().tolist(),
        "timing": {
            "collect_s": collect_s,
            "kl_last_layer_s": t2 - t1,
            "kl_every_layer_s": t3 - t2,
        },
    }


def _spectra_rows(bases: Any, n_layers: int) -> list[dict[str, Any]]:
    """Per layer: σ_1, a few ratios σ_i/σ_1, K90 and the turn of u_1..u_3 from t - 1."""
    import torch

    spectra = bases.spectra()
    angles = torch.rad2deg(bases.rotation_angles(3)).mean(dim=1)
    k90 = [int((torch.cumsum(s**2, 0) / (s**2).sum() < 0.9).sum()) + 1 for s in spectra]
    rows = []
    for t in range(n_layers):
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
    return rows


def run(args: argparse.Namespace, command: str) -> int:
    """Collect, analyse and write the table (``command``: the line that reproduces it)."""
    out = start_report(args, command, render_markdown)
    if out is None:
        return 0
    from tl_continuous.models import load_model

    results = build_results(load_model(args.model, backend=args.backend), args)
    if results is None:
        return 0
    write_report(out, results, render_markdown(results, command))
    last, every = results["last_layer"], results["every_layer"]
    print(
        f"knee K: last layer {last['knee_k']}, every layer {every['knee_k']}; "
        f"baseline {last['baseline']:.3g}"
    )
    return 0
