"""``tl-continuous report testbed``: the counting testbed's continuity experiment.

It writes the results, figures and headline numbers::

    tl-continuous report testbed --out out/testbed

writes ``counting_testbed.json`` (:class:`CountingContinuityResult`), ``summary.json`` (the
numbers quoted in ``docs/counting_testbed.md``, with the checkpoint's training record) and
``counting_testbed.html`` (every figure, plotly inlined so it opens offline).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tl_continuous.testbed.experiment import CountingContinuityResult

__all__ = ["add_arguments", "figures", "run", "write_report"]


def figures(result: CountingContinuityResult) -> list[Any]:
    """Every testbed figure for ``result``, in reading order."""
    from tl_continuous.views import testbed as views

    out = [views.expected_count_figure(result, v) for v in result.variants]
    out += [views.count_distribution_figure(result, n) for n in result.ns if n in (3, 4, 8)]
    out += [views.variants_figure(result), views.uneven_durations_figure(result)]
    return out


def write_report(result: CountingContinuityResult, out: str | Path) -> dict[str, Any]:
    """Write JSON results, summary and HTML figures into ``out``; return the summary."""
    from tl_continuous._io import write_text
    from tl_continuous.testbed.model import training_record

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result.save(out / "counting_testbed.json")
    record = training_record()
    summary = result.summary() | {
        "checkpoint": {
            k: record[k]
            for k in ("held_out_accuracy", "train_seconds", "threads", "steps", "sha256")
        }
    }
    write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    try:
        parts = [
            fig.to_html(full_html=False, include_plotlyjs=(i == 0))
            for i, fig in enumerate(figures(result))
        ]
    except ImportError:  # plotly is an optional extra
        return summary
    html = "<html><head><meta charset='utf-8'><title>Counting testbed</title></head><body>"
    write_text(out / "counting_testbed.html", html + "\n".join(parts) + "</body></html>\n")
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The program's options (``--help`` lists them)."""
    parser.add_argument("--out", type=Path, default=Path("out/testbed"))
    parser.add_argument("--n-prompts", type=int, default=16)
    parser.add_argument("--uneven-trials", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Run the experiment on the shipped checkpoint, write the report, print the headline."""
    from tl_continuous.testbed.experiment import DEFAULT_CS, CountingContinuityResult

    result = CountingContinuityResult.from_model(
        cs=DEFAULT_CS,
        n_prompts=args.n_prompts,
        uneven_trials=args.uneven_trials,
        seed=args.seed,
        progress=not args.no_progress,
    )
    summary = write_report(result, args.out)
    for name, numbers in summary["variants"].items():
        print(
            f"{name:>15}: MAE {numbers['mae']:.3f}  monotone {numbers['monotone_share']:.3f}"
            f" (tol 0.05: {numbers['monotone_share_tol_0.05']:.3f})"
            f"  argmax = round(n·c) {numbers['argmax_agreement']:.3f}"
        )
    print(
        f"ignoring durations (always n): MAE {summary['ignoring_durations_mae']:.3f}; "
        f"uneven durations: MAE vs sum {summary['uneven_mae_vs_sum']:.3f}, "
        f"vs even of same sum {summary['uneven_mae_vs_even_same_sum']:.3f}"
    )
    print(f"wrote {args.out}")
    return 0
