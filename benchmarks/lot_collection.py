"""Collection cost: pilot-slicing hooks against a plain forward and the Hugging Face route.

    python -m benchmarks.lot_collection [--batches 2 --batch-size 8 --reps 3 --threads 1]

On the same SmolLM2 batches of N_k = 50 default-corpus tokens, interleaved repetitions of:

* plain forward: ``model(tokens)`` (logits, as a user would run the model);
* plain forward without unembedding: ``model(tokens, return_type=None)``;
* our collection (``collect_trajectories``: hooks slicing the pilot, ``return_type=None``);
* Hugging Face: ``AutoModelForCausalLM(...)(input_ids, output_hidden_states=True)``, then
  ``hidden_states[1:]`` sliced at the last position.

Ratios of medians are printed (target: collection / plain forward <= 1.05) and written to
``benchmarks/results/lot_collection.json``, with each variant's speed against the machine's
limit (``benchmarks/_limits.py``: the sgemm peak measured in the same run, FLOPs counted for
the work each variant does: collection stops after the last block, so no unembedding) and a
torch-profiler breakdown of one collection batch (matrix multiplies, copies, elementwise work,
and the rest of the wall time: Python and TransformerLens' per-module overheads).
The values of the HF route are compared too: its last hidden state is taken after the final
norm (the "last-layer anomaly" of the paper).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch

from benchmarks._limits import block_matmul_speed, forward_flops, limit_entry, sgemm_peak
from benchmarks._lot_common import batches, summarise, time_once, write_result

_KINDS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "copy": ("aten::copy_", "aten::cat", "aten::index", "aten::repeat_interleave",
             "aten::clone", "aten::contiguous", "aten::repeat"),
}  # fmt: skip


def profile_breakdown(fn: Any) -> dict[str, float]:
    """Seconds of one call of ``fn`` by kind of operation (torch profiler, self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        fn()
        wall = time.perf_counter() - start
    out = {"matmul": 0.0, "copy": 0.0, "elementwise and other ops": 0.0}
    for event in prof.key_averages():
        kind = next((k for k, names in _KINDS.items() if event.key in names), None)
        out[kind or "elementwise and other ops"] += event.self_cpu_time_total / 1e6
    out["outside ops (Python, module calls)"] = max(0.0, wall - sum(out.values()))
    out["wall"] = wall
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv or [])
    torch.set_num_threads(args.threads)
    peak = sgemm_peak()

    from transformers import AutoModelForCausalLM

    from tl_continuous.lines_of_thought.collect import collect_trajectories
    from tl_continuous.models import converted_folder, load_model

    model = load_model()
    hf = AutoModelForCausalLM.from_pretrained(converted_folder(), dtype=torch.float32).eval()
    data = batches(model, args.batches, args.batch_size)
    L = model.cfg.n_layers

    def forward() -> None:
        with torch.inference_mode():
            for toks in data:
                model(toks)

    def forward_no_unembed() -> None:
        with torch.inference_mode():
            for toks in data:
                model(toks, return_type=None)

    def collect() -> None:
        for toks in data:
            collect_trajectories(model, toks, batch_size=len(toks), progress=False)

    def hf_route() -> None:
        with torch.inference_mode():
            for toks in data:
                out = hf(input_ids=toks, output_hidden_states=True)
                torch.stack([h[:, -1] for h in out.hidden_states[1:]], dim=1).float()

    runs = {
        "forward": forward,
        "forward_no_unembed": forward_no_unembed,
        "collect": collect,
        "hf_hidden_states": hf_route,
    }
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.reps):
        for name, fn in runs.items():
            times[name].append(time_once(fn))

    # values: our resid_post vs HF hidden states
    toks = data[0]
    ours = collect_trajectories(model, toks, batch_size=len(toks), progress=False).trajectories
    with torch.inference_mode():
        hs = hf(input_ids=toks, output_hidden_states=True).hidden_states
    theirs = torch.stack([h[:, -1] for h in hs[1:]], dim=1).float()
    diff_blocks = float((ours[:, : L - 1] - theirs[:, : L - 1]).abs().max())
    diff_last = float((ours[:, L - 1] - theirs[:, L - 1]).abs().max())
    norm_last = float(ours[:, L - 1].norm(dim=-1).mean())

    med = {k: summarise(v) for k, v in times.items()}
    n_seq, cfg = sum(len(t) for t in data), model.cfg
    work = {
        "forward": forward_flops(cfg, n_seq, 50),
        "forward_no_unembed": forward_flops(cfg, n_seq, 50, unembed_positions=0),
        "collect": forward_flops(cfg, n_seq, 50, unembed_positions=0),
    }
    peak = max(peak, sgemm_peak())  # the better of two measurements, before and after
    limits = {k: limit_entry(f, med[k]["median_s"], peak) for k, f in work.items()}
    breakdown = profile_breakdown(
        lambda: collect_trajectories(model, data[0], batch_size=len(data[0]), progress=False)
    )
    batch_flops = forward_flops(cfg, len(data[0]), 50, unembed_positions=0)
    # what the matmuls reach inside the forward, and alone on the same shapes
    matmul_gflops = batch_flops / breakdown["matmul"] / 1e9
    shapes_gflops = block_matmul_speed(cfg, len(data[0]) * 50)
    ratios = {
        "collect_over_forward": med["collect"]["median_s"] / med["forward"]["median_s"],
        "collect_over_forward_no_unembed": med["collect"]["median_s"]
        / med["forward_no_unembed"]["median_s"],
        "collect_over_hf_hidden_states": med["collect"]["median_s"]
        / med["hf_hidden_states"]["median_s"],
    }
    for k, v in med.items():
        print(f"{k:22s} median {v['median_s']:.2f} s  min {v['min_s']:.2f} s")
    for k, r in ratios.items():
        print(f"{k:34s} {r:.3f}")
    print(f"sgemm peak {peak:.1f} GFLOP/s ({args.threads} thread(s))")
    for k, e in limits.items():
        print(
            f"{k:22s} {e['gflops']:6.1f} GFLOP/s = {e['fraction_of_peak']:.2f} of the peak "
            f"({e['gflop']:.1f} GFLOP)"
        )
    print("one collection batch, seconds by kind of work (torch profiler):")
    for k, v in breakdown.items():
        print(f"  {k:36s} {v:.3f} ({v / breakdown['wall']:.0%})")
    print(
        f"its matmuls run at {matmul_gflops:.1f} GFLOP/s ({matmul_gflops / peak:.2f} of the peak); "
        f"a block's matmul shapes alone on {len(data[0]) * 50} rows: {shapes_gflops:.1f} GFLOP/s "
        f"({shapes_gflops / peak:.2f} of the peak)"
    )
    print(
        f"max |ours - HF| blocks 1..L-1: {diff_blocks:.2e}; at block L: {diff_last:.2e} "
        f"(HF's last hidden state is after the final norm; |x_L| ~ {norm_last:.1f})"
    )
    path = write_result(
        "lot_collection",
        {
            "batches": args.batches,
            "batch_size": args.batch_size,
            "n_tokens": 50,
            "reps": args.reps,
            "times": med,
            "ratios": ratios,
            "sgemm_peak_gflops": peak,
            "limits": limits,
            "collect_profile_seconds": breakdown,
            "collect_matmul_gflops_in_forward": matmul_gflops,
            "block_matmul_shapes_alone_gflops": shapes_gflops,
            "command": "python -m benchmarks.lot_collection " + " ".join(argv or []),
            "hf_max_abs_diff_blocks_1_to_L_minus_1": diff_blocks,
            "hf_max_abs_diff_block_L": diff_last,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
