"""Long prompts on every attention route: SmolLM2-135M as a ``TransformerBridge``, batch 1.

For each route (``eager``: TransformerLens forms the ``[head, query, key]`` score matrix;
``sdpa`` and ``flex_attention``: fused kernels, the log-duration term as a per-key bias), each
sequence length and each thread count, the plain forward and the forward under
``continuous(model, durations)`` are timed, interleaved, and so is the memory each one adds
while it runs (its peak over what the process held before it). Reported:

* fused continuous / fused plain, in time and in extra memory (target: at most 1.10 at 4096
  and 8192 tokens): what the duration term costs on a fused route;
* fused continuous / eager continuous, in time and in extra memory (target: 3x faster or 4x
  less extra memory at 8192): what the fused route saves;
* each forward's speed as a fraction of the machine's matmul limit (``_limits.py``; FLOPs of
  every query-key pair for eager, which computes them all, of the causal half for the fused
  kernels, which skip masked blocks).

Memory on the CPU: the process's peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs`` before each forward, freed heap returned with ``malloc_trim``)
minus the resident set before the forward. On CUDA: ``torch.cuda.max_memory_allocated``
after ``reset_peak_memory_stats``. Both include the forward's logits (``n x 49152`` floats),
the same for every route.

Run: ``python -m benchmarks.long_context [--n 512 1024 ...] [--threads 1 2] [--routes ...]
[--repeats R] [--warmup flex] [--device cuda --dtype bfloat16]``; writes
``benchmarks/results/long_context.json`` (or ``--result NAME``) after every row, with
``"complete": false`` until the grid is done, so a run stopped early keeps what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks._limits import block_matmul_params, limit_entry, sgemm_peak
from benchmarks._results_io import write_result
from tl_continuous import Durations, continuous, load_model
from tl_continuous.backends import set_attention_route

ROUTES = ("eager", "sdpa", "flex_attention")
#: SmolLM2-135M's shape, for ``--model random-smollm2-135m`` (random weights: where the bundled
#: weights are not installed, e.g. on a GPU machine that gets only the working tree; speed and
#: memory do not depend on the weights)
SMOLLM2_SHAPE = {
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "max_position_embeddings": 32768,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _trim() -> None:
    with contextlib.suppress(OSError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def measure(fn: Callable[[], Any], device: torch.device) -> tuple[float, int]:
    """Seconds and extra bytes (peak during ``fn`` over what was held before) of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        out = fn()
        torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        extra = torch.cuda.max_memory_allocated(device) - before
    else:
        _trim()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS
        before = _status_kib("VmRSS")
        start = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - start
        extra = (_status_kib("VmHWM") - before) * 1024
    del out
    return seconds, extra


def build_model(name: str, device: torch.device, dtype: torch.dtype) -> Any:
    """The bundled SmolLM2-135M bridge, or (``"random-smollm2-135m"``) a random Llama of its
    shape, on the eager route."""
    if name == "random-smollm2-135m":
        from tl_continuous.tiny import tiny_bridge

        overrides = {k: v for k, v in SMOLLM2_SHAPE.items() if k != "num_hidden_layers"}
        layers = int(SMOLLM2_SHAPE["num_hidden_layers"])
        return tiny_bridge("rotary", n_layers=layers, dtype=dtype, **overrides).to(device)
    return load_model(name, backend="bridge", device=device, dtype=dtype)


def _variants(model: Any, tokens: torch.Tensor, durations: Durations) -> dict[str, Any]:
    def plain() -> Any:
        return model(tokens)

    def cont() -> Any:
        with continuous(model, durations):
            return model(tokens)

    return {"plain": plain, "continuous": cont}


