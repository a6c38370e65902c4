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

__all__ = ["add_log_durations", "log_durations"]


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
