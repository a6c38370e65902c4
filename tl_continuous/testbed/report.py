"""Run the testbed's continuity experiment and write its results, figures and headline numbers.

::

    python -m tl_continuous.testbed.report --out out/testbed

writes ``counting_testbed.json`` (:class:`CountingContinuityResult`), ``summary.json`` (the
numbers quoted in ``docs/counting_testbed.md``, with the checkpoint's training record) and
``counting_testbed.html`` (every figure, plotly inlined so it opens offline).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tl_continuous.testbed.experiment import DEFAULT_CS, CountingContinuityResult

__all__ = ["figures", "main", "write_report"]


def figures(result: CountingContinuityResult) -> list[Any]:
    """Every testbed figure for ``result``, in reading order."""
    from tl_continuous.views import testbed as views

    out = [views.expected_count_figure(result, v) for v in result.variants]
    out += [views.count_distribution_figure(result, n) for n in result.ns if n in (3, 4, 8)]
    out += [views.variants_figure(result), views.uneven_durations_figure(result)]
    return out


def write_report(result: CountingContinuityResult, out: str | Path) -> dict[str, Any]:
    """Write JSON results, summary and HTML figures into ``out``; return the summary."""
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
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    try:
        parts = [
            fig.to_html(full_html=False, include_plotlyjs=(i == 0))
            for i, fig in enumerate(figures(result))
        ]
    except ImportError:  # plotly is an optional extra
        return summary
    html = "<html><head><meta charset='utf-8'><title>Counting testbed</title></head><body>"
    (out / "counting_testbed.html").write_text(html + "\n".join(parts) + "</body></html>\n")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tl_continuous.testbed.report``."""
    parser = argparse.ArgumentParser(prog="python -m tl_continuous.testbed.report")
    parser.add_argument("--out", type=Path, default=Path("out/testbed"))
    parser.add_argument("--n-prompts", type=int, default=16)
    parser.add_argument("--uneven-trials", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