def forward_flops(cfg: Any, n: int, *, causal_half: bool) -> float:
    """FLOPs of one forward of ``n`` tokens with logits everywhere; attention pairs: all
    ``n^2`` (eager forms them all) or the causal ``n (n + 1) / 2`` (fused kernels)."""
    c = cfg.to_dict()
    pairs = n * (n + 1) / 2 if causal_half else n * n
    attention = 4 * int(c["n_heads"]) * int(c["d_head"]) * pairs
    blocks = int(c["n_layers"]) * (2 * block_matmul_params(c) * n + attention)
    return blocks + 2 * int(c["d_model"]) * int(c["d_vocab"]) * n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--routes", nargs="+", default=list(ROUTES), choices=ROUTES)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--result", default="long_context")
    parser.add_argument(
        "--warmup",
        default="all",
        choices=["all", "flex"],
        help="untimed first call of each variant on every route (all), or only on "
        "flex_attention, which compiles then (flex: saves eager forwards of minutes at 8192)",
    )
    parser.add_argument(
        "--model", default="smollm2-135m", choices=["smollm2-135m", "random-smollm2-135m"]
    )
    args = parser.parse_args(argv or [])
    torch.set_grad_enabled(False)
    # FlexAttention compiles once per length and per plain / continuous call (static shapes on
    # the CPU); a grid has more of those than torch's default limit of 8, past which it runs
    # uncompiled (materialising the scores) and that row would measure the wrong kernel.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    device = torch.device(args.device)
    model = build_model(args.model, device, DTYPES[args.dtype])
    rows: list[dict[str, Any]] = []
    peaks: dict[int, float] = {}
    threads_grid = args.threads if device.type == "cpu" else [torch.get_num_threads()]
    for threads in threads_grid:
        torch.set_num_threads(threads)
        peaks[threads] = sgemm_peak() if device.type == "cpu" else float("nan")
        for n in args.n:
            gen = torch.Generator().manual_seed(n)
            tokens = torch.randint(0, model.cfg.d_vocab, (1, n), generator=gen).to(device)
            durations = Durations(0.3 + 1.7 * torch.rand(1, n, generator=gen, dtype=torch.float64))
            for route in args.routes:
                set_attention_route(model, route)

                variants = _variants(model, tokens, durations)
                if args.warmup == "all" or route == "flex_attention":
                    for fn in variants.values():  # warm-up (FlexAttention compiles here)
                        measure(fn, device)
                seconds: dict[str, list[float]] = {k: [] for k in variants}
                extra: dict[str, list[int]] = {k: [] for k in variants}
                for _ in range(args.repeats):
                    for name, fn in variants.items():
                        s, e = measure(fn, device)
                        seconds[name].append(s)
                        extra[name].append(e)
                flops = forward_flops(model.cfg, n, causal_half=route != "eager")
                row: dict[str, Any] = {"threads": threads, "n": n, "route": route}
                for name in variants:
                    med = statistics.median(seconds[name])
                    row[name] = {
                        "seconds": seconds[name],
                        "median_seconds": med,
                        "extra_bytes": extra[name],
                        "median_extra_mib": statistics.median(extra[name]) / 2**20,
                        "limit": limit_entry(flops, med, peaks[threads]),
                    }
                row["time_continuous_over_plain"] = statistics.median(
                    c / p for c, p in zip(seconds["continuous"], seconds["plain"], strict=True)
                )
                row["memory_continuous_over_plain"] = (
                    row["continuous"]["median_extra_mib"] / row["plain"]["median_extra_mib"]
                )
                rows.append(row)
                print(
                    f"threads {threads} n {n:>5} {route:>14}: plain "
                    f"{row['plain']['median_seconds']:7.2f} s "
                    f"{row['plain']['median_extra_mib']:8.0f} MiB | continuous "
                    f"{row['continuous']['median_seconds']:7.2f} s "
                    f"{row['continuous']['median_extra_mib']:8.0f} MiB | cont/plain time "
                    f"{row['time_continuous_over_plain']:.3f} memory "
                    f"{row['memory_continuous_over_plain']:.3f} | "
                    f"{row['continuous']['limit']['fraction_of_peak']:.2f} of the peak",
                    flush=True,
                )
                _write(args, argv, rows, peaks, complete=False)
    set_attention_route(model, "eager")
    for v in _fused_versus_eager(rows):
        print(
            f"threads {v['threads']} n {v['n']:>5} {v['route']:>14} vs eager (continuous): "
            f"{v['eager_time_over_fused']:.2f}x faster, "
            f"{v['eager_extra_memory_over_fused']:.2f}x less extra memory"
        )
    _write(args, argv, rows, peaks, complete=True)


def _fused_versus_eager(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each fused row's continuous forward against the eager continuous forward of its size."""
    eager_rows = {(r["threads"], r["n"]): r for r in rows if r["route"] == "eager"}
    versus = []
    for row in rows:
        eager = eager_rows.get((row["threads"], row["n"]))
        if row["route"] == "eager" or eager is None:
            continue
        versus.append(
            {
                "threads": row["threads"],
                "n": row["n"],
                "route": row["route"],
                "eager_time_over_fused": eager["continuous"]["median_seconds"]
                / row["continuous"]["median_seconds"],
                "eager_extra_memory_over_fused": eager["continuous"]["median_extra_mib"]
                / row["continuous"]["median_extra_mib"],
            }
        )
    return versus


def _write(
    args: argparse.Namespace,
    argv: list[str] | None,
    rows: list[dict[str, Any]],
    peaks: dict[int, float],
    *,
    complete: bool,
) -> None:
    write_result(
        args.result,
        {
            "command": "python -m benchmarks.long_context " + " ".join(argv or []),
            "complete": complete,
            "model": args.model,
            "device": args.device,
            "dtype": args.dtype,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "sgemm_peak_gflops": peaks,
            "rows": rows,
            "fused_versus_eager": _fused_versus_eager(rows),
        },
    )


if __name__ == "__main__":
    main(sys.argv[1:])
