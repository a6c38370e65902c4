"""Duration-weighted attention: ``log d_j`` added to every pre-softmax score of key ``j``.

For query ``i`` the softmax then gives ``d_j exp(s_ij) / sum_k d_k exp(s_ik)``: attention
integrates over time instead of summing over tokens. A duration of 0 gives ``-inf`` (the key
vanishes); the logs are taken in float32 or wider and cast to the scores' dtype.

>>> scores = torch.zeros(1, 1, 1, 2)
>>> add_log_durations(scores, log_durations(torch.tensor([[1.0, 3.0]]))).softmax(-1)
tensor([[[[0.2500, 0.7500]]]])
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["LOG_DURATION_FLOOR", "add_log_durations", "append_key_bias", "log_durations"]


def log_durations(values: Float[Tensor, "batch key_pos"]) -> Float[Tensor, "batch key_pos"]:
    """``log(values)`` in float32 (float64 stays float64); ``log 0 = -inf``.

    >>> log_durations(torch.tensor([[0.0, 1.0]]))
    tensor([[-inf, 0.]])
    """
    wide = values if values.dtype == torch.float64 else values.to(torch.float32)
    return torch.log(wide)


def add_log_durations(
    scores: Float[Tensor, "batch head query_pos key_pos"],
    log_d: Float[Tensor, "d_batch key_pos"],
) -> Float[Tensor, "batch head query_pos key_pos"]:
    """The scores plus ``log_d`` in every key column (cast to the scores' dtype and device).

    ``log_d`` has one row or one row per batch element.
    """
    return scores + log_d.to(device=scores.device, dtype=scores.dtype)[:, None, None, :]


#: The smallest log-duration the fused routes carry (in score units). A duration of 0 has
#: ``log 0 = -inf`` on the eager route; fused kernels get this floor instead, so that a query
#: whose visible keys all have duration 0 (a zero prefix) reads finite values rather than NaN.
#: Wherever the query sees any key of positive duration the weight of a floored key is
#: ``exp(-1000 + ...)``, exactly 0 in float32, bfloat16 and float16. Divided by the scale of
#: a head of up to 256 dimensions it still fits float16 (|-1000 * 16| < 65504).
LOG_DURATION_FLOOR = -1000.0


def append_key_bias(
    query: Float[Tensor, "batch q_head query_pos d_head"],
    key: Float[Tensor, "batch kv_head key_pos d_head"],
    value: Float[Tensor, "batch kv_head key_pos d_value"],
    bias: Float[Tensor, "batch key_pos"],
    scaling: float,
    *,
    align: int = 8,
) -> tuple[Tensor, Tensor, Tensor]:
    """Query, key and value widened so that a plain attention kernel adds ``bias[b, j]`` to
    every score of key ``j``: duration-weighted attention without a score matrix.

    The query gets two extra components equal to 1, the key ``bias / scaling`` split into a
    high and a low part in the key's dtype (``hi + lo`` carries the float32 bias to about
    2^-16 relative even in bfloat16, since kernels accumulate dot products in float32), and
    all three are zero-padded to a multiple of ``align`` (fused kernels want a common head
    size, a multiple of 8). Then ``scaling * q'.k' = scaling * q.k + bias`` exactly, the
    softmax and the causal flag of the kernel are untouched, and the output's first
    ``d_value`` components are the attention output. Call the kernel with ``scale=scaling``
    (its default would use the padded width).

    Args:
        query: ``[batch, q_head, query_pos, d_head]``.
        key: ``[batch, kv_head, key_pos, d_head]`` (grouped-query attention allowed).
        value: ``[batch, kv_head, key_pos, d_value]``.
        bias: ``[batch, key_pos]`` additive score bias (``log d``), float32 or float64.
        scaling: the softmax scale the kernel will be called with (``1 / sqrt(d_head)``).
        align: pad the head width to a multiple of this.

    >>> q, k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    >>> bias = torch.log(torch.tensor([[0.5, 2.0, 1.0]]))
    >>> q2, k2, v2 = append_key_bias(q, k, v, bias, 0.5)
    >>> q2.shape, k2.shape, v2.shape
    (torch.Size([1, 2, 3, 8]), torch.Size([1, 2, 3, 8]), torch.Size([1, 2, 3, 8]))
    >>> scores = 0.5 * q @ k.transpose(-1, -2) + bias[:, None, None, :]
    >>> torch.allclose(0.5 * q2 @ k2.transpose(-1, -2), scores, atol=1e-6)
    True
    """
    d, d_value = query.shape[-1], value.shape[-1]
    width = -(-max(d + 2, d_value) // align) * align
    wide = torch.float64 if bias.dtype == torch.float64 else torch.float32
    column = bias.to(device=key.device, dtype=wide) / scaling
    hi = column.to(key.dtype)
    lo = torch.where(torch.isfinite(hi), column - hi.to(wide), 0.0).to(key.dtype)
    b, kv_heads, n_keys = key.shape[0], key.shape[1], key.shape[2]
    parts = torch.stack([hi, lo], dim=-1)[:, None].expand(b, kv_heads, n_keys, 2)
    key = torch.cat([key, parts, key.new_zeros(b, kv_heads, n_keys, width - d - 2)], dim=-1)
    ones = query.new_ones(*query.shape[:-1], 2)
    query = torch.cat([query, ones, query.new_zeros(*query.shape[:-1], width - d - 2)], dim=-1)
    if width > d_value:
        value = torch.cat([value, value.new_zeros(*value.shape[:-1], width - d_value)], dim=-1)
    return query, key, value
