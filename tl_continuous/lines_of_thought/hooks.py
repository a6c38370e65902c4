"""Which hook points a line of thought reads, and where each sequence's pilot token is.

A trajectory reads one hook per block (``blocks.{i}.hook_resid_pre|mid|post``), optionally
followed by the final normalisation (``ln_final.hook_normalized``, not a layer). These names
are the same on a ``HookedTransformer`` and on a ``TransformerBridge`` (where they are aliases).

>>> layer_hook_names(2)
['blocks.0.hook_resid_post', 'blocks.1.hook_resid_post']
"""

from __future__ import annotations

import re
from typing import Literal

import torch
from jaxtyping import Int
from torch import Tensor

__all__ = [
    "BLOCK_HOOK_NAME",
    "FINAL_NORM_HOOK",
    "HookKind",
    "layer_hook_names",
    "parse_layer_hook_names",
    "pilot_positions_from_mask",
]

FINAL_NORM_HOOK = "ln_final.hook_normalized"
HookKind = Literal["resid_pre", "resid_mid", "resid_post"]
_HOOKS = ("resid_pre", "resid_mid", "resid_post")
#: the block hooks a trajectory reads: group 1 is the block, group 2 the :data:`HookKind`
BLOCK_HOOK_NAME = re.compile(r"blocks\.(\d+)\.hook_(resid_pre|resid_mid|resid_post)")


def layer_hook_names(
    n_layers: int,
    hook: str = "resid_post",
    layers: list[int] | None = None,
    include_final_norm: bool = False,
) -> list[str]:
    """Hook names read for a trajectory, in layer order.

    Args:
        n_layers: the model's number of blocks.
        hook: ``"resid_pre"``, ``"resid_mid"`` or ``"resid_post"``.
        layers: block indices (0-based; block ``i``'s ``resid_post`` is ``x(t = i + 1)``);
            default every block.
        include_final_norm: append ``ln_final.hook_normalized`` (not a layer; see module doc).

    >>> layer_hook_names(3, "resid_mid", [0, 2], include_final_norm=True)
    ['blocks.0.hook_resid_mid', 'blocks.2.hook_resid_mid', 'ln_final.hook_normalized']
    """
    if hook not in _HOOKS:
        raise ValueError(f"hook must be one of {_HOOKS} (got {hook!r})")
    chosen = list(range(n_layers)) if layers is None else [int(i) for i in layers]
    if not chosen and not include_final_norm:
        raise ValueError("layers must name at least one block")
    bad = [i for i in chosen if not 0 <= i < n_layers]
    if bad:
        raise ValueError(f"layers must be block indices in [0, {n_layers}) (got {bad})")
    if len(set(chosen)) != len(chosen) or chosen != sorted(chosen):
        raise ValueError(f"layers must be increasing and distinct (got {chosen})")
    names = [f"blocks.{i}.hook_{hook}" for i in chosen]
    if include_final_norm:
        names.append(FINAL_NORM_HOOK)
    return names


def parse_layer_hook_names(names: list[str]) -> tuple[HookKind, list[int], bool]:
    """The inverse of :func:`layer_hook_names`: ``(hook, layers, include_final_norm)``.

    Raises:
        ValueError: the names are not one hook kind's block hooks in block order, optionally
            followed by :data:`FINAL_NORM_HOOK`.

    >>> parse_layer_hook_names(["blocks.0.hook_resid_mid", "blocks.2.hook_resid_mid"])
    ('resid_mid', [0, 2], False)
    """
    final = bool(names) and names[-1] == FINAL_NORM_HOOK
    matches = [BLOCK_HOOK_NAME.fullmatch(n) for n in (names[:-1] if final else names)]
    kinds = {m.group(2) for m in matches if m is not None}
    if None in matches or len(kinds) > 1:
        raise ValueError(
            "layer_names must be blocks.{i}.hook_<one of resid_pre/mid/post>, optionally "
            f"followed by {FINAL_NORM_HOOK} (got {names})"
        )
    blocks = [int(m.group(1)) for m in matches if m is not None]
    hook = kinds.pop() if kinds else "resid_post"
    if blocks != sorted(set(blocks)):
        raise ValueError(f"layer_names must be in block order (got {names})")
    return hook, blocks, final  # type: ignore[return-value]


def pilot_positions_from_mask(
    attention_mask: Int[Tensor, "batch pos"] | None, batch: int, pos: int
) -> Int[Tensor, " batch"]:
    """Index of each row's last non-pad token (the last position without a mask).

    Works for left and right padding.

    >>> pilot_positions_from_mask(torch.tensor([[1, 1, 0], [0, 1, 1]]), 2, 3).tolist()
    [1, 2]
    """
    if attention_mask is None:
        return torch.full((batch,), pos - 1, dtype=torch.long)
    if attention_mask.shape != (batch, pos):
        raise ValueError(
            f"attention_mask must have shape {(batch, pos)} (got {tuple(attention_mask.shape)})"
        )
    mask = attention_mask.to("cpu").bool()
    if not mask.any(dim=1).all():
        raise ValueError("attention_mask has a row without any real token")
    idx = torch.arange(pos).expand(batch, pos)
    return torch.where(mask, idx, torch.full_like(idx, -1)).max(dim=1).values
