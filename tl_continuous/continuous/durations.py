"""Durations: how long each token of a prompt lasts, and the real positions that follow.

Token ``j`` occupies an interval of length ``d_j >= 0`` that ends at its position

    p_j = start + d_0 + d_1 + ... + d_j

so all-ones durations with ``start = 0`` give the positions ``1, 2, ..., n``. How a model
reads these positions (the origin of its position table) is the business of
:mod:`tl_continuous.continuous.positions`; this module is only the signal.

>>> d = Durations.from_spans(5, spans=[(1, 2)], value=0.5)
>>> d.values
tensor([[1.0000, 0.5000, 0.5000, 1.0000, 1.0000]])
>>> d.positions
tensor([[1.0000, 1.5000, 2.0000, 3.0000, 4.0000]])
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from jaxtyping import Float, Real
from torch import Tensor, nn

from tl_continuous.backends.base import Model

__all__ = ["Durations", "word_token_spans"]


@dataclass
class Durations:
    """Real-valued durations of the tokens of a batch of prompts.

    Args:
        values: ``[batch, pos]``, or ``[pos]`` (stored as one row that broadcasts over any
            token batch). Finite and ``>= 0``, with a positive duration in every row;
            integer tensors are converted to float32,
            half precision to float32 (the logs of durations need the precision).
        start: the integration start ``t0``.

    Attributes:
        values: ``[batch, pos]`` float durations.
        start: ``t0`` as a float.

    >>> Durations(torch.tensor([1.0, 2.0, 0.5]), start=1.0).positions
    tensor([[2.0000, 4.0000, 4.5000]])
    """

    values: Real[Tensor, "batch pos"] | Real[Tensor, " pos"]
    start: float | int = 0.0

    def __post_init__(self) -> None:
        values = self.values
        if not isinstance(values, Tensor):
            raise TypeError(f"values must be a torch.Tensor (got {type(values).__name__})")
        if values.ndim == 1:
            values = values[None, :]
        if values.ndim != 2 or values.shape[-1] == 0:
            raise ValueError(
                f"values must have shape [batch, pos] or [pos] with pos >= 1 "
                f"(got {tuple(self.values.shape)})"
            )
        if not values.is_floating_point() or values.dtype in (torch.float16, torch.bfloat16):
            values = values.to(torch.float32)
        if not bool(torch.isfinite(values).all()):
            raise ValueError("values must be finite (found inf or nan)")
        if bool((values < 0).any()):
            raise ValueError(f"values must be >= 0 (smallest is {values.min().item():g})")
        if bool((values.sum(dim=-1) <= 0).any()):
            rows = (values.sum(dim=-1) <= 0).nonzero().flatten().tolist()
            raise ValueError(
                f"values must have at least one positive duration per row (rows {rows} are "
                "all zero: no token would be attended to)"
            )
        start = float(self.start)
        if not torch.isfinite(torch.tensor(start)):
            raise ValueError(f"start must be finite (got {start})")
        last = start + values.to(torch.float64).sum(dim=-1)
        if not bool(torch.isfinite(last.to(values.dtype)).all()):
            raise ValueError(
                f"values are too large: the positions start + cumsum(values) overflow "
                f"{values.dtype} (largest {last.max().item():.3g}); pass float64 values"
            )
        self.values = values
        self.start = start

    @property
    def batch(self) -> int:
        """Number of rows (1 broadcasts over any token batch)."""
        return int(self.values.shape[0])

    @property
    def n_pos(self) -> int:
        """Number of tokens described."""
        return int(self.values.shape[1])

    @property
    def positions(self) -> Float[Tensor, "batch pos"]:
        """``start + cumsum(values)``: where each token's interval ends (float64 sum)."""
        total = self.start + torch.cumsum(self.values.to(torch.float64), dim=-1)
        return total.to(self.values.dtype)

    def scaled(self, factor: float | int) -> Durations:
        """Every duration times ``factor`` (attention weights unchanged, positions scaled).

        >>> Durations.ones(1, 3).scaled(0.5).positions
        tensor([[0.5000, 1.0000, 1.5000]])
        """
        return replace(self, values=self.values * float(factor))

    def shifted(self, offset: float | int) -> Durations:
        """The same durations with ``start`` moved by ``offset`` (every position shifts).

        >>> Durations.ones(1, 2).shifted(3).positions
        tensor([[4., 5.]])
        """
        return replace(self, start=self.start + float(offset))

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (lists and floats), for JSON.

        >>> Durations.from_dict(Durations.ones(1, 2).to_dict()).positions
        tensor([[1., 2.]])
        """
        return {"values": self.values.tolist(), "start": self.start}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Durations:
        """Inverse of :meth:`to_dict`."""
        return cls(torch.tensor(data["values"], dtype=torch.float32), start=data["start"])

    @classmethod
    def ones(cls, batch: int, pos: int, *, start: float | int = 0.0) -> Durations:
        """All durations 1: the discrete model.

        >>> Durations.ones(2, 3).values.shape
        torch.Size([2, 3])
        """
        if batch < 1 or pos < 1:
            raise ValueError(f"batch and pos must be >= 1 (got batch={batch}, pos={pos})")
        return cls(torch.ones(batch, pos), start=start)

    @classmethod
    def from_spans(
        cls,
        n_pos: int,
        spans: Sequence[tuple[int, int]],
        value: float | int | Float[Tensor, " n_values"] = 1.0,
        *,
        default: float | int = 1.0,
        start: float | int = 0.0,
    ) -> Durations:
        """Durations ``value`` on token spans, ``default`` elsewhere.

        Args:
            n_pos: number of tokens.
            spans: ``(first, last)`` token indices, both inclusive; negative indices count
                from the end as in Python.
            value: a float (one row), or a 1-D tensor of values (one row per value, e.g. a
                sweep of ``c``).
            default: duration of tokens outside every span.
            start: the integration start.

        >>> Durations.from_spans(4, [(0, 1)], value=torch.tensor([0.5, 2.0])).values
        tensor([[0.5000, 0.5000, 1.0000, 1.0000],
                [2.0000, 2.0000, 1.0000, 1.0000]])
        """
        if n_pos < 1:
            raise ValueError(f"n_pos must be >= 1 (got {n_pos})")
        in_span = torch.zeros(n_pos, dtype=torch.bool)
        for span in spans:
            if len(span) != 2:
                raise ValueError(f"spans must hold (first, last) pairs (got {span!r})")
            first, last = (int(i) + n_pos if int(i) < 0 else int(i) for i in span)
            if not 0 <= first <= last < n_pos:
                raise ValueError(
                    f"spans must hold 0 <= first <= last < n_pos={n_pos} (got {span!r})"
                )
            in_span[first : last + 1] = True
        if isinstance(value, Tensor):
            if value.ndim != 1 or value.numel() == 0:
                raise ValueError(f"value must be a float or a non-empty 1-D tensor ({value.shape})")
            column = value.detach().to(torch.float32)[:, None]
        else:
            column = torch.tensor([[float(value)]])
        base = torch.full((1, n_pos), float(default))
        values = torch.where(in_span[None, :], column, base)
        return cls(values, start=start)

    @classmethod
    def from_word(
        cls,
        model_or_str_tokens: Model | Sequence[str],
        prompt: str | None,
        word: str,
        value: float | int | Float[Tensor, " n_values"] = 1.0,
        first_to_last: bool = True,
        *,
        occurrences: slice | Sequence[int] | None = None,
        default: float | int = 1.0,
        start: float | int = 0.0,
    ) -> Durations:
        """Durations ``value`` on the tokens of a word's occurrences in a prompt.

        Args:
            model_or_str_tokens: a model with a tokenizer (the prompt is split with
                ``model.to_str_tokens(prompt)``, so BOS follows the model's default), or the
                prompt's string tokens themselves.
            prompt: the prompt text; may be ``None`` when string tokens are given.
            word: matched as a whole word (not inside a longer word), case-sensitive.
            value: a float, or a 1-D tensor (one row per value).
            first_to_last: every token from the first token of the first occurrence to the
                last token of the last occurrence gets ``value`` (the shape of the counting
                experiments); otherwise only the occurrences' own tokens.
            occurrences: which occurrences count, in order of appearance (a slice or
                indices); e.g. ``slice(0, -1)`` leaves out a final mention of the word in
                a question such as "how many times is apple mentioned?".
            default: duration of the other tokens.
            start: the integration start.

        >>> toks = ["<bos>", "I", " saw", " apple", " apple", " apple", "."]
        >>> Durations.from_word(toks, None, "apple", value=0.5).values
        tensor([[1.0000, 1.0000, 1.0000, 0.5000, 0.5000, 0.5000, 1.0000]])
        >>> Durations.from_word(toks, None, "apple", value=0.5, occurrences=slice(1, None)).values
        tensor([[1.0000, 1.0000, 1.0000, 1.0000, 0.5000, 0.5000, 1.0000]])
        """
        if isinstance(model_or_str_tokens, nn.Module):
            if prompt is None:
                raise ValueError("prompt must be given when a model is passed")
            model: Any = model_or_str_tokens
            split = model.to_str_tokens(prompt)
            if not all(isinstance(t, str) for t in split):
                raise TypeError("prompt must be a single string")
            str_tokens = [str(t) for t in split]
        else:
            str_tokens = list(model_or_str_tokens)
        spans = word_token_spans(str_tokens, word)
        if not spans:
            raise ValueError(f"word {word!r} does not occur in the prompt's tokens {str_tokens!r}")
        if occurrences is not None:
            found = len(spans)
            try:
                spans = (
                    spans[occurrences]
                    if isinstance(occurrences, slice)
                    else [spans[int(i)] for i in occurrences]
                )
            except IndexError:
                raise ValueError(
                    f"occurrences {occurrences!r} out of range: {word!r} occurs {found} times"
                ) from None
            if not spans:
                raise ValueError(f"occurrences {occurrences!r} selects none of {found}")
        if first_to_last:
            spans = [(spans[0][0], spans[-1][1])]
        return cls.from_spans(len(str_tokens), spans, value, default=default, start=start)


def word_token_spans(str_tokens: Sequence[str], word: str) -> list[tuple[int, int]]:
    """The ``(first, last)`` token indices (inclusive) of each whole-word occurrence.

    A token belongs to an occurrence when their characters overlap, so a word split into
    several tokens gives a span of several tokens.

    >>> word_token_spans(["A", " pine", "apple", " apple"], "apple")
    [(3, 3)]
    >>> word_token_spans(["A", " app", "les"], "apples")
    [(1, 2)]
    """
    word = word.strip()
    if not word:
        raise ValueError("word must contain a non-space character")
    ends: list[int] = []
    total = 0
    for token in str_tokens:
        total += len(token)
        ends.append(total)
    starts = [end - len(tok) for end, tok in zip(ends, str_tokens, strict=True)]
    text = "".join(str_tokens)
    spans = []
    for match in re.finditer(rf"(?<!\w){re.escape(word)}(?!\w)", text):
        hit = [
            k
            for k, (s, e) in enumerate(zip(starts, ends, strict=True))
            if s < match.end() and e > match.start()
        ]
        spans.append((hit[0], hit[-1]))
    return spans
