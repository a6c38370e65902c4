"""The continuous-token mechanism on tiny models: identities, independent references, hygiene.

The mechanics tests run on both backends (the ``backend`` / ``make_tiny`` / ``any_*`` fixtures
of ``conftest.py``): ``HookedTransformer`` (``tiny_model``) and ``TransformerBridge`` around a
tiny random Hugging Face model (``tiny_bridge``: Llama, GPT-NeoX, GPT-2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from tl_continuous import Durations, continuous, install_continuous, remove_continuous
from tl_continuous.backends import backend_name
from tl_continuous.tiny import tiny_model

TOKENS = torch.tensor([[3, 17, 5, 9, 22, 5, 41, 8]])
MakeTiny = Callable[..., Any]


def _final(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, -1].log_softmax(-1)


# --- all-ones durations are the discrete model ------------------------------------------


@pytest.mark.parametrize("kind", ["rotary", "rotary-partial", "learned"])
def test_all_ones_reproduce_plain_logits(make_tiny: MakeTiny, kind: str) -> None:
    model = make_tiny(kind)
    tokens = torch.cat([TOKENS, TOKENS.flip(-1)])
    plain = model(tokens)
    with continuous(model, Durations.ones(2, tokens.shape[1])):
        cont = model(tokens)
    torch.testing.assert_close(cont, plain, atol=1e-5, rtol=0)


def test_nontrivial_durations_change_the_output(any_rotary: Any) -> None:
    plain = any_rotary(TOKENS)
    with continuous(any_rotary, Durations.from_spans(8, [(2, 4)], value=0.3)):
        cont = any_rotary(TOKENS)
    assert (cont - plain).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["rotary", "learned"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_dtypes(make_tiny: MakeTiny, backend: str, kind: str, dtype: torch.dtype) -> None:
    ref = make_tiny(kind, dtype=torch.float32)
    model = make_tiny(kind, dtype=dtype)
    if backend == "hooked":
        model.load_state_dict(ref.state_dict())  # same weights, rounded to dtype
    else:  # tiny_bridge draws the float32 weights from the seed, then casts
        for (name, w), w32 in zip(
            model.original_model.state_dict().items(),
            ref.original_model.state_dict().values(),
            strict=True,
        ):
            assert w.dtype == dtype, name
            assert torch.equal(w, w32.to(dtype)), name
    durations = Durations.from_spans(8, [(1, 3)], value=0.4)
    with continuous(model, Durations.ones(1, 8)):
        ones = model(TOKENS)
    assert ones.dtype == dtype
    tol = 1e-10 if dtype == torch.float64 else 0.1
    torch.testing.assert_close(ones, model(TOKENS), atol=tol, rtol=0)
    with continuous(model, durations):
        got = model(TOKENS)
    with continuous(ref, durations):
        want = ref(TOKENS)
    assert got.dtype == dtype
    torch.testing.assert_close(
        got.float(), want, atol=0.1 if dtype == torch.bfloat16 else 1e-5, rtol=0
    )


# --- one layer, no positions: durations are repetitions -----------------------------------


def test_duration_two_is_token_written_twice(any_nopos: Any) -> None:
    model = any_nopos
    twice = torch.tensor([[3, 17, 5, 5, 9, 22]])
    want = _final(model(twice))
    with continuous(model, torch.tensor([1.0, 1.0, 2.0, 1.0, 1.0])):
        got = _final(model(torch.tensor([[3, 17, 5, 9, 22]])))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_duration_zero_is_token_removed(any_nopos: Any) -> None:
    model = any_nopos
    want = _final(model(torch.tensor([[3, 17, 9, 22]])))
    with continuous(model, torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0])):
        got = _final(model(torch.tensor([[3, 17, 5, 9, 22]])))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("k", [3, 5])
def test_integer_duration_is_k_repetitions(any_nopos: Any, k: int) -> None:
    model = any_nopos
    want = _final(model(torch.tensor([[3, 17] + [5] * k + [9, 22]])))
    with continuous(model, torch.tensor([1.0, 1.0, float(k), 1.0, 1.0])):
        got = _final(model(torch.tensor([[3, 17, 5, 9, 22]])))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_repetition_identity_fails_with_two_layers(make_tiny: MakeTiny) -> None:
    """The identity is one-layer only: the test above could fail."""
    model = make_tiny("nopos", n_layers=2)
    want = _final(model(torch.tensor([[3, 17, 5, 5, 9, 22]])))
    with continuous(model, torch.tensor([1.0, 1.0, 2.0, 1.0, 1.0])):
        got = _final(model(torch.tensor([[3, 17, 5, 9, 22]])))
    assert (got - want).abs().max() > 1e-4


# --- scaling and shifting -----------------------------------------------------------------


def _patterns(model: Any, durations: Durations, **kw: bool) -> list[torch.Tensor]:
    with continuous(model, durations, **kw):
        _, cache = model.run_with_cache(TOKENS, names_filter=lambda n: n.endswith("hook_pattern"))
    return [cache["pattern", layer] for layer in range(model.cfg.n_layers)]


@pytest.mark.parametrize("scale", [0.01, 0.37, 1.5])
def test_scaling_leaves_patterns_unchanged(make_tiny: MakeTiny, scale: float) -> None:
    d = Durations(torch.tensor([1.0, 0.5, 2.0, 0.7, 1.3, 1.0, 0.2, 3.0]))
    # no positions at all (nopos) and rotary with positions switched off
    for model, kw in (
        (make_tiny("nopos", n_layers=2), {}),
        (make_tiny("rotary"), {"positions": False}),
    ):
        base = _patterns(model, d, **kw)
        scaled = _patterns(model, d.scaled(scale), **kw)
        for a, b in zip(base, scaled, strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    # with rotary positions on, scaling does move the pattern (it changes positions)
    rotary = make_tiny("rotary")
    moved = _patterns(rotary, d.scaled(0.37))
    assert max((a - b).abs().max() for a, b in zip(_patterns(rotary, d), moved, strict=True)) > 1e-4


@pytest.mark.parametrize("kind", ["rotary", "rotary-partial"])
def test_shifting_positions_is_a_noop_for_rotary(make_tiny: MakeTiny, kind: str) -> None:
    model = make_tiny(kind)
    d = Durations(torch.tensor([1.0, 0.5, 2.0, 0.7, 1.3, 1.0, 0.2, 3.0]))
    with continuous(model, d):
        base = model(TOKENS)
    for shift in (3.0, 11.7, -0.4):
        with continuous(model, d.shifted(shift)):
            torch.testing.assert_close(model(TOKENS), base, atol=1e-5, rtol=0)


def test_shifting_positions_matters_for_learned(any_learned: Any) -> None:
    d = Durations.ones(1, 8)
    with continuous(any_learned, d):
        base = any_learned(TOKENS)
    with continuous(any_learned, d.shifted(2.5)):
        moved = any_learned(TOKENS)
    assert (moved - base).abs().max() > 1e-3


# --- independent references ----------------------------------------------------------------


def _rope(model: Any) -> tuple[int, float, bool]:
    """``(rotary_dim, base, adjacent_pairs)``: TransformerLens' config, or for a bridge the
    wrapped Hugging Face config (Llama / GPT-NeoX rotate the two halves of the rotary dims)."""
    if backend_name(model) == "hooked":
        cfg = model.cfg
        return int(cfg.rotary_dim), float(cfg.rotary_base), bool(cfg.rotary_adjacent_pairs)  # type: ignore[arg-type]
    hf = model.original_model.config
    rope = hf.rope_parameters
    head_dim = hf.hidden_size // hf.num_attention_heads
    rotary_dim = int(head_dim * rope.get("partial_rotary_factor", 1.0))
    return rotary_dim, float(rope["rope_theta"]), False


def _rotate_reference(
    x: torch.Tensor, pos: torch.Tensor, rope: tuple[int, float, bool]
) -> torch.Tensor:
    """Rotate ``x [batch, pos, head, d_head]`` by real positions, from the formula."""
    rd, base, adjacent = rope
    half = rd // 2
    omega = base ** (-torch.arange(half, dtype=torch.float64) * 2 / rd)
    angle = pos.double()[..., None, None] * omega  # [batch, pos, 1, half]
    cos, sin = angle.cos(), angle.sin()
    x = x.double()
    if adjacent:
        a, b = x[..., 0:rd:2], x[..., 1:rd:2]
    else:
        a, b = x[..., :half], x[..., half:rd]
    ra, rb = a * cos - b * sin, a * sin + b * cos
    out = x.clone()
    if adjacent:
        out[..., 0:rd:2], out[..., 1:rd:2] = ra, rb
    else:
        out[..., :half], out[..., half:rd] = ra, rb
    return out


def _assert_scores_close(got: torch.Tensor, want: torch.Tensor) -> None:
    """Scores equal where the reference is finite; masked (``-inf`` in the reference) where
    not: ``-inf`` (TransformerLens) or the dtype's most negative value plus ``log d``
    (Hugging Face's additive causal mask)."""
    finite = torch.isfinite(want)
    torch.testing.assert_close(got[finite], want[finite], atol=1e-5, rtol=0)
    assert bool((got[~finite] < -1e30).all())


@pytest.mark.parametrize("kind", ["rotary", "rotary-partial"])
def test_fractional_rotary_matches_rotation_formula(
    make_tiny: MakeTiny, backend: str, kind: str
) -> None:
    model = make_tiny(kind)
    d = Durations(torch.tensor([[1.0, 0.25, 2.5, 0.7, 1.3, 0.0, 0.2, 3.1]]), start=0.6)
    with continuous(model, d):
        logits, cache = model.run_with_cache(TOKENS)
    pos = d.positions - d.values[:, :1]  # table index convention (see positions.py)
    log_d = torch.log(d.values.double())
    rope = _rope(model)
    for layer in range(model.cfg.n_layers):
        q = _rotate_reference(cache["q", layer], pos, rope)
        k = _rotate_reference(cache["k", layer], pos, rope)
        # the rotated queries and keys, where the model exposes them (not GPT-NeoX's bridge,
        # whose joint-QKV attention fires no hook_rot_q / hook_rot_k); the scores always
        rot = f"blocks.{layer}.attn.hook_rot_"
        if backend == "hooked" or kind == "rotary":
            torch.testing.assert_close(cache[rot + "q"].double(), q, atol=1e-5, rtol=0)
            torch.testing.assert_close(cache[rot + "k"].double(), k, atol=1e-5, rtol=0)
        k = k.repeat_interleave(model.cfg.n_heads // k.shape[2], dim=2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(model.cfg.d_head)
        causal = torch.ones(8, 8, dtype=torch.bool).tril()
        scores = scores.masked_fill(~causal, -math.inf) + log_d[:, None, None, :]
        _assert_scores_close(cache["attn_scores", layer].double(), scores)
    if backend == "bridge":
        # the whole forward: Hugging Face's own route (float position_ids, 4-D log-d mask)
        from tl_continuous.continuous.reference_hf import hf_continuous_logits

        with torch.no_grad():
            want = hf_continuous_logits(model.original_model, TOKENS, d)
        torch.testing.assert_close(logits, want, atol=1e-5, rtol=0)


def _w_pos(model: Any) -> torch.Tensor:
    """The learned position table: ``W_pos``, or the wrapped GPT-2's ``wpe``."""
    if backend_name(model) == "hooked":
        return model.W_pos.detach()
    return model.original_model.transformer.wpe.weight.detach()


def test_learned_positions_interpolate_w_pos(any_learned: Any) -> None:
    d = Durations(torch.tensor([1.0, 0.25, 2.5, 0.7, 1.3, 0.0, 0.2, 3.1]), start=0.5)
    with continuous(any_learned, d):
        _, cache = any_learned.run_with_cache(TOKENS)
    index = (d.positions[0] - d.values[0, 0]).double()
    w = _w_pos(any_learned).double()
    lo = index.floor().long()
    frac = (index - lo)[:, None]
    want = (1 - frac) * w[lo] + frac * w[lo + 1]
    torch.testing.assert_close(cache["hook_pos_embed"][0].double(), want, atol=1e-6, rtol=0)


def test_learned_positions_beyond_table_raise(any_learned: Any) -> None:
    hooks_before = _hook_snapshot(_warm(any_learned))
    with pytest.raises(ValueError, match="position table"):  # noqa: SIM117
        with continuous(any_learned, torch.full((8,), 10.0)):
            any_learned(TOKENS)
    assert _hook_snapshot(any_learned) == hooks_before
    assert not hasattr(any_learned, "continuous")


# --- the HookPoints ------------------------------------------------------------------------


def test_signal_hookpoints_in_cache_and_overwritable(any_rotary: Any) -> None:
    d = Durations(torch.tensor([1.0, 0.5, 2.0, 0.7, 1.3, 1.0, 0.2, 3.0]), start=0.5)
    with continuous(any_rotary, d):
        want, cache = any_rotary.run_with_cache(TOKENS)
    torch.testing.assert_close(cache["continuous.hook_durations"], d.values)
    torch.testing.assert_close(cache["continuous.hook_positions"], d.positions)

    def overwrite(x: torch.Tensor, hook: object) -> torch.Tensor:
        return d.values.expand_as(x).clone()

    with continuous(any_rotary, Durations.ones(1, 8, start=0.5)):
        got = any_rotary.run_with_hooks(
            TOKENS, fwd_hooks=[("continuous.hook_durations", overwrite)]
        )
        again = any_rotary(TOKENS)  # the user's temporary hook is gone again
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(again, any_rotary(TOKENS), atol=1e-5, rtol=0)


def test_overwriting_positions_moves_only_positions(any_rotary: Any) -> None:
    d = Durations(torch.tensor([1.0, 0.5, 2.0, 0.7, 1.3, 1.0, 0.2, 3.0]))
    with continuous(any_rotary, d, attention=False):
        want = any_rotary(TOKENS)
    with continuous(any_rotary, Durations.ones(1, 8), attention=False):
        got = any_rotary.run_with_hooks(
            TOKENS,
            fwd_hooks=[("continuous.hook_positions", lambda x, hook: d.positions.clone())],
        )
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_layers_subset_only_touches_those_scores(any_rotary: Any) -> None:
    d = Durations(torch.tensor([1.0, 0.5, 2.0, 0.7, 1.3, 1.0, 0.2, 3.0]))
    with continuous(any_rotary, d, positions=False, layers=[1]):
        _, cache = any_rotary.run_with_cache(TOKENS)
    _, plain = any_rotary.run_with_cache(TOKENS)
    torch.testing.assert_close(cache["attn_scores", 0], plain["attn_scores", 0])
    diff = cache["attn_scores", 1] - plain["attn_scores", 1]
    causal = torch.ones(8, 8, dtype=torch.bool).tril().expand_as(diff)
    want = torch.log(d.values)[:, None, None, :].expand_as(diff)
    torch.testing.assert_close(diff[causal], want[causal])
    assert bool((cache["attn_scores", 1][~causal] < -1e30).all())  # still masked


# --- hook hygiene --------------------------------------------------------------------------


def _modules(model: Any) -> list[torch.nn.Module]:
    """Every module of the model; for a bridge also the wrapped Hugging Face model's."""
    found = {id(m): m for m in model.modules()}
    hf = getattr(model, "original_model", None)
    if isinstance(hf, torch.nn.Module):
        found |= {id(m): m for m in hf.modules()}
    return list(found.values())


def _warm(model: Any) -> Any:
    """Run a forward and a cached forward: a bridge wires some hooks of its own on first use
    (capture pre-hooks on its norms, forward hooks of ``run_with_cache`` on Hugging Face
    blocks), once; snapshots are taken after that."""
    model(TOKENS)
    model.run_with_cache(TOKENS)
    return model


def _hook_snapshot(model: Any) -> dict[str, Any]:
    """Every hook of the model: each HookPoint's hooks (by identity and permanence), the
    HookPoint names, and every torch module's forward (pre-)hooks (by handle id)."""
    points = {
        f"{name}:{direction}": [(id(h), h.is_permanent) for h in getattr(hp, f"{direction}_hooks")]
        for name, hp in model.hook_dict.items()
        for direction in ("fwd", "bwd")
    }
    torch_hooks = {
        f"{type(m).__name__}@{id(m)}": (
            list(m._forward_pre_hooks),
            list(m._forward_hooks),
            list(m._backward_hooks),
        )
        for m in _modules(model)
    }
    return points | {"_names": sorted(model.hook_dict), "_torch": torch_hooks}


@pytest.mark.parametrize("fail", [False, True])
def test_hooks_identical_before_and_after(make_tiny: MakeTiny, fail: bool) -> None:
    model = _warm(make_tiny("rotary"))
    plain = model(TOKENS)
    model.add_hook("blocks.0.attn.hook_attn_scores", lambda x, hook: None, is_permanent=True)
    model.add_hook("blocks.1.attn.hook_rot_k", lambda x, hook: None)
    model.add_hook("blocks.0.hook_resid_pre", lambda x, hook: None, dir="bwd")
    before = _hook_snapshot(model)
    names_before = set(model.hook_dict)

    class Boom(Exception):
        pass

    try:
        with continuous(model, Durations.from_spans(8, [(1, 2)], value=0.5)) as handle:
            assert "continuous.hook_durations" in model.hook_dict
            inside = model(TOKENS)
            # run_with_hooks resets every non-permanent hook: the mechanism must survive
            model.run_with_hooks(
                TOKENS,
                fwd_hooks=[
                    ("blocks.0.hook_mlp_out", lambda x, hook: None),
                    ("blocks.0.hook_resid_post", lambda x, hook: None),  # an alias on a bridge
                ],
            )
            cached, _ = model.run_with_cache(TOKENS)
            torch.testing.assert_close(cached, inside)
            torch.testing.assert_close(model(TOKENS), inside)
            assert (inside - plain).abs().max() > 1e-4
            assert handle.signal is model.continuous
            if fail:
                raise Boom
    except Boom:
        pass
    after = _hook_snapshot(model)
    assert after == before
    assert set(model.hook_dict) == names_before
    assert not hasattr(model, "continuous")
    torch.testing.assert_close(model(TOKENS), plain, atol=0, rtol=0)
    torch.testing.assert_close(model(TOKENS), make_tiny("rotary")(TOKENS), atol=0, rtol=0)


def test_mechanism_survives_reset_hooks(any_rotary: Any) -> None:
    with continuous(any_rotary, Durations.from_spans(8, [(1, 2)], value=0.5)):
        inside = any_rotary(TOKENS)
        any_rotary.reset_hooks()  # removes every non-permanent hook
        torch.testing.assert_close(any_rotary(TOKENS), inside)
    assert (any_rotary(TOKENS) - inside).abs().max() > 1e-4


def test_install_and_remove(any_learned: Any) -> None:
    before = _hook_snapshot(_warm(any_learned))
    handle = install_continuous(
        any_learned, Durations.from_spans(8, [(0, 3)], value=0.5), layers=[0]
    )
    with pytest.raises(ValueError, match="already"):
        install_continuous(any_learned, Durations.ones(1, 8))
    changed = any_learned(TOKENS)
    handle.durations = Durations.ones(1, 8)
    torch.testing.assert_close(
        any_learned(TOKENS), any_learned.run_with_hooks(TOKENS), atol=1e-6, rtol=0
    )
    assert remove_continuous(any_learned) is True
    assert remove_continuous(any_learned) is False
    handle.remove()  # idempotent
    assert _hook_snapshot(any_learned) == before
    assert (any_learned(TOKENS) - changed).abs().max() > 1e-4


def test_patching_runs_are_continuous(any_rotary: Any) -> None:
    from transformer_lens import patching

    d = Durations.from_spans(8, [(2, 5)], value=0.3)
    with continuous(any_rotary, d):
        want = any_rotary(TOKENS)
        _, cache = any_rotary.run_with_cache(TOKENS)
        result = patching.generic_activation_patch(
            any_rotary,
            TOKENS,
            cache,
            patching_metric=lambda logits: logits[0, -1, 0],
            patch_setter=patching.layer_pos_patch_setter,
            activation_name="resid_pre",
            index_axis_names=("layer", "pos"),
        )
    # patching a run with its own activations changes nothing: every run was continuous
    torch.testing.assert_close(
        result, torch.full_like(result, want[0, -1, 0].item()), atol=1e-4, rtol=0
    )


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["alibi", "shortformer"])
def test_unsupported_schemes_named(scheme: str) -> None:
    model = tiny_model("learned", positional_embedding_type=scheme)
    before = _hook_snapshot(model)
    with pytest.raises(ValueError, match=scheme):
        install_continuous(model, Durations.ones(1, 8))
    assert _hook_snapshot(model) == before and not hasattr(model, "continuous")
    with continuous(model, Durations.from_spans(8, [(1, 1)], value=0.0), positions=False):
        model(TOKENS)


def _tiny_bloom() -> Any:
    """A ``TransformerBridge`` around a tiny random Hugging Face Bloom (ALiBi positions)."""
    import transformers
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

    torch.manual_seed(0)
    config = transformers.BloomConfig(vocab_size=50, hidden_size=64, n_layer=2, n_head=4)
    config._attn_implementation = "eager"
    hf = transformers.BloomForCausalLM(config).eval()
    return build_bridge_from_module(hf, "BloomForCausalLM", hf_config=hf.config).eval()


def test_unsupported_scheme_named_on_bridge() -> None:
    """The bridge counterpart: Bloom's ALiBi has no real positions; attention alone works."""
    model = _warm(_tiny_bloom())
    assert model.cfg.positional_embedding_type == "alibi"
    before = _hook_snapshot(model)
    plain = model(TOKENS)
    with pytest.raises(ValueError, match="alibi"):
        install_continuous(model, Durations.ones(1, 8))
    assert _hook_snapshot(model) == before and not hasattr(model, "continuous")
    with continuous(model, Durations.ones(1, 8), positions=False):
        ones = model(TOKENS)
    with continuous(model, Durations.from_spans(8, [(1, 2)], value=0.0), positions=False):
        removed = model(TOKENS)
    assert _hook_snapshot(model) == before and not hasattr(model, "continuous")
    torch.testing.assert_close(ones, plain, atol=1e-6, rtol=0)
    assert (removed - plain).abs().max() > 1e-4  # log d reached Bloom's attention scores


def test_shape_errors(any_rotary: Any) -> None:
    with continuous(any_rotary, Durations.ones(3, 8)), pytest.raises(ValueError, match="rows"):
        any_rotary(TOKENS.expand(2, -1))
    with continuous(any_rotary, Durations.ones(1, 7)), pytest.raises(ValueError, match="cover 7"):
        any_rotary(TOKENS)
    with pytest.raises(ValueError, match="layers"):
        install_continuous(any_rotary, Durations.ones(1, 8), layers=[5])
    assert not hasattr(any_rotary, "continuous")


def test_durations_validation() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        Durations(torch.tensor([1.0, -0.5]))
    with pytest.raises(ValueError, match="finite"):
        Durations(torch.tensor([1.0, math.inf]))
    with pytest.raises(ValueError, match="spans"):
        Durations.from_spans(4, [(2, 5)], value=0.5)
    d = Durations.from_spans(6, [(1, 2), (-2, -1)], value=torch.tensor([0.5, 3.0]))
    assert d.values.shape == (2, 6)
    torch.testing.assert_close(d.positions, 0.0 + d.values.cumsum(-1))


# --- zero durations: the rule of ContinuousSignal.forward ----------------------------------
ZERO_ROW = r"continuous.hook_durations leave row {} without a token of positive duration"


def _zero_row(row: int, values: list[float]) -> Callable[..., torch.Tensor]:
    def hook(d: torch.Tensor, hook: Any) -> torch.Tensor:
        d = d.clone()
        d[row] = torch.tensor(values)
        return d

    return hook


@pytest.mark.parametrize("kind", ["rotary", "learned"])
def test_zero_prefix_is_the_prompt_without_it(make_tiny: MakeTiny, kind: str) -> None:
    """Allowed side: an all-zero prefix leaves each later token exactly the logits of the
    prompt without the prefix at the same positions (the prefix's own positions read no
    attention). The table origin is ``d_0 = 0`` here, so the kept tokens sit at table
    indices ``1, 2, ...``: the shortened prompt with ``start=1`` (a learned table tells)."""
    model = make_tiny(kind)
    with continuous(model, torch.tensor([0.0, 0, 0, 1, 1, 1, 1, 1])):
        cut = model(TOKENS)
    with continuous(model, Durations(torch.ones(5), start=1.0)):
        short = model(TOKENS[:, 3:])
    torch.testing.assert_close(cut[:, 3:], short, atol=1e-5, rtol=0)
    assert torch.isfinite(cut).all()
    # the boundary: only the last token keeps a duration
    with continuous(model, torch.tensor([0.0] * 7 + [1.0])):
        last = model(TOKENS)
    with continuous(model, Durations(torch.ones(1), start=1.0)):
        torch.testing.assert_close(last[:, -1:], model(TOKENS[:, -1:]), atol=1e-5, rtol=0)


def test_row_without_positive_duration_is_refused(any_rotary: Any) -> None:
    """Refused side: one row of the batch zeroed by a user's hook (the row is named); the
    boundary row ``[0, ..., 0, 1]`` passes."""
    tokens = torch.cat([TOKENS, TOKENS.flip(-1)])
    with continuous(any_rotary, torch.ones(8)):
        with pytest.raises(ValueError, match=ZERO_ROW.format(1) + r": row 1 = \[0, 0, 0"):
            any_rotary.run_with_hooks(
                tokens, fwd_hooks=[("continuous.hook_durations", _zero_row(1, [0.0] * 8))]
            )
        logits = any_rotary.run_with_hooks(
            tokens, fwd_hooks=[("continuous.hook_durations", _zero_row(1, [0.0] * 7 + [1.0]))]
        )
    assert torch.isfinite(logits).all()


def test_zero_durations_and_padding(any_learned: Any) -> None:
    """Pads do not count either way: zero pads beside positive real tokens pass (and equal
    the unpadded run); positive pads beside all-zero real tokens are refused."""
    tokens = torch.tensor([[0, 0, 0, 9, 22, 5], [3, 17, 5, 9, 22, 5]])
    mask = torch.ones_like(tokens)
    mask[0, :3] = 0
    ok = torch.tensor([[0.0, 0, 0, 1, 0.5, 2], [1, 1, 1, 1, 1, 1]])
    with continuous(any_learned, ok):
        padded = any_learned(tokens, attention_mask=mask)
    with continuous(any_learned, ok[0, 3:]):
        alone = any_learned(tokens[:1, 3:])
    torch.testing.assert_close(padded[:1, 3:], alone, atol=1e-5, rtol=0)
    bad = torch.tensor([[3.0, 3, 3, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    message = ZERO_ROW.format(0) + r" \(pad positions do not count\): row 0 = \[3, 3, 3, 0"
    with continuous(any_learned, bad), pytest.raises(ValueError, match=message):
        any_learned(tokens, attention_mask=mask)


def test_zero_durations_without_the_attention_term(any_rotary: Any) -> None:
    """With ``attention=False`` durations only move positions: a zero row is allowed."""
    with continuous(any_rotary, torch.ones(8), attention=False):
        logits = any_rotary.run_with_hooks(
            TOKENS, fwd_hooks=[("continuous.hook_durations", _zero_row(0, [0.0] * 8))]
        )
    assert torch.isfinite(logits).all()


# --- padding and the KV cache --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rotary", "learned"])
def test_left_padding_matches_unpadded_runs(make_tiny: MakeTiny, kind: str) -> None:
    model = make_tiny(kind)
    short = torch.tensor([4, 9, 13, 2, 7])
    long = TOKENS[0]
    d_short = torch.tensor([1.0, 0.5, 2.0, 0.3, 1.0])
    d_long = torch.tensor([1.0, 0.5, 2.0, 0.7, 1.3, 1.0, 0.2, 3.0])
    pad = long.shape[0] - short.shape[0]
    tokens = torch.stack([torch.cat([torch.zeros(pad, dtype=torch.long), short]), long])
    mask = torch.ones_like(tokens)
    mask[0, :pad] = 0
    values = torch.stack([torch.cat([torch.full((pad,), 7.0), d_short]), d_long])
    with continuous(model, Durations(values, start=0.2)):
        batched = model(tokens, attention_mask=mask)
    for row, (toks, d) in enumerate(((short, d_short), (long, d_long))):
        with continuous(model, Durations(d, start=0.2)):
            alone = model(toks[None])
        real = batched[row, -toks.shape[0] :]  # every real token, not only the last
        torch.testing.assert_close(real, alone[0], atol=1e-5, rtol=0)


def _cached_steps(model: Any, backend: str, tokens: torch.Tensor, n_prompt: int) -> torch.Tensor:
    """Logits of the prompt, then of each later token fed alone with the key/value cache:
    TransformerLens' cache on ``HookedTransformer``, Hugging Face's on a bridge."""
    steps = []
    if backend == "hooked":
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

        cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, 1)
        for lo, hi in [(0, n_prompt)] + [(i, i + 1) for i in range(n_prompt, tokens.shape[1])]:
            mask = torch.ones(1, hi - lo, dtype=torch.long)
            steps.append(model(tokens[:, lo:hi], past_kv_cache=cache, attention_mask=mask))
    else:
        logits, hf_cache = model(tokens[:, :n_prompt], return_type="logits_and_cache")
        steps.append(logits)
        for i in range(n_prompt, tokens.shape[1]):
            assert hf_cache.get_seq_length() == i
            logits, hf_cache = model(
                tokens[:, i : i + 1],
                past_key_values=hf_cache,
                use_cache=True,
                return_type="logits_and_cache",
            )
            steps.append(logits)
    return torch.cat(steps, dim=1)


@pytest.mark.parametrize("kind", ["rotary", "rotary-partial", "learned"])
def test_kv_cache_continues_with_duration_one(make_tiny: MakeTiny, backend: str, kind: str) -> None:
    """Token by token with the cache, tokens beyond the durations get duration 1: equal to one
    full forward with the durations padded by ones."""
    model = make_tiny(kind)
    d = torch.tensor([1.0, 0.5, 2.0, 0.7, 0.0])
    with continuous(model, torch.cat([d, torch.ones(3)])):
        full = model(TOKENS)
    with continuous(model, d):
        stepped = _cached_steps(model, backend, TOKENS, 5)
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=0)
    with continuous(model, torch.ones(5)):  # the test can fail: the durations matter
        assert (_cached_steps(model, backend, TOKENS, 5) - full).abs().max() > 1e-4


def test_generate_with_kv_cache_is_continuous(make_tiny: MakeTiny) -> None:
    """``generate(use_past_kv_cache=True)`` under durations: greedy tokens and their logits
    are those of full forwards with the durations padded by ones."""
    model = make_tiny("rotary")
    prompt, d = TOKENS[:, :5], torch.tensor([1.0, 0.5, 2.0, 0.7, 0.0])
    with continuous(model, d):
        out = model.generate(
            prompt,
            max_new_tokens=3,
            do_sample=False,
            use_past_kv_cache=True,
            stop_at_eos=False,
            verbose=False,
        )
    out = out.clone()  # HookedTransformer.generate returns an inference-mode tensor
    assert out.shape == (1, 8) and torch.equal(out[:, :5], prompt)
    with continuous(model, torch.cat([d, torch.ones(2)])):
        full = model(out[:, :-1])
    torch.testing.assert_close(out[0, 5:], full[0, 4:].argmax(-1))


# --- blending embeddings -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_blend_endpoints_and_midpoint(any_learned: Any, method: str) -> None:
    from tl_continuous import blend_embeddings

    a, b = TOKENS[0], TOKENS[0].clone()
    b[3] = 30
    logits = blend_embeddings(any_learned, a, b, torch.tensor([0.0, 0.3, 1.0]), method=method)
    torch.testing.assert_close(logits[0], any_learned(a[None])[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits[2], any_learned(b[None])[0], atol=1e-5, rtol=0)
    # the midpoint: an independent forward with the blended embedding written by hand
    ea, eb = any_learned.W_E[a[3]].double(), any_learned.W_E[b[3]].double()
    if method == "lerp":
        mid = 0.7 * ea + 0.3 * eb
    else:
        omega = torch.arccos(ea @ eb / (ea.norm() * eb.norm()))
        mid = (torch.sin(0.7 * omega) * ea + torch.sin(0.3 * omega) * eb) / torch.sin(omega)

    def put(x: torch.Tensor, hook: object) -> torch.Tensor:
        x = x.clone()
        x[:, 3] = mid.float()
        return x

    want = any_learned.run_with_hooks(a[None], fwd_hooks=[("hook_embed", put)])
    torch.testing.assert_close(logits[1], want[0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="same length"):
        blend_embeddings(any_learned, a, b[:-1], [0.5])


def test_blend_composes_with_durations(any_rotary: Any) -> None:
    from tl_continuous import blend_embeddings

    d = Durations.from_spans(8, [(2, 4)], value=0.4)
    with continuous(any_rotary, d):
        blended = blend_embeddings(any_rotary, TOKENS[0], TOKENS[0].flip(0), [0.0, 1.0])
        want = any_rotary(torch.stack([TOKENS[0], TOKENS[0].flip(0)]))
    torch.testing.assert_close(blended, want, atol=1e-5, rtol=0)


def test_from_word_on_string_tokens() -> None:
    toks = ["<bos>", "Q", ":", " apple", " pine", "apple", " app", "les", " apple", "?"]
    d = Durations.from_word(toks, None, "apple", value=0.25, start=2.0)
    assert d.values[0].tolist() == [1, 1, 1, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 1]
    assert d.start == 2.0
    d = Durations.from_word(toks, None, "apples", value=0.5, first_to_last=False)
    assert d.values[0].tolist() == [1, 1, 1, 1, 1, 1, 0.5, 0.5, 1, 1]
    with pytest.raises(ValueError, match="does not occur"):
        Durations.from_word(toks, None, "pear", value=0.5)
    d = Durations.from_word(toks, None, "apple", value=0.5, occurrences=[0])
    assert d.values[0].tolist() == [1, 1, 1, 0.5, 1, 1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="occurrences"):
        Durations.from_word(toks, None, "apple", value=0.5, occurrences=[5])


def _word_tokenizer(tmp_path: Any) -> Any:
    """A byte-level word tokenizer over the tiny models' 50 ids (``" apple"`` is one token),
    saved and reloaded as TransformerLens reloads tokenizers by name."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    words = ["<bos>", "<unk>", "I", "Ġsaw", "Ġapple", "Ġpear", "Ġ."]
    words += [f"w{i}" for i in range(50 - len(words))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", unk_token="<unk>", pad_token="<unk>"
    )
    fast.save_pretrained(tmp_path / "tokenizer")
    return AutoTokenizer.from_pretrained(tmp_path / "tokenizer")


def test_from_word_on_a_model_follows_its_tokenisation(
    any_rotary: Any, backend: str, tmp_path: Any
) -> None:
    model, tokenizer = any_rotary, _word_tokenizer(tmp_path)
    if backend == "hooked":
        model.set_tokenizer(tokenizer)
    else:
        model.tokenizer = tokenizer  # TransformerBridge re-wires it in the property setter
    prompt = "I saw apple pear apple ."
    tokens = model.to_tokens(prompt)
    str_tokens = model.to_str_tokens(prompt)
    assert len(str_tokens) == tokens.shape[1]
    d = Durations.from_word(model, prompt, "apple", value=0.5, start=1.0)
    first = str_tokens.index(" apple")  # after BOS where the model prepends one
    want = [1.0] * len(str_tokens)
    want[first : first + 3] = [0.5, 0.5, 0.5]
    assert d.values[0].tolist() == want and d.start == 1.0
    assert Durations.from_word(model, prompt, "apple", value=0.5, first_to_last=False).values[
        0
    ].tolist() == [0.5 if t == " apple" else 1.0 for t in str_tokens]
    with continuous(model, d):  # the durations fit the model's own tokens
        shrunk = model(tokens)
    assert (shrunk - model(tokens)).abs().max() > 1e-4
    with pytest.raises(ValueError, match="prompt must be given"):
        Durations.from_word(model, None, "apple")


def test_public_continuous_is_the_function_not_the_subpackage() -> None:
    """``tl_continuous.continuous`` names both a subpackage and the public context manager."""
    import subprocess
    import sys

    code = (
        "import inspect\n"
        "from tl_continuous.continuous.durations import Durations\n"
        "import tl_continuous\n"
        "from tl_continuous import continuous\n"
        "assert inspect.isfunction(continuous), continuous\n"
        "assert tl_continuous.continuous is continuous\n"
        "from tl_continuous.continuous.signal import install_continuous\n"
        "assert tl_continuous.continuous is continuous\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
