"""The continuous-token mechanism on tiny models: identities, independent references, hygiene."""

from __future__ import annotations

import math

import pytest
import torch
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

from tl_continuous import Durations, continuous, install_continuous, remove_continuous
from tl_continuous.tiny import tiny_model

TOKENS = torch.tensor([[3, 17, 5, 9, 22, 5, 41, 8]])


def _final(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, -1].log_softmax(-1)


# --- all-ones durations are the discrete model ------------------------------------------


@pytest.mark.parametrize("kind", ["rotary", "rotary-partial", "learned"])
def test_all_ones_reproduce_plain_logits(kind: str) -> None:
    model = tiny_model(kind)
    tokens = torch.cat([TOKENS, TOKENS.flip(-1)])
    plain = model(tokens)
    with continuous(model, Durations.ones(2, tokens.shape[1])):
        cont = model(tokens)
    torch.testing.assert_close(cont, plain, atol=1e-5, rtol=0)


def test_nontrivial_durations_change_the_output(tiny_rotary: HookedTransformer) -> None:
    plain = tiny_rotary(TOKENS)
    with continuous(tiny_rotary, Durations.from_spans(8, [(2, 4)], value=0.3)):
        cont = tiny_rotary(TOKENS)
    assert (cont - plain).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["rotary", "learned"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_dtypes(kind: str, dtype: torch.dtype) -> None:
    ref = tiny_model(kind, dtype=torch.float32)
    model = tiny_model(kind, dtype=dtype)
    model.load_state_dict(ref.state_dict())  # same weights, rounded to dtype
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


@pytest.fixture
def one_layer_nopos() -> HookedTransformer:
    return tiny_model("nopos", n_layers=1)


def test_duration_two_is_token_written_twice(one_layer_nopos: HookedTransformer) -> None:
    model = one_layer_nopos
    twice = torch.tensor([[3, 17, 5, 5, 9, 22]])
    want = _final(model(twice))
    with continuous(model, torch.tensor([1.0, 1.0, 2.0, 1.0, 1.0])):
        got = _final(model(torch.tensor([[3, 17, 5, 9, 22]])))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_duration_zero_is_token_removed(one_layer_nopos: HookedTransformer) -> None:
    model = one_layer_nopos
    want = _final(model(torch.tensor([[3, 17, 9, 22]])))
    with continuous(model, torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0])):
        got = _final(model(torch.tensor([[3, 17, 5, 9, 22]])))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("k", [3, 5])
def test_integer_duration_is_k_repetitions(one_layer_nopos: HookedTransformer, k: int) -> None:
    model = one_layer_nopos
    want = _final(model(torch.tensor([[3, 17] + [5] * k + [9, 22]])))
    with continuous(model, torch.tensor([1.0, 1.0, float(k), 1.0, 1.0])):
        got = _final(model(torch.tensor([[3, 17, 5, 9, 22]])))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_repetition_identity_fails_with_two_layers() -> None:
    """The identity is one-layer only: the test above could fail."""
    model = tiny_model("nopos", n_layers=2)
    want = _final(model(torch.tensor([[3, 17, 5, 5, 9, 22]])))
    with continuous(model, torch.tensor([1.0, 1.0, 2.0, 1.0, 1.0])):
        got = _final(model(torch.tensor([[3, 17, 5, 9, 22]])))
    assert (got - want).abs().max() > 1e-4


# --- scaling and shifting -----------------------------------------------------------------


def _patterns(model: HookedTransformer, durations: Durations, **kw: bool) -> list[torch.Tensor]:
    with continuous(model, durations, **kw):
        _, cache = model.run_with_cache(TOKENS, names_filter=lambda n: n.endswith("hook_pattern"))
    return [cache["pattern", layer] for layer in range(model.cfg.n_layers)]


