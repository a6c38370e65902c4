"""Real positions: the table index of each token, and learned-table interpolation.

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

How the indices reach a model (rotary angles, learned rows) is a backend's business: see
:mod:`tl_continuous.backends.hooked` and :mod:`tl_continuous.backends.bridge`.

>>> table_index(torch.tensor([[1.0, 2.0, 3.0]]), torch.ones(1, 3))
tensor([[0., 1., 2.]], dtype=torch.float64)
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int, Shaped
from torch import Tensor

__all__ = [
    "integer_positions",
    "interpolate_table",
    "table_index",
]


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
