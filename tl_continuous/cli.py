"""The ``tl-continuous`` console script.

Subcommands import what they need when they run, so ``tl-continuous --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "main"]


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="smollm2-135m",
        help="bundled model name or a local Hugging Face folder (default: %(default)s)",
    )
    parser.add_argument("--cache-dir", default=None, help="where converted models are kept")
    parser.add_argument("--device", default=None, help="torch device (default: TransformerLens')")


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
    return parser


def _cmd_demo(args: argparse.Namespace) -> int:
    import time

    from tl_continuous.models import load_model

    start = time.perf_counter()
    model = load_model(args.model, cache_dir=args.cache_dir, device=args.device)
    loaded = time.perf_counter() - start
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
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tl-continuous`` and ``python -m tl_continuous``."""
    args = build_parser().parse_args(argv)
    commands = {"demo": _cmd_demo}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
