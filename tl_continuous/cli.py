"""The ``tl-continuous`` console script: the one way in to every program of the package.

::

    tl-continuous demo | count | experiment NAME
    tl-continuous report {lines-of-thought,dynamics,testbed,features}
    tl-continuous collect | train-testbed | train-sae

The programs behind ``report``, ``collect``, ``train-testbed`` and ``train-sae`` live in
:mod:`tl_continuous.reports`; their options come from the modules' ``add_arguments``, which
import nothing heavy. Subcommands import what they need when they run, so
``tl-continuous --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tl_continuous.reports.settings import add_backend_argument

__all__ = ["build_parser", "command_line", "main"]


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="smollm2-135m",
        help="bundled model name or a local Hugging Face folder (default: %(default)s)",
    )
    add_backend_argument(parser)
    parser.add_argument("--cache-dir", default=None, help="where converted models are kept")
    parser.add_argument("--device", default=None, help="torch device (default: TransformerLens')")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the console script."""
    parser = argparse.ArgumentParser(
        prog="tl-continuous",
        description="Continuous tokens and lines of thought on TransformerLens models.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the main job on the bundled model")
    _add_model_args(demo)
    demo.add_argument("--out", type=Path, default=Path("out"), help="output folder")
    demo.add_argument("--prompt", default="The capital of France is", help="prompt to run")
    demo.add_argument(
        "--quick",
        action="store_true",
        help="small grids (10 durations, 11 blend weights, 192 pseudo-sentences)",
    )
    demo.add_argument(
        "--no-report", action="store_true", help="skip out/report.html (JSON and figures only)"
    )
    _add_png_arg(demo)

    count = sub.add_parser("count", help="counting curve: a word repeated n times, shrunk to c")
    _add_model_args(count)
    count.add_argument("--word", default="apple", help="the repeated word (default: %(default)s)")
    count.add_argument("--n", type=int, default=4, help="repetitions (default: %(default)s)")
    _add_sweep_args(count, steps=100)
    count.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")

    exp = sub.add_parser("experiment", help="run one of the paper's experiments")
    _add_model_args(exp)
    exp.add_argument("name", choices=_EXPERIMENTS, help="which experiment")
    _add_sweep_args(exp, steps=None)
    exp.add_argument("--limit", type=int, default=None, help="first LIMIT dataset items only")

    report = sub.add_parser("report", help="reproduce a results file (docs/results_*.md)")
    which = report.add_subparsers(dest="report", required=True, metavar="REPORT")
    for name, (module, help_text) in _REPORTS.items():
        _program(which, name, module, help_text)
    _program(sub, "collect", "collect", "lines of thought of a corpus into a shard folder")
    _program(sub, "train-testbed", "train_testbed", "train the counting testbed's checkpoint")
    _program(sub, "train-sae", "train_sae", "train the bundled SAE (SAELens) and measure it")
    return parser


# report name -> (module under tl_continuous.reports, help)
_REPORTS = {
    "lines-of-thought": ("lines_of_thought", "spectra, KL knees, baseline"),
    "dynamics": ("dynamics", "variance law, noise statistics, comparisons, controls"),
    "testbed": ("testbed", "the counting testbed's continuity experiment"),
    "features": ("features", "both papers in SAE features, trained SAE against random"),
}


def _program(sub: Any, name: str, module: str, help_text: str) -> None:
    """A subcommand whose options and body are ``tl_continuous.reports.<module>``'s."""
    program = importlib.import_module(f"tl_continuous.reports.{module}")
    first_line = (program.__doc__ or help_text).split("\n")[0]
    parser = sub.add_parser(name, help=help_text, description=first_line.split(": ", 1)[-1])
    program.add_arguments(parser)
    parser.set_defaults(program=module)


_EXPERIMENTS = (
    "counting",
    "events",
    "sums",
    "interpolation",
    "boolean",
    "translation",
    "scaling",
)


def _add_sweep_args(parser: argparse.ArgumentParser, steps: int | None) -> None:
    parser.add_argument(
        "--steps",
        type=int,
        default=steps,
        help="grid points (default: %(default)s; experiment defaults: 100 for c and λ, "
        "11 shifts, 50 scales)",
    )
    parser.add_argument("--batch-size", type=int, default=25, help="rows per forward pass")
    parser.add_argument("--out", type=Path, default=Path("out"), help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_png_arg(parser)


def _add_png_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--png",
        action="store_true",
        help="also write each figure as a PNG (needs kaleido and Chrome/Chromium)",
    )


