"""Forward time under ``continuous(...)`` on SmolLM2-135M, batch 8 x 64 tokens.

Two ratios, measured in one run with interleaved repetitions (median of each):

1. TransformerLens forward under ``continuous(model, durations)`` over the plain forward
   (target: at most 1.10);
2. the same continuous forward over the straightforward Hugging Face route (eager attention,
   float ``position_ids``, 4D additive mask of log durations; same weights and inputs).

For context it also prints plain TransformerLens over plain Hugging Face (eager): the part of
ratio 2 that is TransformerLens' own and not the continuous mechanism's.

Each repetition times the three variants back to back; the ratios reported are medians of
the per-repetition ratios (robust to the load drifting on a shared machine), next to the
ratios of the median times.

Each TransformerLens variant's speed is also given against the machine's limit
(``benchmarks/_limits.py``: the sgemm peak measured in the same run, and the FLOPs of a forward
with logits at every position).

Run: ``python -m benchmarks.continuous_forward [--repeats N] [--threads T]``; writes
``benchmarks/results/continuous_forward.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch

from benchmarks._limits import forward_flops, limit_entry, sgemm_peak
from benchmarks._results_io import write_result
from tl_continuous import Durations, continuous, load_model
from tl_continuous.continuous.reference_hf import hf_continuous_logits
from tl_continuous.models import load_hf_reference


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--pos", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv or [])
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    peak = sgemm_peak()

    model = load_model("smollm2-135m")
    hf = load_hf_reference("smollm2-135m")
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.cfg.d_vocab, (args.batch, args.pos), generator=gen)
    durations = Durations(0.3 + 1.7 * torch.rand(args.batch, args.pos, generator=gen))

    def plain() -> object:
        return model(tokens)

    def cont() -> object:
        with continuous(model, durations):
            return model(tokens)

    def hf_route() -> object:
        return hf_continuous_logits(hf, tokens, durations)

    def hf_plain() -> object:
        return hf(input_ids=tokens, use_cache=False).logits

    variants = {
        "tl_plain": plain,
        "tl_continuous": cont,
        "hf_plain": hf_plain,
        "hf_continuous": hf_route,
    }
    for fn in variants.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            times[name].append(_time(fn))
    median = {name: statistics.median(ts) for name, ts in times.items()}
    peak = max(peak, sgemm_peak())
    flops = forward_flops(model.cfg, args.batch, args.pos)
    limits = {
        name: limit_entry(flops, median[name], peak) for name in ("tl_plain", "tl_continuous")
    }

    def paired(num: str, den: str) -> float:
        return statistics.median(a / b for a, b in zip(times[num], times[den], strict=True))

    result = {
        "batch": args.batch,
        "pos": args.pos,
        "repeats": args.repeats,
        "command": "python -m benchmarks.continuous_forward " + " ".join(argv or []),
        "sgemm_peak_gflops": peak,
        "limits": limits,
        "seconds": times,
        "median_seconds": median,
        "ratio_continuous_over_plain": paired("tl_continuous", "tl_plain"),
        "ratio_continuous_over_hf_route": paired("tl_continuous", "hf_continuous"),
        "ratio_tl_plain_over_hf_plain": paired("tl_plain", "hf_plain"),
        "ratio_of_medians_continuous_over_plain": median["tl_continuous"] / median["tl_plain"],
        "ratio_of_medians_continuous_over_hf_route": (
            median["tl_continuous"] / median["hf_continuous"]
        ),
    }
    for name, value in median.items():
        print(f"{name:>14}: {value * 1000:8.1f} ms (median of {args.repeats})")
    print(
        f"continuous / plain    : {result['ratio_continuous_over_plain']:.3f} paired, "
        f"{result['ratio_of_medians_continuous_over_plain']:.3f} of medians (target <= 1.10)"
    )
    print(
        f"continuous / HF route : {result['ratio_continuous_over_hf_route']:.3f} paired, "
        f"{result['ratio_of_medians_continuous_over_hf_route']:.3f} of medians"
    )
    print(
        f"(TransformerLens itself: plain TL / plain HF = "
        f"{result['ratio_tl_plain_over_hf_plain']:.3f} paired)"
    )
    print(f"sgemm peak {peak:.1f} GFLOP/s ({args.threads} thread(s))")
    for name, e in limits.items():
        print(
            f"{name:>14}: {e['gflops']:6.1f} GFLOP/s = {e['fraction_of_peak']:.2f} of the peak "
            f"({e['gflop']:.1f} GFLOP per forward)"
        )
    write_result("continuous_forward", result)


if __name__ == "__main__":
    main(sys.argv[1:])
