"""The TransformerBridge backend on SmolLM2-135M: forward, continuous, collection, KL fast path.

Measured in one run, interleaved repetitions, medians of per-repetition ratios:

1. plain forward (batch 8 x 64 tokens) of the bridge vs ``HookedTransformer`` vs bare
   Hugging Face (eager attention, the model the bridge wraps);
2. the bridge's forward under ``continuous(model, durations)`` over its plain forward
   (target: at most 1.10);
3. lean collection (``LinesOfThought.collect``: pilot-slicing hooks, ``return_type=None``) over
   the bridge's plain forward with ``return_type=None`` (target: at most 1.05);
4. the every-layer truncation KL on the bridge: the key/value-cache fast path over the naive
   recompute (target: at least 10x), on ``--kl-n`` pseudo-sentences of 50 tokens and the
   ``--kl-ks`` grid; the two curves' largest difference is reported too.

Run: ``python -m benchmarks.bridge [--repeats N] [--threads T] [--kl-n N] [--kl-ks K ...]``;
writes ``benchmarks/results/bridge.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.results_io import write_result


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
        "--kl-ks", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 96, 128, 192, 256]
    )
    args = parser.parse_args(argv or [])
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)

    from tl_continuous import Durations, LinesOfThought, continuous
    from tl_continuous.lines_of_thought.bases import TrajectoryBases
    from tl_continuous.lines_of_thought.corpus import pseudo_sentences
    from tl_continuous.lines_of_thought.truncation import truncation_kl_every_layer
    from tl_continuous.models import load_hf_reference, load_model

    bridge = load_model("smollm2-135m", backend="bridge")
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

    ps = pseudo_sentences(bridge, n_tokens=50, limit=600 + args.kl_n, seed=0)
    plain = LinesOfThought.collect(bridge, ps.tokens[:600], batch_size=32, progress=False)
    bases = TrajectoryBases.from_ensemble(plain)
    lot = LinesOfThought.collect(bridge, ps.tokens[600:], batch_size=args.kl_n, progress=False)
    ks = [k for k in args.kl_ks if k <= bases.rank]
    kl: dict[str, Any] = {}
    for method in ("kv_cache", "naive"):
        start = time.perf_counter()
        kl[method] = truncation_kl_every_layer(
            bridge, lot, bases, ks, batch_size=args.kl_n, method=method, progress=False
        )
        kl[f"{method}_s"] = time.perf_counter() - start
    speedup = kl["naive_s"] / kl["kv_cache_s"]
    agree = float((kl["kv_cache"].kl_mean - kl["naive"].kl_mean).abs().max())

    numbers = {
        "command": "python -m benchmarks.bridge",
        "shape": [args.batch, args.pos],
        "repeats": args.repeats,
        "median_seconds": medians,
        "ratios": ratios,
        "targets": {
            "continuous_over_plain_bridge": "<= 1.10",
            "collect_over_forward_bridge": "<= 1.05",
            "kl_fast_path_speedup": ">= 10",
        },
        "kl_every_layer": {
            "n": args.kl_n,
            "ks": ks,
            "kv_cache_s": kl["kv_cache_s"],
            "naive_s": kl["naive_s"],
            "speedup": speedup,
            "max_abs_difference": agree,
        },
    }
    path = write_result("bridge", numbers)
    for name, value in ratios.items():
        print(f"{name:32s} {value:.3f}")
    print(
        f"KL fast path speed-up {speedup:.1f}x ({kl['kv_cache_s']:.1f} s vs {kl['naive_s']:.1f} s)"
    )
    print(f"curves agree to {agree:.2e}; wrote {path}")


if __name__ == "__main__":
    main()
