"""Store the weights that TransformerLens copies on every forward in the layout it copies them to.

TransformerLens 3.9 calls ``F.linear(x, W.T.contiguous())`` for the gated MLP's ``W_gate``,
``W_in`` and ``W_out`` and for ``W_U``, and ``rearrange(W_O, ...).contiguous()`` in attention,
to match Hugging Face's ``nn.Linear`` memory layout. Each call copies the whole matrix, on every
forward: for SmolLM2-135M that is 121 copies (W_U alone is 113 MB) and about three quarters of
the time of a forward on a short prompt. :func:`use_linear_layout` keeps every parameter's
shape and values but stores it transposed in memory, so that those ``.contiguous()`` calls
return the tensor itself. ``F.linear`` then receives the same values in the same layout as
before, so the logits are bit for bit the same.

The parameters become non-contiguous views: ``safetensors.torch.save_file(model.state_dict())``
needs ``{k: v.contiguous() for k, v in ...}`` (``torch.save`` does not care).

>>> import torch
>>> from tl_continuous.tiny import tiny_model
>>> model = tiny_model("rotary")
>>> tokens = torch.tensor([[1, 2, 3, 4]])
>>> before = model(tokens)
>>> use_linear_layout(model)  # per layer W_gate, W_in, W_out, W_O; then W_U
9
>>> bool(torch.equal(model(tokens), before))
True
"""

from __future__ import annotations

import torch
from torch import nn

from tl_continuous.backends.base import Model

__all__ = ["use_linear_layout"]


def _relayout(param: nn.Parameter, order: tuple[int, ...]) -> bool:
    """Store ``param`` so that ``param.permute(order)`` is contiguous; ``False`` if it was."""
    if param.permute(order).is_contiguous():
        return False
    inverse = tuple(sorted(range(len(order)), key=order.__getitem__))
    with torch.no_grad():
        param.data = param.data.permute(order).contiguous().permute(inverse)
    return True


def use_linear_layout(model: Model) -> int:
    """Lay out the weights TransformerLens copies per forward so that the copy is a no-op.

    Shapes, values, devices and dtypes are unchanged, and so are the model's outputs (bit for
    bit). Calling it again does nothing. :func:`tl_continuous.load_model` does this by default.

    Args:
        model: a ``HookedTransformer``.

    Returns:
        How many parameters were re-laid (0 when there was nothing to do).

    Raises:
        TypeError: ``model`` is not a ``HookedTransformer``.
    """
    from tl_continuous.backends import backend_name

    try:
        hooked = backend_name(model) == "hooked"
    except TypeError:
        hooked = False
    if not hooked:
        raise TypeError(f"model must be a HookedTransformer (got {type(model).__name__})")
    from transformer_lens.components import AbstractAttention, GatedMLP, Unembed

    changed = 0
    for module in model.modules():
        if isinstance(module, GatedMLP):
            # only the gated MLP runs F.linear(x, W.T.contiguous()); the plain MLP uses addmm
            for name in ("W_gate", "W_in", "W_out"):
                param = getattr(module, name, None)
                if isinstance(param, nn.Parameter) and param.ndim == 2:
                    changed += _relayout(param, (1, 0))
        elif isinstance(module, Unembed):
            W_U = getattr(module, "W_U", None)
            if isinstance(W_U, nn.Parameter) and W_U.ndim == 2:
                changed += _relayout(W_U, (1, 0))
        elif isinstance(module, AbstractAttention):
            W_O = getattr(module, "W_O", None)
            if isinstance(W_O, nn.Parameter) and W_O.ndim == 3:  # [head, d_head, d_model]
                changed += _relayout(W_O, (2, 0, 1))
    return changed
