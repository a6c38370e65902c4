"""The benchmarks' FLOP count (``benchmarks/_limits.py``): by hand, and against PyTorch's own
count of the matrix multiplies a TransformerLens forward runs."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks._limits import (
    block_matmul_params,
    flops_per_token,
    forward_flops,
    limit_entry,
    sgemm_peak,
)
from tl_continuous.backends import backend_for
from tl_continuous.tiny import tiny_bridge, tiny_model

# SmolLM2-135M's shape (30 blocks, grouped-query attention, gated MLP)
SMOLLM2 = {
    "d_model": 576,
    "n_heads": 9,
    "d_head": 64,
    "n_key_value_heads": 3,
    "d_mlp": 1536,
    "n_layers": 30,
    "d_vocab": 49152,
    "gated_mlp": True,
}


def test_flops_per_token_by_hand() -> None:
    # a block: W_Q, W_O 2 x 4 x 2 x 2 = 32; W_K, W_V (one key/value head) 2 x 4 x 2 = 16;
    # gated MLP 3 x 4 x 8 = 96: 144 weights
    cfg = {"d_model": 4, "n_heads": 2, "d_head": 2, "n_key_value_heads": 1, "d_mlp": 8,
           "n_layers": 3, "d_vocab": 10, "gated_mlp": True}  # fmt: skip
    assert block_matmul_params(cfg) == 144
    # per block 2 x 144 + scores and values 2 x 2 x 2 heads x 2 x 5 keys = 288 + 80
    assert flops_per_token(cfg, 5, unembed=False) == 3 * 368
    assert flops_per_token(cfg, 5) == 3 * 368 + 2 * 4 * 10
    # 2 sequences of 3 new tokens after 4 cached: 3 x 7 (query, key) pairs each, logits of 1
    assert forward_flops(cfg, 2, 3, n_past=4, unembed_positions=1) == 2 * (
        3 * (2 * 144 * 3 + 16 * 21) + 80
    )
    assert forward_flops(cfg, 1, 1, n_blocks=0) == 80


def test_smollm2_is_about_212_mflop_per_token() -> None:
    assert block_matmul_params(SMOLLM2) == 3_538_944
    assert flops_per_token(SMOLLM2, 0, unembed=False) == 212_336_640
    assert flops_per_token(SMOLLM2, 0) - flops_per_token(SMOLLM2, 0, unembed=False) == (
        2 * 576 * 49152
    )


@pytest.mark.parametrize("kind", ["rotary", "learned"])
def test_forward_flops_match_pytorchs_count(kind: str) -> None:
    model = tiny_model(kind)
    tokens = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(0))
    counted = {}
    with torch.no_grad():
        for name, kwargs in {"logits": {}, "none": {"return_type": None}}.items():
            with FlopCounterMode(display=False) as counter:
                model(tokens, **kwargs)
            counted[name] = counter.get_total_flops()
    assert counted["logits"] == forward_flops(model.cfg, 2, 7)
    assert counted["none"] == forward_flops(model.cfg, 2, 7, unembed_positions=0)


def test_kv_cache_passes_match_pytorchs_count() -> None:
    model = tiny_model("rotary")
    backend = backend_for(model)
    tokens = torch.randint(0, 50, (3, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            cache = backend.kv_prefix(model, tokens[:, :-1])
        assert counter.get_total_flops() == forward_flops(model.cfg, 3, 5, unembed_positions=0)
        with FlopCounterMode(display=False) as counter:
            backend.kv_branches(model, tokens[:, -1:], cache, 4)
        # four branches as four positions after the 5 cached ones, logits at each
        assert counter.get_total_flops() == forward_flops(model.cfg, 3, 4, n_past=5)


def test_bridge_branch_pass_matches_pytorchs_count() -> None:
    # the bridge also runs the branches as positions after the cached prefix (kl_flops counts so)
    from tl_continuous.backends.bridge import _branches_along_positions

    model = tiny_bridge("rotary")
    backend = backend_for(model)
    tokens = torch.randint(0, 50, (3, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cache = backend.kv_prefix(model, tokens[:, :-1])
        with FlopCounterMode(display=False) as counter:
            backend.kv_branches(model, tokens[:, -1:], cache, 4)
    assert _branches_along_positions(model) and _branches_along_positions(model, cache)
    assert counter.get_total_flops() == forward_flops(model.cfg, 3, 4, n_past=5)


def test_limit_entry_and_peak() -> None:
    entry = limit_entry(4e9, 2.0, 8.0)
    assert entry == {"gflop": 4.0, "seconds": 2.0, "gflops": 2.0, "fraction_of_peak": 0.25}
    threads = torch.get_num_threads()
    assert sgemm_peak(threads=1, size=128, repeats=2) > 0
    assert torch.get_num_threads() == threads
