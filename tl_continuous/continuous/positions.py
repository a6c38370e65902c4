"""Real positions in TransformerLens models: rotary re-rotation and learned-table interpolation.

**Origin convention.** A token ending at ``p_j = start + d_0 + ... + d_j`` (see
:class:`~.durations.Durations`) is fed to the model at *table index* ``p_j - d_0``, that is
``start + d_1 + ... + d_j``: the first token sits at index ``start`` (0 by default, the
table's index of the first token) whatever its duration, and every later index is the time
elapsed since then. With all-ones durations the indices are ``0, 1, ..., n-1``, exactly
TransformerLens' own (with left padding: its offset position ids; ``d_0`` is then the first
real token's duration). The shift ``d_0`` is the same for every token of a prompt, so rotary
models, which are shift-invariant, compute exactly what they would at the positions
``p_j``; only learned tables care about the origin. There index ``x`` interpolates
linearly between rows ``floor(x)`` and ``floor(x) + 1`` of ``W_pos``; indices outside
``[0, n_ctx - 1]`` are an error.

**Rotary.** TransformerLens rotates queries and keys by their integer positions before
``hook_rot_q`` / ``hook_rot_k``. Rotations in the same planes compose, so a hook there
rotates further by ``(index - integer position) * omega``; ``omega`` is read from the
attention module's own ``calculate_sin_cos_rotary`` so the model's base, scaling (linear,
NTK-by-parts, YaRN), partial ``rotary_dim`` and pair layout are all honoured.

>>> from tl_continuous.tiny import tiny_model
>>> attn = tiny_model("rotary").blocks[0].attn
>>> rotary_frequencies(attn).shape
torch.Size([16])
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int, Shaped
from torch import Tensor
from transformer_lens import HookedTransformerConfig
from transformer_lens.components.abstract_attention import AbstractAttention

__all__ = [
    "SUPPORTED_SCHEMES",
    "check_positional_scheme",
    "integer_positions",
    "interpolate_table",
    "rotary_frequencies",
    "rotate_further",
    "table_index",
]

SUPPORTED_SCHEMES = ("rotary", "standard")


def check_positional_scheme(cfg: HookedTransformerConfig) -> None:
    """Raise ``ValueError`` unless real positions are implemented for the model's scheme.

    >>> from tl_continuous.tiny import tiny_config
    >>> check_positional_scheme(tiny_config("rotary"))
    >>> alibi = tiny_config("learned", positional_embedding_type="alibi")
    >>> check_positional_scheme(alibi)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: continuous positions are not implemented for positional_embedding_type='alibi' ...
    """
    scheme = cfg.positional_embedding_type
    if scheme not in SUPPORTED_SCHEMES:
        raise ValueError(
            f"continuous positions are not implemented for positional_embedding_type="
            f"{scheme!r} (supported: 'rotary', 'standard'); pass positions=False to use "
            "duration-weighted attention alone"
        )
    if scheme == "rotary" and cfg.use_dynamic_ntk_rope:
        raise ValueError(
            "continuous positions are not implemented for use_dynamic_ntk_rope=True (the "
            "rotary base changes with the context length); pass positions=False"
        )


def table_index(
    positions: Float[Tensor, "batch key_pos"],
    durations: Float[Tensor, "batch key_pos"],
    valid: Shaped[Tensor, "batch key_pos"] | None = None,
) -> Float[Tensor, "batch key_pos"]:
    """Table indices (float64): positions minus the first (real) token's duration.

    >>> table_index(torch.tensor([[1.5, 2.0, 4.0]]), torch.tensor([[0.5, 0.5, 2.0]]))
    tensor([[1.0000, 1.5000, 3.5000]], dtype=torch.float64)
    >>> table_index(torch.tensor([[0.0, 2.0, 3.0]]), torch.tensor([[9.0, 2.0, 1.0]]),
    ...             torch.tensor([[0, 1, 1]]))
    tensor([[-2.,  0.,  1.]], dtype=torch.float64)
    """
    if valid is None:
        first = durations[:, :1]
    else:
        first_real = valid.to(durations.device).long().argmax(dim=-1, keepdim=True)
        first = durations.gather(-1, first_real)
    return positions.to(torch.float64) - first.to(device=positions.device, dtype=torch.float64)


def integer_positions(
    attention_mask: Shaped[Tensor, "batch key_pos"] | None, length: int, device: torch.device
) -> Int[Tensor, "mask_batch key_pos"]:
    """The integer positions TransformerLens gives the keys ``0..length-1``.

    Without a mask ``arange(length)`` (one row); with a mask ``cumsum(mask) - 1`` clamped at
    0, as TransformerLens' ``get_offset_position_ids`` (pads before the first token get 0).

    >>> integer_positions(torch.tensor([[0, 1, 1]]), 3, torch.device("cpu"))
    tensor([[0, 0, 1]])
    """
    if attention_mask is None:
        return torch.arange(length, device=device)[None, :]
    ids = attention_mask.to(device).long().cumsum(dim=-1) - 1
    return ids.clamp(min=0)


def rotary_frequencies(attn: AbstractAttention) -> Float[Tensor, " rotary_dim"]:
    """Angle per unit position of each rotary dimension, float64, in the module's layout.

    Read from the module's own ``calculate_sin_cos_rotary`` at position 1 (``atan2`` of its
    sine and cosine, so amplitude factors such as YaRN's attention factor drop out).
    """
    rotary_dim = attn.cfg.rotary_dim
    if rotary_dim is None:
        raise ValueError("the attention module has no rotary_dim (not a rotary model)")
    sin, cos = attn.calculate_sin_cos_rotary(
        rotary_dim, 2, base=attn._rotary_base(), dtype=torch.float64
    )
    return torch.atan2(sin[1], cos[1])


def rotate_further(
    x: Float[Tensor, "batch pos head d_head"],
    cos: Float[Tensor, "batch pos 1 rotary_dim"],
    sin: Float[Tensor, "batch pos 1 rotary_dim"],
    attn: AbstractAttention,
) -> Float[Tensor, "batch pos head d_head"]:
    """Rotate the rotary part of ``x`` by the angles whose cosines and sines are given.

    Uses the module's own ``rotate_every_two`` so the pair layout is the model's.
    """
    rotary_dim = cos.shape[-1]
    x_rot = x[..., :rotary_dim]
    rotated = x_rot * cos + attn.rotate_every_two(x_rot) * sin
    if rotary_dim == x.shape[-1]:
        return rotated
    return torch.cat([rotated, x[..., rotary_dim:]], dim=-1)


def interpolate_table(
    table: Float[Tensor, "n_ctx d_model"],
    index: Float[Tensor, "batch pos"],
    valid: Shaped[Tensor, "batch pos"] | None = None,
) -> Float[Tensor, "batch pos d_model"]:
    """Rows of ``table`` at real indices, interpolated linearly; zeros where not ``valid``.

    Args:
        table: the position table (``W_pos``).
        index: real row indices; every valid one must lie in ``[0, n_ctx - 1]``.
        valid: 1 for real tokens, 0 for padding (whose rows are 0, as in TransformerLens).

    Raises:
        ValueError: a valid index lies outside the table.

    >>> table = torch.tensor([[0.0, 0.0], [2.0, 4.0]])
    >>> interpolate_table(table, torch.tensor([[0.0, 0.25, 1.0]]))
    tensor([[[0.0000, 0.0000],
             [0.5000, 1.0000],
             [2.0000, 4.0000]]])
    """
    n_ctx = table.shape[0]
    index = index.to(device=table.device, dtype=torch.float64)
    keep = (
        torch.ones_like(index, dtype=torch.bool)
        if valid is None
        else valid.to(device=table.device).bool()
    )
    used = index[keep]
    if used.numel() and (bool((used < 0).any()) or bool((used > n_ctx - 1).any())):
        raise ValueError(
            f"positions must map into the position table: table indices (start + the "
            f"durations after the first token) must lie in [0, {n_ctx - 1}] (got "
            f"[{used.min().item():.4g}, {used.max().item():.4g}]); shorten the durations or "
            "move Durations.start"
        )
    index = torch.where(keep, index, torch.zeros_like(index))
    low = index.floor().clamp(0, n_ctx - 1)
    frac = (index - low)[..., None]
    low_i = low.long()
    high_i = (low_i + 1).clamp(max=n_ctx - 1)
    work = torch.promote_types(table.dtype, torch.float32)
    rows = (1 - frac) * table[low_i].to(work) + frac * table[high_i].to(work)
    rows = torch.where(keep[..., None], rows, torch.zeros_like(rows))
    return rows.to(table.dtype)
