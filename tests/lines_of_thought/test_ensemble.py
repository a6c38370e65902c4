"""LinesOfThought: collection against an independent full cache, from_cache, save/load.

The collection tests run on both backends (``make_tiny`` of ``conftest.py``):
``HookedTransformer`` and ``TransformerBridge``.
"""

from __future__ import annotations

import pytest
import torch

import tl_continuous
from tl_continuous.lines_of_thought.collect import collect_trajectories
from tl_continuous.lines_of_thought.ensemble import LinesOfThought
from tl_continuous.lines_of_thought.hooks import layer_hook_names
from tl_continuous.tiny import tiny_model


def _full_cache_pilots(model, tokens, names, pilots):
    _, cache = model.run_with_cache(tokens)
    rows = torch.arange(tokens.shape[0])
    return torch.stack([cache[n][rows, pilots].float() for n in names], dim=1)


def test_public_name() -> None:
    assert tl_continuous.LinesOfThought is LinesOfThought


@pytest.mark.parametrize("hook", ["resid_pre", "resid_mid", "resid_post"])
def test_collect_matches_a_full_cache(make_tiny, hook) -> None:
    model = make_tiny("rotary", n_layers=3)
    tokens = torch.randint(0, 50, (7, 9), generator=torch.Generator().manual_seed(0))
    lot = LinesOfThought.collect(model, tokens, batch_size=3, hook=hook, progress=False)
    names = [f"blocks.{i}.hook_{hook}" for i in range(3)]
    assert lot.layer_names == names
    ref = _full_cache_pilots(model, tokens, names, torch.full((7,), 8))
    # batches of 3 against one batch of 7: fp32 matmuls may round differently (seen: 1.1e-6);
    # reading a wrong position or layer would be off by O(1)
    torch.testing.assert_close(lot.trajectories, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(lot.tokens, tokens)
    assert lot.metadata["model_config"]["d_model"] == 64


def test_final_norm_is_an_option_named_as_such(make_tiny) -> None:
    model = make_tiny("rotary")
    tokens = torch.randint(0, 50, (4, 5))
    lot = LinesOfThought.collect(model, tokens, include_final_norm=True, progress=False)
    assert lot.layer_names[-1] == "ln_final.hook_normalized" and lot.n_layers == 3
    ref = _full_cache_pilots(model, tokens, lot.layer_names, torch.full((4,), 4))
    torch.testing.assert_close(lot.trajectories, ref, rtol=0, atol=1e-6)


def test_padding_picks_the_last_real_token_and_matches_unpadded_runs(make_tiny) -> None:
    model = make_tiny("learned")
    a, b = torch.randint(1, 50, (1, 6)), torch.randint(1, 50, (1, 4))
    tokens = torch.cat([a, torch.cat([b, torch.zeros(1, 2, dtype=torch.long)], 1)])
    mask = torch.tensor([[1] * 6, [1] * 4 + [0, 0]])
    lot = LinesOfThought.collect(model, tokens, attention_mask=mask, progress=False)
    alone = LinesOfThought.collect(model, b, progress=False)
    assert lot.pilot_positions.tolist() == [5, 3]
    torch.testing.assert_close(lot.trajectories[1], alone.trajectories[0], atol=1e-5, rtol=0)


def test_from_cache_with_a_filtered_cache_and_missing_hooks(make_tiny) -> None:
    model = make_tiny("rotary")
    tokens = torch.randint(0, 50, (3, 5))
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("resid_post"))
    pilots = torch.tensor([1, 4, 2])
    lot = LinesOfThought.from_cache(cache, pilot_positions=pilots)
    ref = torch.stack(
        [cache[f"blocks.{i}.hook_resid_post"][torch.arange(3), pilots] for i in (0, 1)], 1
    )
    torch.testing.assert_close(lot.trajectories, ref)
    as_dict = {k: v for k, v in cache.items()}
    assert torch.equal(
        LinesOfThought.from_cache(as_dict, pilot_positions=pilots).trajectories, lot.trajectories
    )
    with pytest.raises(ValueError, match=r"missing the hooks \['blocks.0.hook_resid_mid'"):
        LinesOfThought.from_cache(cache, hook="resid_mid")


def test_from_cache_reads_a_cache_filtered_by_the_hookpoints_own_names(make_tiny) -> None:
    """Inside a hook ``hook.name`` is the HookPoint's own name: on a TransformerBridge the
    canonical ``blocks.{i}.hook_out`` of the alias ``blocks.{i}.hook_resid_post``. A cache
    filtered by those names holds no alias; the cache's model maps one to the other."""
    model = make_tiny("rotary")
    tokens = torch.randint(0, 50, (3, 5))
    own = {model.hook_dict[f"blocks.{i}.hook_resid_post"].name for i in (0, 1)}
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in own)
    assert set(cache.keys()) == own
    lot = LinesOfThought.from_cache(cache)
    assert lot.layer_names == [f"blocks.{i}.hook_resid_post" for i in (0, 1)]
    ref = LinesOfThought.collect(model, tokens, progress=False)
    torch.testing.assert_close(lot.trajectories, ref.trajectories, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"missing the hooks \['blocks.0.hook_resid_mid'"):
        LinesOfThought.from_cache(cache, hook="resid_mid")


def test_collect_leaves_user_hooks_and_bfloat16_is_stored_as_float32(make_tiny) -> None:
    model = make_tiny("rotary", dtype=torch.bfloat16)
    calls = []
    model.blocks[0].hook_resid_post.add_hook(lambda act, hook: calls.append(1))
    lot = collect_trajectories(model, torch.randint(0, 50, (4, 5)), batch_size=2, progress=False)
    assert lot.trajectories.dtype == torch.float32 and len(calls) == 2
    model(torch.randint(0, 50, (1, 3)))
    assert len(calls) == 3  # the user's hook survived, ours are gone
    assert len(model.blocks[1].hook_resid_post.fwd_hooks) == 0


def test_save_load_round_trip(make_tiny, tmp_path) -> None:
    model = make_tiny("rotary")
    lot = LinesOfThought.collect(model, torch.randint(0, 50, (5, 4)), progress=False)
    back = LinesOfThought.load(lot.save(tmp_path / "lot.safetensors"))
    assert torch.equal(back.trajectories, lot.trajectories) and torch.equal(back.tokens, lot.tokens)
    assert back.layer_names == lot.layer_names and back.metadata == lot.metadata
    assert LinesOfThought.from_dict(lot.to_dict()).n_trajectories == 5


def test_shape_and_argument_errors() -> None:
    with pytest.raises(ValueError, match="layer_names"):
        LinesOfThought(torch.zeros(2, 3, 4), ["a"])
    # jaxtyping's shape check (a TypeError) under the test suite's import hook, or ours
    shape = r"parameter 'trajectories'|trajectories must be \[n_trajectories, n_layers"
    with pytest.raises((TypeError, ValueError), match=shape):
        LinesOfThought(torch.zeros(2, 4), ["a"])
    with pytest.raises(ValueError, match="hook must be"):
        layer_hook_names(2, "resid_out")
    with pytest.raises(ValueError, match="layers must be block indices"):
        layer_hook_names(2, layers=[2])
    model = tiny_model("rotary")
    with pytest.raises(TypeError, match="tokens_or_corpus"):
        LinesOfThought.collect(model, [[1, 2]], progress=False)
