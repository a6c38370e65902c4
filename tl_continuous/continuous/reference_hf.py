"""The same continuous-token mechanism through Hugging Face ``transformers`` (a reference).

The straightforward route the paper's own code takes: float ``position_ids`` (the table
indices of :mod:`.positions`) and a 4D additive float attention mask that carries the causal
mask and ``log d_j`` in key column ``j``, with eager attention so that the mask is added to
the scores before the softmax. Used by the tests (agreement with the hook implementation)
and by the benchmark; it is not part of the TransformerLens route. Load the Hugging Face model
behind a bundled model with :func:`tl_continuous.models.load_hf_reference`.

Only rotary models are covered (learned tables have no float ``position_ids``).
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_continuous.continuous.durations import Durations
from tl_continuous.continuous.positions import table_index

__all__ = ["continuous_inputs", "hf_continuous_logits"]


def continuous_inputs(
    durations: Durations, batch: int, n_pos: int, dtype: torch.dtype = torch.float32
) -> tuple[Float[Tensor, "batch pos"], Float[Tensor, "batch 1 pos pos"]]:
    """Float ``position_ids`` and the 4D additive mask (causal ``-inf`` plus ``log d``).

    >>> ids, mask = continuous_inputs(Durations(torch.tensor([1.0, 0.5])), 1, 2)
    >>> ids
    tensor([[0.0000, 0.5000]])
    >>> mask[0, 0]
    tensor([[ 0.0000,    -inf],
            [ 0.0000, -0.6931]])
    """
    if durations.n_pos != n_pos or durations.batch not in (1, batch):
        raise ValueError(
            f"durations of shape {tuple(durations.values.shape)} do not fit tokens of shape "
            f"({batch}, {n_pos})"
        )
    values = durations.values.expand(batch, n_pos)
    positions = durations.positions.expand(batch, n_pos)
    position_ids = table_index(positions, values).to(torch.float32)
    causal = torch.ones(n_pos, n_pos, dtype=torch.bool).tril()
    mask = torch.zeros(n_pos, n_pos, dtype=torch.float32).masked_fill(~causal, -torch.inf)
    mask = mask[None, None] + torch.log(values.to(torch.float32))[:, None, None, :]
    return position_ids, mask.to(dtype)


def hf_continuous_logits(
    hf_model: Any, input_ids: Int[Tensor, "batch pos"], durations: Durations
) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits of a Hugging Face causal LM under ``durations`` (see the module docstring)."""
    batch, n_pos = input_ids.shape
    device = input_ids.device
    position_ids, mask = continuous_inputs(durations, batch, n_pos, hf_model.dtype)
    out = hf_model(
        input_ids=input_ids,
        attention_mask=mask.to(device),
        position_ids=position_ids.to(device),
        use_cache=False,
    )
    return out.logits
