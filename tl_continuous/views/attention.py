"""circuitsvis views of continuous tokens: attention under durations, durations as colours.

Token labels carry each token's duration (``"apple·0.50"``), so a pattern read off a shrunk
prompt says which tokens were shrunk. circuitsvis is imported when a view is built. Save views
with :func:`save_html`, which inlines circuitsvis' bundled script (``view.local_src``) so the file
renders offline; ``str(view)`` would load the script from a CDN.

>>> import torch
>>> from tl_continuous.continuous.durations import Durations
>>> from tl_continuous.tiny import tiny_model
>>> model = tiny_model("rotary")
>>> d = Durations(torch.tensor([1.0, 0.5, 0.5, 1.0]))
>>> view = duration_attention_view(model, torch.tensor([[1, 2, 3, 4]]), d, layer=0,
...                                str_tokens=["The", "apple", "apple", "."])
>>> "CircuitsVis.AttentionPatterns" in view.local_src
True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_continuous.backends.base import Model
from tl_continuous.continuous.durations import Durations
from tl_continuous.continuous.signal import continuous

__all__ = [
    "duration_attention_view",
    "duration_labels",
    "durations_view",
    "save_html",
]


def duration_labels(str_tokens: Sequence[str], durations: Durations, row: int = 0) -> list[str]:
    """Each token followed by its duration, ``"apple·0.50"``.

    Args:
        str_tokens: the tokens' text, one per position.
        durations: durations whose row ``row`` (or only row) has one value per token.
        row: which row of a batched :class:`Durations`.

    Raises:
        ValueError: the number of tokens differs from the durations' length, or ``row`` is
            out of range.

    >>> duration_labels(["a", "b"], Durations(torch.tensor([1.0, 0.25])))
    ['a·1.00', 'b·0.25']
    """
    if not 0 <= row < durations.batch:
        raise ValueError(f"row must be in 0..{durations.batch - 1} (got {row})")
    if len(str_tokens) != durations.n_pos:
        raise ValueError(
            f"str_tokens has {len(str_tokens)} tokens but durations has {durations.n_pos} values"
        )
    values = durations.values[row].tolist()
    return [f"{tok}·{v:.2f}" for tok, v in zip(str_tokens, values, strict=True)]


def _tokens_and_text(
    model: Model,
    tokens: Int[Tensor, "1 pos"] | str,
    str_tokens: Sequence[str] | None,
) -> tuple[Tensor, list[str]]:
    if isinstance(tokens, str):
        ids = model.to_tokens(tokens)
    elif isinstance(tokens, Tensor):
        ids = tokens if tokens.ndim == 2 else tokens[None]
    else:
        raise TypeError(f"tokens must be a string or a tensor of ids (got {type(tokens).__name__})")
    if ids.shape[0] != 1:
        raise ValueError(f"tokens must hold one prompt (got a batch of {ids.shape[0]})")
    if str_tokens is None:
        if model.tokenizer is None:
            raise ValueError("str_tokens is required for a model without a tokenizer")
        str_tokens = [str(t) for t in model.to_str_tokens(ids[0])]
    return ids, list(str_tokens)


def duration_attention_view(
    model: Model,
    tokens: Int[Tensor, "1 pos"] | str,
    durations: Durations,
    *,
    layer: int,
    heads: Sequence[int] | None = None,
    str_tokens: Sequence[str] | None = None,
) -> Any:
    """circuitsvis ``attention_patterns`` of one layer, run under ``continuous(model, durations)``.

    Args:
        model: the ``HookedTransformer``.
        tokens: a prompt, or ``[1, pos]`` token ids.
        durations: one row of durations for the prompt's tokens.
        layer: which layer's ``hook_pattern``.
        heads: which heads (default: all).
        str_tokens: the tokens' text (default: ``model.to_str_tokens``; required without a
            tokenizer).

    Returns:
        circuitsvis' ``RenderedHTML``; labels are :func:`duration_labels`.

    Raises:
        ValueError: ``layer`` or ``heads`` out of range, or the lengths disagree.
    """
    from circuitsvis.attention import attention_patterns

    if not 0 <= layer < model.cfg.n_layers:
        raise ValueError(f"layer must be in 0..{model.cfg.n_layers - 1} (got {layer})")
    chosen = list(range(model.cfg.n_heads)) if heads is None else list(heads)
    if not chosen or not all(0 <= h < model.cfg.n_heads for h in chosen):
        raise ValueError(f"heads must be a non-empty list in 0..{model.cfg.n_heads - 1}")
    ids, text = _tokens_and_text(model, tokens, str_tokens)
    labels = duration_labels(text, durations)
    if ids.shape[1] != len(labels):
        raise ValueError(f"tokens has {ids.shape[1]} positions but {len(labels)} durations")
    name = f"blocks.{layer}.attn.hook_pattern"
    with torch.no_grad(), continuous(model, durations):
        _, cache = model.run_with_cache(ids, names_filter=name)
    pattern: Float[Tensor, "head q k"] = cache[name][0, chosen].float().cpu()
    return attention_patterns(tokens=labels, attention=pattern)


def durations_view(
    str_tokens: Sequence[str], durations: Durations, *, row: int = 0, max_value: float | None = None
) -> Any:
    """Durations as coloured tokens (circuitsvis ``colored_tokens``): shorter is paler.

    Args:
        str_tokens: the tokens' text.
        durations: their durations.
        row: which row of a batched :class:`Durations`.
        max_value: top of the colour scale (default: the largest duration, at least 1).

    >>> view = durations_view(["a", "b"], Durations(torch.tensor([1.0, 0.25])))
    >>> '"values": [1.0, 0.25]' in view.local_src
    True
    """
    from circuitsvis.tokens import colored_tokens

    duration_labels(str_tokens, durations, row)  # checks lengths and row
    values = durations.values[row].float().cpu()
    top = max(float(values.max()), 1.0) if max_value is None else float(max_value)
    return colored_tokens(tokens=list(str_tokens), values=values, min_value=0.0, max_value=top)


def save_html(view: Any, path: str | os.PathLike[str]) -> Path:
    """Write a circuitsvis view as a standalone HTML file that renders offline.

    The file holds ``view.local_src`` (the bundled script inlined, ~1.3 MB), never
    ``str(view)``, which loads the script from a CDN.
    """
    src = getattr(view, "local_src", None)
    if not isinstance(src, str):
        raise TypeError(
            f"view must be a circuitsvis RenderedHTML with local_src (got {type(view).__name__})"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'></head><body>\n"
        + src
        + "\n</body></html>\n",
        encoding="utf-8",
    )
    return path