@pytest.mark.parametrize("scale", [0.01, 0.37, 1.5])
def test_scaling_leaves_patterns_unchanged(scale: float) -> None:
    d = Durations(torch.tensor([1.0, 0.5, 2.0, 0.7, 1.3, 1.0, 0.2, 3.0]))
    # no positions at all (nopos) and rotary with positions switched off
    for model, kw in (
        (tiny_model("nopos", n_layers=2), {}),
        (tiny_model("rotary"), {"positions": False}),
    ):
        base = _patterns(model, d, **kw)
        scaled = _patterns(model, d.scaled(scale), **kw)
        for a, b in zip(base, scaled, strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    # with rotary positions on, scaling does move the pattern (it changes positions)
    rotary = tiny_model("rotary")
    moved = _patterns(rotary, d.scaled(0.37))
    assert max((a - b).abs().max() for a, b in zip(_patterns(rotary, d), moved, strict=True)) > 1e-4


@pytest.mark.parametrize("kind", ["rotary", "rotary-partial"])
def test_shifting_positions_is_a_noop_for_rotary(kind: str) -> None:
    model = tiny_model(kind)
    d = Durations(torch.tensor([1.0, 0.5, 2.0, 0.7, 1.3, 1.0, 0.2, 3.0]))
    with continuous(model, d):
        base = model(TOKENS)
    for shift in (3.0, 11.7, -0.4):
        with continuous(model, d.shifted(shift)):
            torch.testing.assert_close(model(TOKENS), base, atol=1e-5, rtol=0)


def test_shifting_positions_matters_for_learned(tiny_learned: HookedTransformer) -> None:
    d = Durations.ones(1, 8)
    with continuous(tiny_learned, d):
        base = tiny_learned(TOKENS)
    with continuous(tiny_learned, d.shifted(2.5)):
        moved = tiny_learned(TOKENS)
    assert (moved - base).abs().max() > 1e-3


# --- independent references ----------------------------------------------------------------


def _rotate_reference(x: torch.Tensor, pos: torch.Tensor, cfg: object) -> torch.Tensor:
    """Rotate ``x [batch, pos, head, d_head]`` by real positions, from the formula."""
    rd = cfg.rotary_dim  # type: ignore[attr-defined]
    half = rd // 2
    omega = cfg.rotary_base ** (-torch.arange(half, dtype=torch.float64) * 2 / rd)  # type: ignore[attr-defined]
    angle = pos.double()[..., None, None] * omega  # [batch, pos, 1, half]
    cos, sin = angle.cos(), angle.sin()
    x = x.double()
    if cfg.rotary_adjacent_pairs:  # type: ignore[attr-defined]
        a, b = x[..., 0:rd:2], x[..., 1:rd:2]
    else:
        a, b = x[..., :half], x[..., half:rd]
    ra, rb = a * cos - b * sin, a * sin + b * cos
    out = x.clone()
    if cfg.rotary_adjacent_pairs:  # type: ignore[attr-defined]
        out[..., 0:rd:2], out[..., 1:rd:2] = ra, rb
    else:
        out[..., :half], out[..., half:rd] = ra, rb
    return out


@pytest.mark.parametrize("kind", ["rotary", "rotary-partial"])
def test_fractional_rotary_matches_rotation_formula(kind: str) -> None:
    model = tiny_model(kind)
    d = Durations(torch.tensor([[1.0, 0.25, 2.5, 0.7, 1.3, 0.0, 0.2, 3.1]]), start=0.6)
    with continuous(model, d):
        _, cache = model.run_with_cache(TOKENS)
    pos = d.positions - d.values[:, :1]  # table index convention (see positions.py)
    log_d = torch.log(d.values.double())
    for layer in range(model.cfg.n_layers):
        q = _rotate_reference(cache["q", layer], pos, model.cfg)
        k = _rotate_reference(cache["k", layer], pos, model.cfg)
        torch.testing.assert_close(
            cache[f"blocks.{layer}.attn.hook_rot_q"].double(), q, atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            cache[f"blocks.{layer}.attn.hook_rot_k"].double(), k, atol=1e-5, rtol=0
        )
        k = k.repeat_interleave(model.cfg.n_heads // k.shape[2], dim=2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(model.cfg.d_head)
        causal = torch.ones(8, 8, dtype=torch.bool).tril()
        scores = scores.masked_fill(~causal, -math.inf) + log_d[:, None, None, :]
        got = cache["attn_scores", layer].double()
        finite = torch.isfinite(scores)
        assert torch.equal(finite, torch.isfinite(got))
        torch.testing.assert_close(got[finite], scores[finite], atol=1e-5, rtol=0)


def test_learned_positions_interpolate_w_pos(tiny_learned: HookedTransformer) -> None:
    d = Durations(torch.tensor([1.0, 0.25, 2.5, 0.7, 1.3, 0.0, 0.2, 3.1]), start=0.5)
    with continuous(tiny_learned, d):
        _, cache = tiny_learned.run_with_cache(TOKENS)
    index = (d.positions[0] - d.values[0, 0]).double()
    w = tiny_learned.W_pos.detach().double()
    lo = index.floor().long()
    frac = (index - lo)[:, None]
    want = (1 - frac) * w[lo] + frac * w[lo + 1]
    torch.testing.assert_close(cache["hook_pos_embed"][0].double(), want, atol=1e-6, rtol=0)


def test_learned_positions_beyond_table_raise(tiny_learned: HookedTransformer) -> None:
    hooks_before = _hook_snapshot(tiny_learned)
    with pytest.raises(ValueError, match="position table"):  # noqa: SIM117
        with continuous(tiny_learned, torch.full((8,), 10.0)):
            tiny_learned(TOKENS)
    assert _hook_snapshot(tiny_learned) == hooks_before
    assert not hasattr(tiny_learned, "continuous")


# --- the HookPoints ------------------------------------------------------------------------


def test_signal_hookpoints_in_cache_and_overwritable(tiny_rotary: HookedTransformer) -> None:
    d = Durations(torch.tensor([1.0, 0.5, 2.0, 0.7, 1.3, 1.0, 0.2, 3.0]), start=0.5)
    with continuous(tiny_rotary, d):
        want, cache = tiny_rotary.run_with_cache(TOKENS)
    torch.testing.assert_close(cache["continuous.hook_durations"], d.values)
    torch.testing.assert_close(cache["continuous.hook_positions"], d.positions)

    def overwrite(x: torch.Tensor, hook: object) -> torch.Tensor:
        return d.values.expand_as(x).clone()

    with continuous(tiny_rotary, Durations.ones(1, 8, start=0.5)):
        got = tiny_rotary.run_with_hooks(
            TOKENS, fwd_hooks=[("continuous.hook_durations", overwrite)]
        )
        again = tiny_rotary(TOKENS)  # the user's temporary hook is gone again
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(again, tiny_rotary(TOKENS), atol=1e-5, rtol=0)


def test_overwriting_positions_moves_only_positions(tiny_rotary: HookedTransformer) -> None:
    d = Durations(torch.tensor([1.0, 0.5, 2.0, 0.7, 1.3, 1.0, 0.2, 3.0]))
    with continuous(tiny_rotary, d, attention=False):
        want = tiny_rotary(TOKENS)
    with continuous(tiny_rotary, Durations.ones(1, 8), attention=False):
        got = tiny_rotary.run_with_hooks(
            TOKENS,
            fwd_hooks=[("continuous.hook_positions", lambda x, hook: d.positions.clone())],
        )
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_layers_subset_only_touches_those_scores(tiny_rotary: HookedTransformer) -> None:
    d = Durations(torch.tensor([1.0, 0.5, 2.0, 0.7, 1.3, 1.0, 0.2, 3.0]))
    with continuous(tiny_rotary, d, positions=False, layers=[1]):
        _, cache = tiny_rotary.run_with_cache(TOKENS)
    _, plain = tiny_rotary.run_with_cache(TOKENS)
    torch.testing.assert_close(cache["attn_scores", 0], plain["attn_scores", 0])
    diff = cache["attn_scores", 1] - plain["attn_scores", 1]
    finite = torch.isfinite(diff)
    torch.testing.assert_close(
        diff,
        torch.log(d.values)[:, None, None, :].expand_as(diff).where(finite, diff),
        equal_nan=True,
    )


# --- hook hygiene --------------------------------------------------------------------------


def _hook_snapshot(model: HookedTransformer) -> dict[str, list[tuple[int, bool]]]:
    return {
        f"{name}:{direction}": [(id(h), h.is_permanent) for h in getattr(hp, f"{direction}_hooks")]
        for name, hp in model.hook_dict.items()
        for direction in ("fwd", "bwd")
    } | {"_torch": [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]}  # type: ignore[dict-item]


@pytest.mark.parametrize("fail", [False, True])
def test_hooks_identical_before_and_after(tiny_rotary: HookedTransformer, fail: bool) -> None:
    model = tiny_rotary
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
                TOKENS, fwd_hooks=[("blocks.0.hook_mlp_out", lambda x, hook: None)]
            )
            torch.testing.assert_close(model(TOKENS), inside)
            assert handle.signal is model.continuous
            if fail:
                raise Boom
    except Boom:
        pass
    after = _hook_snapshot(model)
    assert after == before
    assert set(model.hook_dict) == names_before
    torch.testing.assert_close(model(TOKENS), tiny_model("rotary")(TOKENS))


def test_mechanism_survives_reset_hooks(tiny_rotary: HookedTransformer) -> None:
    with continuous(tiny_rotary, Durations.from_spans(8, [(1, 2)], value=0.5)):
        inside = tiny_rotary(TOKENS)
        tiny_rotary.reset_hooks()  # removes every non-permanent hook
        torch.testing.assert_close(tiny_rotary(TOKENS), inside)
    assert (tiny_rotary(TOKENS) - inside).abs().max() > 1e-4


def test_install_and_remove(tiny_learned: HookedTransformer) -> None:
    before = _hook_snapshot(tiny_learned)
    handle = install_continuous(
        tiny_learned, Durations.from_spans(8, [(0, 3)], value=0.5), layers=[0]
    )
    with pytest.raises(ValueError, match="already"):
        install_continuous(tiny_learned, Durations.ones(1, 8))
    changed = tiny_learned(TOKENS)
    handle.durations = Durations.ones(1, 8)
    torch.testing.assert_close(
        tiny_learned(TOKENS), tiny_learned.run_with_hooks(TOKENS), atol=1e-6, rtol=0
    )
    assert remove_continuous(tiny_learned) is True
    assert remove_continuous(tiny_learned) is False
    handle.remove()  # idempotent
    assert _hook_snapshot(tiny_learned) == before
    assert (tiny_learned(TOKENS) - changed).abs().max() > 1e-4


def test_patching_runs_are_continuous(tiny_rotary: HookedTransformer) -> None:
    from transformer_lens import patching

    d = Durations.from_spans(8, [(2, 5)], value=0.3)
    with continuous(tiny_rotary, d):
        want = tiny_rotary(TOKENS)
        _, cache = tiny_rotary.run_with_cache(TOKENS)
        result = patching.generic_activation_patch(
            tiny_rotary,
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


def test_shape_errors(tiny_rotary: HookedTransformer) -> None:
    with continuous(tiny_rotary, Durations.ones(3, 8)), pytest.raises(ValueError, match="rows"):
        tiny_rotary(TOKENS.expand(2, -1))
    with continuous(tiny_rotary, Durations.ones(1, 7)), pytest.raises(ValueError, match="cover 7"):
        tiny_rotary(TOKENS)
    with pytest.raises(ValueError, match="layers"):
        install_continuous(tiny_rotary, Durations.ones(1, 8), layers=[5])
    assert not hasattr(tiny_rotary, "continuous")


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


# --- padding and the KV cache --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rotary", "learned"])
def test_left_padding_matches_unpadded_runs(kind: str) -> None:
    model = tiny_model(kind)
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
        torch.testing.assert_close(batched[row, -1], alone[0, -1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["rotary", "learned"])
def test_kv_cache_continues_with_duration_one(kind: str) -> None:
    model = tiny_model(kind)
    d = torch.tensor([1.0, 0.5, 2.0, 0.7, 1.3, 1.0, 0.2])
    with continuous(model, torch.cat([d, torch.ones(1)])):
        full = model(TOKENS)
    with continuous(model, d):
        cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, 1)
        first = model(
            TOKENS[:, :7], past_kv_cache=cache, attention_mask=torch.ones(1, 7, dtype=torch.long)
        )
        step = model(
            TOKENS[:, 7:], past_kv_cache=cache, attention_mask=torch.ones(1, 1, dtype=torch.long)
        )
    torch.testing.assert_close(first, full[:, :7], atol=1e-5, rtol=0)
    torch.testing.assert_close(step[:, -1], full[:, -1], atol=1e-5, rtol=0)


# --- blending embeddings -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_blend_endpoints_and_midpoint(tiny_learned: HookedTransformer, method: str) -> None:
    from tl_continuous import blend_embeddings

    a, b = TOKENS[0], TOKENS[0].clone()
    b[3] = 30
    logits = blend_embeddings(tiny_learned, a, b, torch.tensor([0.0, 0.3, 1.0]), method=method)
    torch.testing.assert_close(logits[0], tiny_learned(a[None])[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits[2], tiny_learned(b[None])[0], atol=1e-5, rtol=0)
    # the midpoint: an independent forward with the blended embedding written by hand
    ea, eb = tiny_learned.W_E[a[3]].double(), tiny_learned.W_E[b[3]].double()
    if method == "lerp":
        mid = 0.7 * ea + 0.3 * eb
    else:
        omega = torch.arccos(ea @ eb / (ea.norm() * eb.norm()))
        mid = (torch.sin(0.7 * omega) * ea + torch.sin(0.3 * omega) * eb) / torch.sin(omega)

    def put(x: torch.Tensor, hook: object) -> torch.Tensor:
        x = x.clone()
        x[:, 3] = mid.float()
        return x

    want = tiny_learned.run_with_hooks(a[None], fwd_hooks=[("hook_embed", put)])
    torch.testing.assert_close(logits[1], want[0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="same length"):
        blend_embeddings(tiny_learned, a, b[:-1], [0.5])


def test_blend_composes_with_durations(tiny_rotary: HookedTransformer) -> None:
    from tl_continuous import blend_embeddings

    d = Durations.from_spans(8, [(2, 4)], value=0.4)
    with continuous(tiny_rotary, d):
        blended = blend_embeddings(tiny_rotary, TOKENS[0], TOKENS[0].flip(0), [0.0, 1.0])
        want = tiny_rotary(torch.stack([TOKENS[0], TOKENS[0].flip(0)]))
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
