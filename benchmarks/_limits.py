"""The machine's limit: the matmul peak, and the FLOPs a forward pass does.

Benchmarks print each speed also as a fraction of what the machine can do. The limit is the
float32 matrix-multiply peak measured in the same run (:func:`sgemm_peak`: ``torch.mm`` of
two large square matrices at the benchmark's thread count, best of a few), and the work is
counted from the model's configuration (:func:`forward_flops`):

* ``2 x`` the matrix parameters of every block run, per token: the query, key, value and
  output projections (grouped-query attention: ``n_key_value_heads`` for keys and values)
  and the MLP (gated: three matrices, else two);
* attention scores and values: ``2 x 2 x n_heads x d_head`` per (query, key) pair that is
  *computed*. TransformerLens computes every query against every key of the pass (the cache
  included) and masks afterwards, so a pass of ``n_new`` tokens after ``n_past`` cached ones
  does ``n_new x (n_past + n_new)`` pairs;
* the unembedding, ``2 x d_model x d_vocab`` per position whose logits are computed (none
  when the forward stops before it, as lean collection does).

Norms, rotary, softmax, the embedding lookup and other elementwise work are not counted: they
are what stands between a forward and the matmul limit.
"""

from __future__ import annotations

import time
from typing import Any

import torch

__all__ = [
    "block_matmul_params",
    "block_matmul_speed",
    "flops_per_token",
    "forward_flops",
    "limit_entry",
    "sgemm_peak",
]


def _cfg(cfg: Any) -> dict[str, Any]:
    return cfg if isinstance(cfg, dict) else cfg.to_dict()


def block_matmul_params(cfg: Any) -> int:
    """Weights of one block's matrix multiplies (attention projections and MLP).

    Args:
        cfg: a TransformerLens config (``HookedTransformerConfig`` or a bridge's) or its
            ``to_dict()``.
    """
    c = _cfg(cfg)
    d_model, n_heads, d_head = int(c["d_model"]), int(c["n_heads"]), int(c["d_head"])
    n_kv = int(c.get("n_key_value_heads") or n_heads)
    attention = d_model * d_head * (2 * n_heads + 2 * n_kv)  # W_Q, W_O; W_K, W_V
    d_mlp = c.get("d_mlp")
    if c.get("attn_only") or not d_mlp:
        return attention
    return attention + (3 if c.get("gated_mlp") else 2) * d_model * int(d_mlp)


def flops_per_token(cfg: Any, context: int, *, unembed: bool = True) -> int:
    """FLOPs of one token through every block, attending to ``context`` keys, plus its
    unembedding when ``unembed``.

    >>> cfg = {"d_model": 4, "n_heads": 2, "d_head": 2, "d_mlp": 8, "n_layers": 1,
    ...        "d_vocab": 10, "gated_mlp": False}
    >>> flops_per_token(cfg, 3, unembed=False)  # 2 * (64 + 64) + 2 * 2 * 2 * 2 * 3
    304
    """
    c = _cfg(cfg)
    per_block = 2 * block_matmul_params(c) + 4 * int(c["n_heads"]) * int(c["d_head"]) * context
    out = int(c["n_layers"]) * per_block
    if unembed:
        out += 2 * int(c["d_model"]) * int(c["d_vocab"])
    return out


def forward_flops(
    cfg: Any,
    batch: int,
    n_new: int,
    *,
    n_past: int = 0,
    unembed_positions: int | None = None,
    n_blocks: int | None = None,
) -> int:
    """FLOPs of a forward pass of ``batch`` sequences of ``n_new`` tokens after ``n_past``
    cached ones, as TransformerLens computes it (every query against every key).

    Args:
        cfg: the model's config.
        batch: sequences.
        n_new: tokens run per sequence.
        n_past: keys and values already cached per sequence.
        unembed_positions: positions per sequence whose logits are computed (default all
            ``n_new``; 0 for a forward that stops before the unembedding).
        n_blocks: blocks run (default all).

    >>> cfg = {"d_model": 4, "n_heads": 2, "d_head": 2, "d_mlp": 8, "n_layers": 2,
    ...        "d_vocab": 10, "gated_mlp": True}
    >>> forward_flops(cfg, 1, 2, unembed_positions=0, n_blocks=1)  # 2 * (2*160 + 16*2)
    704
    """
    c = _cfg(cfg)
    blocks = int(c["n_layers"]) if n_blocks is None else n_blocks
    pairs = n_new * (n_past + n_new)
    per_block = (
        2 * block_matmul_params(c) * n_new + 4 * int(c["n_heads"]) * int(c["d_head"]) * pairs
    )
    logits = n_new if unembed_positions is None else unembed_positions
    return batch * (blocks * per_block + 2 * int(c["d_model"]) * int(c["d_vocab"]) * logits)


def sgemm_peak(threads: int | None = None, size: int = 2048, repeats: int = 5) -> float:
    """Best float32 ``torch.mm`` speed of two ``size x size`` matrices, in GFLOP/s.

    Args:
        threads: torch threads while measuring (default: the current setting, restored).
        size: matrix side.
        repeats: timed multiplies after one warm-up; the fastest counts.
    """
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=gen)
        b = torch.randn(size, size, generator=gen)
        out = torch.empty(size, size)
        torch.mm(a, b, out=out)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return 2 * size**3 / best / 1e9


def _block_shapes(c: dict[str, Any]) -> list[tuple[int, int]]:
    d_model, n_heads, d_head = int(c["d_model"]), int(c["n_heads"]), int(c["d_head"])
    kv = int(c.get("n_key_value_heads") or n_heads) * d_head
    shapes = [
        (d_model, n_heads * d_head),
        (d_model, kv),
        (d_model, kv),
        (n_heads * d_head, d_model),
    ]
    if c.get("d_mlp") and not c.get("attn_only"):
        d_mlp = int(c["d_mlp"])
        shapes += [(d_model, d_mlp)] * (2 if c.get("gated_mlp") else 1) + [(d_mlp, d_model)]
    return shapes


def block_matmul_speed(cfg: Any, rows: int, repeats: int = 5) -> float:
    """GFLOP/s of one block's weight matrix multiplies alone (``F.linear`` on ``rows`` token
    rows, the block's shapes, random float32 data; best of ``repeats``): the most a forward
    of ``rows`` tokens could reach with every other operation free.

    >>> block_matmul_speed({"d_model": 8, "n_heads": 2, "d_head": 4, "d_mlp": 16}, 4, 1) > 0
    True
    """
    c = _cfg(cfg)
    gen = torch.Generator().manual_seed(0)
    pairs = [
        (torch.randn(rows, fan_in, generator=gen), torch.randn(fan_out, fan_in, generator=gen))
        for fan_in, fan_out in _block_shapes(c)
    ]

    def run() -> None:
        for x, w in pairs:
            torch.nn.functional.linear(x, w)

    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return 2 * rows * block_matmul_params(c) / best / 1e9


def limit_entry(flops: float, seconds: float, peak_gflops: float) -> dict[str, float]:
    """``{"gflop", "seconds", "gflops", "fraction_of_peak"}`` of work done in ``seconds``.

    >>> limit_entry(3e9, 0.5, 10.0)["fraction_of_peak"]
    0.6
    """
    gflops = flops / seconds / 1e9
    return {
        "gflop": flops / 1e9,
        "seconds": seconds,
        "gflops": gflops,
        "fraction_of_peak": gflops / peak_gflops,
    }