def _write(result: Any, fig: Any, out: Path, stem: str, png: bool = False) -> None:
    from tl_continuous.views.experiments import save_figure
    from tl_continuous.views.export import save_png

    out.mkdir(parents=True, exist_ok=True)
    result.save(out / f"{stem}.json")
    save_figure(fig, out / f"{stem}.html")
    if png:
        save_png(fig, out / f"{stem}.png")
    print(f"  wrote {out / stem}.json, .html" + (" and .png" if png else ""))


def _print_summary(summary: dict[str, Any]) -> None:
    print(json.dumps(summary, indent=1))


def _cmd_count(args: argparse.Namespace) -> int:
    from tl_continuous.experiments import count_curve
    from tl_continuous.experiments.span_sweep import default_grid
    from tl_continuous.models import load_model
    from tl_continuous.views.experiments import sweep_figure

    model = load_model(
        args.model, backend=args.backend, cache_dir=args.cache_dir, device=args.device
    )
    sweep = count_curve(
        model,
        args.word,
        args.n,
        default_grid(args.steps),
        chat=args.chat,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    print(f"{args.steps}-point counting sweep: {sweep.meta['seconds']:.1f} s")
    for rule in sweep.rules:
        _print_summary(sweep.summary(rule))
    _write(sweep, sweep_figure(sweep), args.out, f"count_{args.word}_{args.n}", args.png)
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    import torch

    from tl_continuous import experiments as ex
    from tl_continuous.experiments.span_sweep import default_grid
    from tl_continuous.models import load_model
    from tl_continuous.views import experiments as views

    model = load_model(
        args.model, backend=args.backend, cache_dir=args.cache_dir, device=args.device
    )
    progress = not args.no_progress
    steps = args.steps
    cs = default_grid(steps or 100)
    lambdas = torch.linspace(0.0, 1.0, steps or 100)
    name = args.name
    result: Any
    if name in ("counting", "events", "sums"):
        run = {"counting": ex.count_dataset, "events": ex.event_dataset, "sums": ex.sum_dataset}
        result = run[name](
            model, cs=cs, limit=args.limit, batch_size=args.batch_size, progress=progress
        )
        fig = (
            views.peak_figure(result)
            if name == "counting"
            else views.sweep_figure(result.sweeps[0])
        )
        for rule in result.sweeps[0].rules:
            _print_summary({"rule": rule, **_digit_summary(result, rule)})
    elif name == "interpolation":
        result = ex.interpolation_dataset(
            model, lambdas=lambdas, limit=args.limit, batch_size=args.batch_size, progress=progress
        )
        fig = views.sweep_figure(result.sweeps[0])
        _print_summary(result.interpolation_summary())
    elif name == "boolean":
        result = ex.boolean_all_pairs(model, lambdas, batch_size=args.batch_size, progress=progress)
        fig = views.boolean_figure(result)
        _print_summary(result.interpolation_summary())
        for skipped in result.meta.get("skipped", []):
            print(f"  not blended: {skipped['reason']}")
    else:
        if name == "translation":
            shifts = torch.arange(0.0, float(steps or 11))
            result = ex.translation_sweep(
                model, shifts=shifts, batch_size=args.batch_size, progress=progress
            )
        else:
            scales = torch.linspace(0.01, 1.5, steps or 50)
            result = ex.scaling_sweep(
                model, scales=scales, batch_size=args.batch_size, progress=progress
            )
        fig = views.sweep_figure(result)
        _print_summary(result.summary())
    _write(result, fig, args.out, name, args.png)
    return 0


def _digit_summary(result: Any, rule: str) -> dict[str, Any]:
    """Aggregates of a digit-readout dataset (counting, events, sums)."""
    if result.experiment == "counting":
        return dict(result.peak_summary(rule))
    right_at_1 = [s.argmax(rule)[-1] == s.expected for s in result.sweeps]
    changed = [bool(s.transitions(rule)) for s in result.sweeps]
    lower_at_small_c = [
        s.expected is not None and s.argmax(rule)[0] < s.argmax(rule)[-1] for s in result.sweeps
    ]
    return {
        "items": len(result.sweeps),
        "correct_at_c1": sum(right_at_1) / len(result.sweeps),
        "argmax_changes_along_c": sum(changed) / len(result.sweeps),
        "answer_smaller_at_smallest_c": sum(lower_at_small_c) / len(result.sweeps),
    }


def _cmd_demo(args: argparse.Namespace) -> int:
    import time

    import torch

    from tl_continuous.experiments import boolean_interpolation, count_curve
    from tl_continuous.experiments.span_sweep import default_grid
    from tl_continuous.models import MODELS, converted_folder, is_converted, load_model
    from tl_continuous.views.experiments import boolean_figure, sweep_figure

    start = time.perf_counter()
    conversion = None
    if args.model in MODELS and not is_converted(args.model, args.cache_dir):
        print(f"First run: converting {args.model} into the cache (once; later runs skip this)")
        converted_folder(args.model, args.cache_dir)
        conversion = time.perf_counter() - start
        print(f"  converted in {conversion:.1f} s")
    loading = time.perf_counter()
    model = load_model(
        args.model, backend=args.backend, cache_dir=args.cache_dir, device=args.device
    )
    loaded = time.perf_counter() - loading
    tokens = model.to_tokens(args.prompt)
    probs = model(tokens)[0, -1].float().softmax(-1)
    top = probs.topk(5)
    print(
        f"Loaded {model.cfg.model_name} ({model.cfg.n_layers} layers, d_model "
        f"{model.cfg.d_model}) in {loaded:.1f} s; one forward pass on "
        f"{tokens.shape[1]} tokens of {args.prompt!r}."
    )
    print("Top next tokens:")
    for p, idx in zip(top.values.tolist(), top.indices.tolist(), strict=True):
        print(f"  {model.to_string(idx)!r:>16}  p = {p:.4f}")

    steps = 10 if args.quick else 100
    print(f"\nCounting: four apples, the repetitions at duration c ({steps} values of c)")
    sweep = count_curve(model, "apple", 4, default_grid(steps), progress=not args.quick)
    print(f"  {sweep.meta['seconds']:.1f} s; readout: tokens whose text is the digit")
    _print_summary(sweep.summary("exact"))
    _write(sweep, sweep_figure(sweep), args.out, "count_apple_4", args.png)

    print(f"\nBoolean interpolation AND -> OR ({11 if args.quick else 100} values of λ)")
    lambdas = torch.linspace(0.0, 1.0, 11 if args.quick else 100)
    boolean_start = time.perf_counter()
    booleans = boolean_interpolation(model, "AND", "OR", lambdas, progress=not args.quick)
    boolean_seconds = time.perf_counter() - boolean_start
    _print_summary(booleans.interpolation_summary())
    _write(booleans, boolean_figure(booleans), args.out, "boolean_AND_OR", args.png)

    if args.no_report:
        return 0
    from tl_continuous.reports.demo import build_report, timing_table

    print("\nReport: attention under durations, counting testbed, lines of thought")
    report_start = time.perf_counter()
    path = build_report(
        model,
        args.out,
        quick=args.quick,
        counting_sweep=sweep,
        boolean_sweeps=booleans,
        progress=True,
    )
    print(f"  wrote {path} and report.json in {time.perf_counter() - report_start:.0f} s")
    report_seconds = json.loads((Path(args.out) / "report.json").read_text())["seconds"]
    seconds = {
        **({} if conversion is None else {"one-time conversion (first run only)": conversion}),
        "load model": loaded,
        "counting": float(sweep.meta["seconds"]),
        "boolean": boolean_seconds,
        # the report reuses the two sweeps above: only drawing them is timed there
        **{f"report: {k}": float(v) for k, v in report_seconds.items()},
    }
    print("\n" + timing_table(seconds))
    print(f"Total {time.perf_counter() - start:.0f} s (wall, with figure writing and imports)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tl-continuous`` and ``python -m tl_continuous``."""
    parser = build_parser()
    given = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(given)
    if getattr(args, "png", False):  # fail before the computation, not after it
        from tl_continuous.views.export import PngExportUnavailable, check_png_export

        try:
            check_png_export()
        except PngExportUnavailable as err:
            parser.error(f"--png: {err}")
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    if hasattr(args, "program"):
        program = importlib.import_module(f"tl_continuous.reports.{args.program}")
        if args.command == "report" and args.report != "testbed":
            return int(program.run(args, command_line(given)))
        return int(program.run(args))
    commands = {"demo": _cmd_demo, "count": _cmd_count, "experiment": _cmd_experiment}
    return commands[args.command](args)


def command_line(argv: Sequence[str]) -> str:
    """The shell command that reproduces a results file (``--render-only`` left out).

    >>> command_line(["report", "dynamics", "--threads", "1", "--render-only"])
    'tl-continuous report dynamics --threads 1'
    """
    return shlex.join(["tl-continuous", *(a for a in argv if a != "--render-only")])


if __name__ == "__main__":
    sys.exit(main())
