"""Rotary variants on the HookedTransformer backend, against an independent rotation.

Each test builds a tiny model with one of TransformerLens 3.9's rotary variants, runs it under
fractional durations, captures the queries and keys before rotation (``hook_q`` / ``hook_k``)
and after it (``hook_rot_q`` / ``hook_rot_k``, which includes the backend's extra rotation),
and compares the latter with this file's own frequencies for that variant applied at the real
table indices. Nothing here calls TransformerLens' ``calculate_sin_cos_rotary``: the
frequencies are written out from the variants' definitions (Hugging Face's
``modeling_rope_utils``: linear, llama3 = NTK-by-parts, YaRN; Gemma 3's local base).
Each test also checks that the variant changes the rotation (it would pass vacuously if
the variant were ignored on both sides).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from tl_continuous import Durations, continuous
from tl_continuous.continuous.positions import table_index
from tl_continuous.tiny import tiny_model

TOKENS = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
DURATIONS = Durations(torch.tensor([0.7, 1.3, 0.25, 2.0, 0.5, 1.0, 3.5, 0.4]))
ROTARY_DIM = 16
BASE = 10000.0


def inverse_frequencies(variant: str, cfg: dict[str, Any], base: float) -> Tensor:
    """Angle per unit position of each rotary pair (float64), from the variant's definition."""
    inv = base ** (-torch.arange(0, ROTARY_DIM, 2, dtype=torch.float64) / ROTARY_DIM)
    if variant == "plain":
        return inv
    if variant == "linear":  # positions divided by the factor
        return inv / cfg["rotary_scaling_factor"]
    if variant == "llama3":  # NTK-by-parts: long wavelengths interpolated, short ones kept
        factor = cfg["NTK_by_parts_factor"]
        low, high = cfg["NTK_by_parts_low_freq_factor"], cfg["NTK_by_parts_high_freq_factor"]
        old = cfg["NTK_original_ctx_len"]
        out = []
        for f in inv.tolist():
            wavelen = 2 * math.pi / f
            if wavelen < old / high:
                out.append(f)
            elif wavelen > old / low:
                out.append(f / factor)
            else:
                smooth = (old / wavelen - low) / (high - low)
                out.append((1 - smooth) * f / factor + smooth * f)
        return torch.tensor(out, dtype=torch.float64)
    if variant == "yarn":  # a linear ramp between extrapolated and interpolated dimensions
        factor, orig = cfg["yarn_factor"], cfg["yarn_original_max_position_embeddings"]

        def correction_dim(rotations: float) -> float:
            return ROTARY_DIM * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(base))

        lo, hi = correction_dim(cfg["yarn_beta_fast"]), correction_dim(cfg["yarn_beta_slow"])
        if cfg["yarn_truncate"]:
            lo, hi = math.floor(lo), math.ceil(hi)
        lo, hi = max(lo, 0), min(hi, ROTARY_DIM - 1)
        if lo == hi:
            hi += 0.001
        ramp = [min(max((i - lo) / (hi - lo), 0.0), 1.0) for i in range(ROTARY_DIM // 2)]
        return torch.tensor(
            [f / factor * r + f * (1 - r) for f, r in zip(inv.tolist(), ramp, strict=True)],
            dtype=torch.float64,
        )
    raise ValueError(variant)


def rotate(x: Tensor, angles: Tensor, adjacent: bool = False) -> Tensor:
    """Rotate pairs of ``x [batch, pos, head, d_head]`` by ``angles [batch, pos, pairs]``."""
    x = x.to(torch.float64)
    cos, sin = angles.cos()[:, :, None, :], angles.sin()[:, :, None, :]
    rot = x[..., :ROTARY_DIM]
    if adjacent:
        a, b = rot[..., 0::2], rot[..., 1::2]
    else:
        a, b = rot[..., : ROTARY_DIM // 2], rot[..., ROTARY_DIM // 2 :]
    ra, rb = a * cos - b * sin, b * cos + a * sin
    out = torch.stack([ra, rb], dim=-1).flatten(-2) if adjacent else torch.cat([ra, rb], -1)
    return torch.cat([out, x[..., ROTARY_DIM:]], dim=-1)


def capture(model: Any, durations: Durations) -> dict[str, Tensor]:
    seen: dict[str, Tensor] = {}

    def keep(x: Tensor, hook: Any) -> None:
        seen[hook.name] = x.detach().clone()

    names = ("hook_q", "hook_k", "hook_rot_q", "hook_rot_k")
    hooks = [(f"blocks.{i}.attn.{n}", keep) for i in range(model.cfg.n_layers) for n in names]
    with torch.no_grad(), continuous(model, durations), model.hooks(fwd_hooks=hooks):
        model(TOKENS)
    return seen


def real_index() -> Tensor:
    values = DURATIONS.values
    return table_index(DURATIONS.positions.expand_as(values), values)


VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "linear": ("linear", {"rotary_scaling_factor": 4.0}),
    "llama3": (
        "llama3",
        {
            "use_NTK_by_parts_rope": True,
            "NTK_by_parts_factor": 8.0,
            "NTK_by_parts_low_freq_factor": 1.0,
            "NTK_by_parts_high_freq_factor": 4.0,
            "NTK_original_ctx_len": 16,
        },
    ),
    "yarn": (
        "yarn",
        {
            "use_yarn_rope": True,
            "yarn_factor": 4.0,
            "yarn_attention_factor": 1.25,
            "yarn_beta_fast": 32.0,
            "yarn_beta_slow": 1.0,
            "yarn_original_max_position_embeddings": 256,
            "yarn_truncate": True,
        },
    ),
    "yarn-untruncated": (
        "yarn",
        {
            "use_yarn_rope": True,
            "yarn_factor": 8.0,
            "yarn_attention_factor": 1.0,
            "yarn_beta_fast": 16.0,
            "yarn_beta_slow": 2.0,
            "yarn_original_max_position_embeddings": 64,
            "yarn_truncate": False,
        },
    ),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_rope_scaling_rotates_by_the_variants_frequencies(name: str) -> None:
    variant, overrides = VARIANTS[name]
    model = tiny_model("rotary", **overrides)
    seen = capture(model, DURATIONS)
    omega = inverse_frequencies(variant, overrides, BASE)
    plain = inverse_frequencies("plain", overrides, BASE)
    assert (omega - plain).abs().max() > 1e-3  # the variant changes the frequencies
    index = real_index()
    amplitude = overrides.get("yarn_attention_factor", 1.0)
    for layer in range(model.cfg.n_layers):
        for which in ("q", "k"):
            before = seen[f"blocks.{layer}.attn.hook_{which}"]
            got = seen[f"blocks.{layer}.attn.hook_rot_{which}"].to(torch.float64)
            want = amplitude * rotate(before, index[..., None] * omega)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
            unscaled = amplitude * rotate(before, index[..., None] * plain)
            assert (got - unscaled).abs().max() > 1e-2


def test_local_rotary_base_per_layer_group() -> None:
    """Gemma-3-style: local layers rotate with ``rotary_base_local``, global ones with
    ``rotary_base`` (and linear scaling, which TransformerLens applies to global layers only)."""
    overrides: dict[str, Any] = {
        "use_local_attn": True,
        "attn_types": ["local", "global", "local"],
        "window_size": 8,  # the 8 tokens fit: the window masks nothing
        "rotary_base_local": 100.0,
        "rotary_scaling_factor": 2.0,
    }
    model = tiny_model("rotary", n_layers=3, **overrides)
    seen = capture(model, DURATIONS)
    local = inverse_frequencies("plain", overrides, 100.0)
    global_ = inverse_frequencies("linear", overrides, BASE)
    index = real_index()
    for layer, omega in enumerate((local, global_, local)):
        for which in ("q", "k"):
            before = seen[f"blocks.{layer}.attn.hook_{which}"]
            got = seen[f"blocks.{layer}.attn.hook_rot_{which}"].to(torch.float64)
            torch.testing.assert_close(
                got, rotate(before, index[..., None] * omega), atol=1e-5, rtol=0
            )
    other = global_ if omega is local else local
    assert (rotate(before, index[..., None] * other) - got).abs().max() > 1e-2


def test_partial_adjacent_rotary_against_independent_rotation() -> None:
    """GPT-NeoX-like: rotary on half of each head, adjacent pairs; the rest is untouched."""
    model = tiny_model("rotary-partial")
    seen = capture(model, DURATIONS)
    dim = model.cfg.rotary_dim
    inv = float(model.cfg.rotary_base) ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    index = real_index()
    for which in ("q", "k"):
        before = seen[f"blocks.0.attn.hook_{which}"].to(torch.float64)
        got = seen[f"blocks.0.attn.hook_rot_{which}"].to(torch.float64)
        angles = (index[..., None] * inv)[:, :, None]
        cos, sin = angles.cos(), angles.sin()
        a, b = before[..., 0:dim:2], before[..., 1:dim:2]
        want = torch.stack([a * cos - b * sin, b * cos + a * sin], -1).flatten(-2)
        torch.testing.assert_close(got[..., :dim], want, atol=1e-5, rtol=0)
        torch.testing.assert_close(got[..., dim:], before[..., dim:], atol=0, rtol=0)


def test_dynamic_ntk_rope_is_refused() -> None:
    model = tiny_model("rotary", use_dynamic_ntk_rope=True)
    with (
        pytest.raises(ValueError, match="use_dynamic_ntk_rope=True"),
        continuous(model, DURATIONS),
    ):
        pass  # pragma: no cover
    assert not model.blocks[0].attn.hook_rot_q.fwd_hooks
    with continuous(model, DURATIONS, positions=False), torch.no_grad():
        model(TOKENS)  # duration-weighted attention alone is fine


def sliding_model() -> Any:
    return tiny_model("rotary", use_local_attn=True, attn_types=["local", "global"], window_size=6)


def test_sliding_window_beyond_the_window_is_refused() -> None:
    model = sliding_model()
    with torch.no_grad():
        with continuous(model, DURATIONS.values[:, :6]):
            model(TOKENS[:, :6])  # within the window: plain causal attention
        with continuous(model, DURATIONS), pytest.raises(ValueError, match="sliding window"):
            model(TOKENS)
        with continuous(model, DURATIONS, positions=False):
            model(TOKENS)  # integer positions: the window counts tokens, as the model does
    assert not model.blocks[0].attn.hook_rot_q.fwd_hooks
    assert not model.blocks[0].attn._forward_pre_hooks


def test_logn_attention_scaling_beyond_the_training_length_is_refused() -> None:
    model = tiny_model("rotary", use_logn_attn=True, train_seq_length=12)
    with torch.no_grad():
        with continuous(model, torch.ones(8)):  # positions 0..7 < 12: scaling is 1
            model(TOKENS)
        with (
            continuous(model, torch.full((8,), 2.0)),  # positions reach 15 > 12
            pytest.raises(ValueError, match="log-n attention scaling"),
        ):
            model(TOKENS)
