"""An independent, minimal re-implementation of continuous tokens for the testbed's tests.

Written from the spec only, for standard half-split RoPE (the testbed's layout) and nothing
else: log-durations added to every pre-softmax score column, and queries/keys rotated further
by ``(p_real - p_int) · ω`` with ``p_real = cumsum(d) - 1`` (RoPE is shift-invariant, so the
constant offset from the contract's ``start + cumsum(d)`` does not matter).

It serves as a cross-check of the plugin's ``continuous()`` and as the building block of
deliberately broken variants (``sign=-1``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformer_lens import HookedTransformer


def _half_split_rotate(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


@contextmanager
def reference_continuous(
    model: HookedTransformer,
    values: torch.Tensor,
    *,
    attention: bool = True,
    positions: bool = True,
    sign: float = 1.0,
) -> Iterator[None]:
    """Duration hooks on ``model`` for the length of the block (``sign=-1``: broken on purpose)."""
    cfg = model.cfg
    assert cfg.positional_embedding_type == "rotary" and not cfg.rotary_adjacent_pairs
    values = values.to(torch.float64)
    log_d = values.log()
    shift = values.cumsum(-1) - 1 - torch.arange(values.shape[-1], dtype=torch.float64)
    rd = cfg.rotary_dim
    inv = 1.0 / cfg.rotary_base ** (torch.arange(rd // 2, dtype=torch.float64) / (rd / 2))
    omega = torch.cat([inv, inv])
    angle = shift[..., None] * omega  # batch pos rotary_dim
    cos, sin = angle.cos()[:, :, None, :], angle.sin()[:, :, None, :]

    def add_log_durations(scores, hook):
        return scores + sign * log_d[:, None, None, :].to(scores.dtype)

    def rotate(x, hook):
        rot, rest = x[..., :rd], x[..., rd:]
        rotated = rot * cos.to(x.dtype) + _half_split_rotate(rot) * sin.to(x.dtype)
        return torch.cat([rotated, rest], dim=-1)

    hooks = []
    for layer in range(cfg.n_layers):
        if attention:
            hooks.append((f"blocks.{layer}.attn.hook_attn_scores", add_log_durations))
        if positions:
            hooks.append((f"blocks.{layer}.attn.hook_rot_q", rotate))
            hooks.append((f"blocks.{layer}.attn.hook_rot_k", rotate))
    with model.hooks(fwd_hooks=hooks):
        yield
