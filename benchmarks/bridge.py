"""The TransformerBridge backend on SmolLM2-135M: forward, continuous, collection, KL fast path.

Measured in one run, interleaved repetitions, medians of per-repetition ratios:

1. plain forward (batch 8 x 64 tokens) of the bridge vs ``HookedTransformer`` vs bare
   Hugging Face (eager attention, the model the bridge wraps);
2. the bridge's forward under ``continuous(model, durations)`` over its plain forward
   (target: at most 1.10);
3. lean collection (``LinesOfThought.collect``: pilot-slicing hooks, the forward ended after
   the last hook read) over the bridge's plain forward with ``return_type=None`` (target: at
   most 1.05; a bridge runs the final norm and the unembedding even with
   ``return_type=None``, which collection skips);
4. the every-layer truncation KL on the bridge: the key/value-cache fast path over the naive
   recompute (target: at least 10x), on ``--kl-n`` pseudo-sentences of 50 tokens and the
   ``--kl-ks`` grid (default: the report's 16 values of K); the two curves' largest
   difference is reported too.

Speeds are also given against the machine's limit (``benchmarks/_limits.py``: the sgemm peak
measured in the same run; FLOPs of the work each variant does: a bridge computes the logits
of every position even with ``return_type=None``, collection stops before them, the KL paths
as in ``benchmarks.lot_truncation``).

Run: ``python -m benchmarks.bridge [--repeats N] [--threads T] [--kl-n N] [--kl-ks K ...]``
writes ``benchmarks/results/bridge.json``; ``--kl-only --kl-n 4 --kl-ks $(seq 2 2 576)
--result bridge_kl_spec_grid`` measures the fast path alone on the spec's 288-K grid.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks._limits import forward_flops, limit_entry, sgemm_peak
from benchmarks._results_io import write_result


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _interleaved(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, Any]:
    for fn in variants.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(_time(fn))
    return times


def _ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    return statistics.median(a / b for a, b in zip(times[num], times[den], strict=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--pos", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kl-n", type=int, default=8, help="pseudo-sentences for the KL part")
    parser.add_argument(
        "--kl-ks", type=int, nargs="+", default=None, help="default: the report's 16-K grid"
    )
    parser.add_argument("--kl-only", action="store_true", help="only the KL part")
    parser.add_argument("--result", default="bridge", help="writes results/RESULT.json")
    args = parser.parse_args(argv or [])
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)

    from tl_continuous.models import load_model
    from tl_continuous.reports.settings import DEFAULT_KS

    peak = sgemm_peak()
    bridge = load_model("smollm2-135m", backend="bridge")
    numbers: dict[str, Any] = {"command": "python -m benchmarks.bridge " + " ".join(argv or [])}
    if not args.kl_only:
        numbers |= _forward_ratios(bridge, args)
    numbers["kl_every_layer"] = _kl_fast_path(bridge, args, args.kl_ks or DEFAULT_KS)
    peak = max(peak, sgemm_peak())
    numbers["sgemm_peak_gflops"] = peak
    numbers["limits"] = _limits(bridge, args, numbers, peak)
    path = write_result(args.result, numbers)
    for name, value in numbers.get("ratios", {}).items():
        print(f"{name:32s} {value:.3f}")
    print(f"sgemm peak {peak:.1f} GFLOP/s ({args.threads} thread(s))")
    for name, e in numbers["limits"].items():
        print(f"{name:32s} {e['gflops']:6.1f} GFLOP/s = {e['fraction_of_peak']:.2f} of the peak")
    kl = numbers["kl_every_layer"]
    print(
        f"KL fast path speed-up {kl['speedup']:.1f}x ({kl['kv_cache_s']:.1f} s vs "
        f"{kl['naive_s']:.1f} s, {len(kl['ks'])} K values); curves agree to "
        f"{kl['max_abs_difference']:.2e}; wrote {path}"
    )


def _limits(
    bridge: Any, args: argparse.Namespace, numbers: dict[str, Any], peak: float
) -> dict[str, dict[str, float]]:
    from benchmarks.lot_truncation import kl_flops

    cfg, out = bridge.cfg, {}
    medians = numbers.get("median_seconds", {})
    full = forward_flops(cfg, args.batch, args.pos)
    work = {
        "bridge_plain": full,
        "hooked_plain": full,
        "bridge_continuous": full,
        "bridge_forward_no_unembed": full,  # the bridge unembeds even with return_type=None
        "bridge_collect": forward_flops(cfg, args.batch, args.pos, unembed_positions=0),
    }
    for name, flops in work.items():
        if name in medians:
            out[name] = limit_entry(flops, medians[name], peak)
    kl = numbers["kl_every_layer"]
    kl_work = kl_flops(bridge, kl["n"], kl["n"], 50, len(kl["ks"]), 256)
    out["kl_kv_cache"] = limit_entry(kl_work["kv_cache"], kl["kv_cache_s"], peak)
    out["kl_naive"] = limit_entry(kl_work["naive"], kl["naive_s"], peak)
    kl["flop_ratio_naive_over_kv_cache"] = kl_work["naive"] / kl_work["kv_cache"]
    return out


def _forward_ratios(bridge: Any, args: argparse.Namespace) -> dict[str, Any]:
    from tl_continuous import Durations, LinesOfThought, continuous
    from tl_continuous.models import load_hf_reference, load_model

    hooked = load_model("smollm2-135m", backend="hooked")
    hf = load_hf_reference("smollm2-135m")
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, bridge.cfg.d_vocab, (args.batch, args.pos), generator=gen)
    durations = Durations(0.3 + 1.7 * torch.rand(args.batch, args.pos, generator=gen))

    def collect() -> object:
        return LinesOfThought.collect(bridge, tokens, batch_size=args.batch, progress=False)

    def bridge_continuous() -> object:
        with continuous(bridge, durations):
            return bridge(tokens)

    variants = {
        "bridge_plain": lambda: bridge(tokens),
        "hooked_plain": lambda: hooked(tokens),
        "hf_plain": lambda: hf(input_ids=tokens, use_cache=False).logits,
        "bridge_continuous": bridge_continuous,
        "bridge_forward_no_unembed": lambda: bridge(tokens, return_type=None),
        "bridge_collect": collect,
    }
    times = _interleaved(variants, args.repeats)
    medians = {name: statistics.median(t) for name, t in times.items()}
    ratios = {
        "bridge_over_hooked_plain": _ratio(times, "bridge_plain", "hooked_plain"),
        "bridge_over_hf_plain": _ratio(times, "bridge_plain", "hf_plain"),
        "hooked_over_hf_plain": _ratio(times, "hooked_plain", "hf_plain"),
        "continuous_over_plain_bridge": _ratio(times, "bridge_continuous", "bridge_plain"),
        "collect_over_forward_bridge": _ratio(times, "bridge_collect", "bridge_forward_no_unembed"),
    }

    return {
        "shape": [args.batch, args.pos],
        "repeats": args.repeats,
        "median_seconds": medians,
        "ratios": ratios,
        "targets": {
            "continuous_over_plain_bridge": "<= 1.10",
            "collect_over_forward_bridge": "<= 1.05",
        },
    }


def _kl_fast_path(bridge: Any, args: argparse.Namespace, grid: list[int]) -> dict[str, Any]:
    from tl_continuous import LinesOfThought
    from tl_continuous.lines_of_thought.bases import TrajectoryBases
    from tl_continuous.lines_of_thought.corpus import pseudo_sentences
    from tl_continuous.lines_of_thought.truncation import truncation_kl_every_layer

    ps = pseudo_sentences(bridge, n_tokens=50, limit=600 + args.kl_n, seed=0)
    plain = LinesOfThought.collect(bridge, ps.tokens[:600], batch_size=32, progress=False)
    bases = TrajectoryBases.from_ensemble(plain)
    lot = LinesOfThought.collect(bridge, ps.tokens[600:], batch_size=args.kl_n, progress=False)
    ks = [k for k in grid if k <= bases.rank]
    curves, seconds = {}, {}
    for method in ("kv_cache", "naive"):
        start = time.perf_counter()
        curves[method] = truncation_kl_every_layer(
            bridge, lot, bases, ks, batch_size=args.kl_n, method=method, progress=False
        )
        seconds[method] = time.perf_counter() - start
    return {
        "n": args.kl_n,
        "ks": ks,
        "kv_cache_s": seconds["kv_cache"],
        "naive_s": seconds["naive"],
        "speedup": seconds["naive"] / seconds["kv_cache"],
        "max_abs_difference": float(
            (curves["kv_cache"].kl_mean - curves["naive"].kl_mean).abs().max()
        ),
        "target": ">= 10",
    }


if __name__ == "__main__":
    main(sys.argv[1:])
