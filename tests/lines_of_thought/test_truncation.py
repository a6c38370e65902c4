"""KL under truncation on tiny models: K = D gives 0, fast path equals naive, knee, baseline.

The readings run on both backends (``make_tiny`` of ``conftest.py``): the every-layer fast
path continues TransformerLens' frozen KV cache on a ``HookedTransformer`` and Hugging Face's
cache on a ``TransformerBridge`` (``backend.kv_prefix`` / ``kv_branches``). The independent
block loop calls ``HookedTransformer`` blocks directly and stays on that backend.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tl_continuous.backends import backend_for
from tl_continuous.lines_of_thought.bases import TrajectoryBases
from tl_continuous.lines_of_thought.ensemble import LinesOfThought
from tl_continuous.lines_of_thought.truncation import (
    TruncationCurve,
    kl_divergence,
    truncation_kl_every_layer,
    truncation_kl_last_layer,
)
from tl_continuous.tiny import tiny_bridge, tiny_model


def _setup(
    kind: str, dtype: torch.dtype = torch.float32, n: int = 80, pos: int = 10, build=tiny_model
):
    model = build(kind, n_layers=3, dtype=dtype)
    tokens = torch.randint(0, 50, (n, pos), generator=torch.Generator().manual_seed(0))
    lot = LinesOfThought.collect(model, tokens, batch_size=16, progress=False)
    return model, lot, TrajectoryBases.from_ensemble(lot)


@pytest.mark.parametrize("kind", ["rotary", "rotary-partial", "learned"])
def test_every_layer_fast_path_equals_naive_recompute(make_tiny, kind, monkeypatch) -> None:
    model, lot, bases = _setup(kind, build=make_tiny)
    ks = [1, 4, 16, 40, 64]
    backend, calls = backend_for(model), []
    continue_kv = backend.kv_branches

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(args[-1])
        return continue_kv(*args, **kwargs)

    monkeypatch.setattr(backend, "kv_branches", spy)
    fast = truncation_kl_every_layer(model, lot, bases, ks, batch_size=16, progress=False)
    assert calls and max(calls) > 1  # the fast path ran on the backend's KV cache, K-tiled
    monkeypatch.undo()
    naive = truncation_kl_every_layer(
        model, lot, bases, ks, batch_size=16, method="naive", progress=False
    )
    torch.testing.assert_close(fast.kl_mean, naive.kl_mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.kl_median, naive.kl_median, atol=1e-5, rtol=0)
    one_k_per_pass = truncation_kl_every_layer(
        model, lot, bases, ks, batch_size=16, max_rows=1, progress=False
    )
    torch.testing.assert_close(one_k_per_pass.kl_mean, naive.kl_mean, atol=1e-5, rtol=0)
    assert abs(fast.baseline - naive.baseline) < 1e-5
    assert float(fast.kl_mean[0]) > 1e-3  # the test can fail: truncation does change p


@pytest.mark.parametrize("kind", ["rotary", "rotary-partial", "learned"])
def test_branches_as_positions_equal_naive_in_float64(make_tiny, backend, kind: str) -> None:
    # both backends run a rotary model's branches as positions of one continuation (each
    # masked to its own key, all at the prefix length); the bridge does so for learned
    # positions too (position_ids), the hooked backend tiles rows there. In float64 the fast
    # path must equal the naive one to rounding, whatever the chunking
    model, lot, bases = _setup(kind, dtype=torch.float64, n=24, pos=7, build=make_tiny)
    along = backend == "bridge" or kind != "learned"
    ks = [1, 2, 5, 9, 17, 24]
    seen: list[tuple[int, ...]] = []

    def spy(act: torch.Tensor, hook: Any) -> None:
        seen.append(tuple(act.shape[:2]))

    naive = truncation_kl_every_layer(model, lot, bases, ks, batch_size=8, method="naive",
                                      progress=False)  # fmt: skip
    for max_rows in (256, 24):  # all branches in one pass; three per pass
        with model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", spy)]):
            fast = truncation_kl_every_layer(
                model, lot, bases, ks, batch_size=8, max_rows=max_rows, progress=False
            )
        torch.testing.assert_close(fast.kl_mean, naive.kl_mean, atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(fast.kl_median, naive.kl_median, atol=1e-12, rtol=1e-10)
        assert abs(fast.baseline - naive.baseline) < 1e-12
        # prefix passes [8, 6], then branch passes [8, m] along positions (or [8 m, 1] rows)
        m = min(len(ks) + 1, max_rows // 8)
        assert (8, 6) in seen and ((8, m) if along else (8 * m, 1)) in seen
        seen.clear()
    assert float(naive.kl_mean[0]) > 1e-3
    for block in getattr(model, "blocks", []):  # the masks were put back
        assert "apply_causal_mask" not in vars(block.attn)
    assert not any(h.fwd_hooks for h in model.hook_dict.values())


@pytest.mark.parametrize("fail", [False, True])
def test_bridge_branches_leave_the_prefix_cache_as_it_was(fail: bool) -> None:
    # the bridge's branch pass continues Hugging Face's prefix cache in place and puts its
    # tensors back, also when a hook raises; with no projection every branch is the model's
    # own next-token prediction (a branch seeing another's key would weigh it twice)
    model = tiny_bridge("rotary", n_layers=2, dtype=torch.float64)
    tokens = torch.randint(0, 50, (3, 6), generator=torch.Generator().manual_seed(1))
    backend = backend_for(model)
    with torch.no_grad():
        cache = backend.kv_prefix(model, tokens[:, :-1])
        before = [(layer.keys, layer.values) for layer in cache.layers]
        shapes: list[tuple[int, ...]] = []

        def hook(act: torch.Tensor, hook: Any) -> None:
            shapes.append(tuple(act.shape[:2]))
            if fail:
                raise RuntimeError("boom")

        with model.hooks(fwd_hooks=[("blocks.1.hook_resid_post", hook)]):
            if fail:
                with pytest.raises(RuntimeError, match="boom"):
                    backend.kv_branches(model, tokens[:, -1:], cache, 4)
            else:
                logits = backend.kv_branches(model, tokens[:, -1:], cache, 4)
        assert shapes == [(3, 4)]  # the branches ran as positions
        assert cache.get_seq_length() == 5
        for layer, (keys, values) in zip(cache.layers, before, strict=True):
            assert layer.keys is keys and layer.values is values
        assert not any(h.fwd_hooks for h in model.hook_dict.values())
        if not fail:
            own = model(tokens)[:, -1]
            assert logits.shape == (4, 3, 50)
            torch.testing.assert_close(logits, own.expand(4, -1, -1), atol=1e-12, rtol=0)
            again = backend.kv_branches(model, tokens[:, -1:], cache, 2)  # the cache still works
            torch.testing.assert_close(again, own.expand(2, -1, -1), atol=1e-12, rtol=0)


def test_bridge_sliding_window_falls_back_to_tiled_rows() -> None:
    # a sliding-window config keeps the older K-tiled path (hooks see [m * batch, 1, ...])
    model = tiny_bridge("rotary", n_layers=2, dtype=torch.float64, sliding_window=64)
    tokens = torch.randint(0, 50, (3, 6), generator=torch.Generator().manual_seed(1))
    backend = backend_for(model)
    shapes: list[tuple[int, ...]] = []

    def spy(act: torch.Tensor, hook: Any) -> None:
        shapes.append(tuple(act.shape[:2]))

    with torch.no_grad():
        cache = backend.kv_prefix(model, tokens[:, :-1])
        with model.hooks(fwd_hooks=[("blocks.1.hook_resid_post", spy)]):
            logits = backend.kv_branches(model, tokens[:, -1:], cache, 4)
        own = model(tokens)[:, -1]
    assert shapes == [(12, 1)]
    assert cache.get_seq_length() == 5
    torch.testing.assert_close(logits, own.expand(4, -1, -1), atol=1e-12, rtol=0)


def test_branch_masks_are_removed_when_a_hook_fails() -> None:
    model, lot, bases = _setup("rotary", n=8, pos=5)

    def boom(act: torch.Tensor, hook: Any) -> None:
        if act.shape[1] > 1 and act.shape[1] != 4:  # a branch pass, not the prefix
            raise RuntimeError("boom")

    hooks = model.hooks(fwd_hooks=[("blocks.1.hook_resid_post", boom)])
    with pytest.raises(RuntimeError, match="boom"), hooks:
        truncation_kl_every_layer(model, lot, bases, [2, 4], progress=False)
    for block in model.blocks:
        assert "apply_causal_mask" not in vars(block.attn)
    assert not any(h.fwd_hooks for h in model.hook_dict.values())


@torch.no_grad()
def test_every_layer_naive_against_an_independent_loop() -> None:
    model, lot, bases = _setup("rotary", n=66, pos=6)
    k = 8
    curve = truncation_kl_every_layer(model, lot, bases, [k], method="naive", progress=False)
    kls = []
    for i in range(lot.n_trajectories):  # one sequence at a time, manual block loop
        x = model.embed(lot.tokens[i : i + 1])
        for layer, block in enumerate(model.blocks):
            x = block(x).clone()
            u = bases.top(layer, k).float()
            x[:, -1] = x[:, -1] @ u @ u.T
        logp_k = torch.log_softmax(model.unembed(model.ln_final(x))[0, -1].double(), -1)
        logp = torch.log_softmax(model(lot.tokens[i : i + 1])[0, -1].double(), -1)
        kls.append(kl_divergence(logp_k, logp))
    assert abs(float(curve.kl_mean[0]) - float(torch.stack(kls).mean())) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_truncation_at_full_rank_gives_zero_kl(make_tiny, dtype) -> None:
    model, lot, bases = _setup("rotary", dtype=dtype, build=make_tiny)
    assert bases.rank == 64
    last = truncation_kl_last_layer(model, lot, bases, [2, 64], progress=False)
    every = truncation_kl_every_layer(model, lot, bases, [2, 64], progress=False)
    for curve in (last, every):
        assert float(curve.kl_mean[-1]) < 1e-6
        assert float(curve.kl_mean[0]) > 1e-3


def test_bfloat16_model_runs_and_kl_shrinks(make_tiny) -> None:
    model, lot, bases = _setup("rotary", dtype=torch.bfloat16, build=make_tiny)
    curve = truncation_kl_every_layer(model, lot, bases, [2, 32, 64], progress=False)
    assert curve.kl_mean[0] > curve.kl_mean[1] > curve.kl_mean[2] - 1e-3


def test_last_layer_matches_a_direct_computation(make_tiny) -> None:
    model, lot, bases = _setup("learned", build=make_tiny)
    k = 10
    curve = truncation_kl_last_layer(model, lot, bases, [k], progress=False)
    logits = model(lot.tokens)[:, -1]
    x = lot.trajectories[:, -1].double()
    u = bases.U[-1][:, bases.S[-1].argsort(descending=True)[:k]]
    xk = (x @ u @ u.T).float()
    logits_k = model.unembed(model.ln_final(xk[:, None]))[:, 0]
    kl = kl_divergence(
        torch.log_softmax(logits_k.double(), -1), torch.log_softmax(logits.double(), -1)
    )
    assert abs(float(curve.kl_mean[0]) - float(kl.mean())) < 1e-5
    lp = torch.log_softmax(logits.double(), -1)
    assert abs(curve.baseline - float(kl_divergence(lp[:-1], lp[1:]).median())) < 1e-4


def test_curve_round_trip_and_knee() -> None:
    c = TruncationCurve(
        torch.tensor([2, 4, 8, 16]),
        torch.tensor([4.0, 1.0, 0.3, 0.0], dtype=torch.float64),
        torch.tensor([4.0, 1.0, 0.3, 0.0], dtype=torch.float64),
        0.7,
        "every_layer",
        10,
        16,
    )
    assert c.knee_k == 8  # 90% of the drop: KL <= 4 - 0.9 * 4 = 0.4, first at K = 8
    assert c.knee(0.95) == 16
    back = TruncationCurve.from_dict(c.to_dict())
    assert torch.equal(back.ks, c.ks) and back.baseline == 0.7


def test_errors() -> None:
    model, lot, bases = _setup("rotary", n=20, pos=4)
    with pytest.raises(ValueError, match="ks must lie"):
        truncation_kl_last_layer(model, lot, bases, [0], progress=False)
    other = TrajectoryBases.from_ensemble(lot.subset(slice(0, 10)))
    other.layer_names = ["x", "y", "z"]
    with pytest.raises(ValueError, match="layer_names differ"):
        truncation_kl_every_layer(model, lot, other, [2], progress=False)
    no_tokens = LinesOfThought(lot.trajectories, lot.layer_names)
    with pytest.raises(ValueError, match="no token ids"):
        truncation_kl_every_layer(model, no_tokens, bases, [2], progress=False)
