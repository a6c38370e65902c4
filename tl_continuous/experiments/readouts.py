"""Readouts: which vocabulary tokens count as an answer, and their summed probability.

A readout maps a next-token distribution over the whole vocabulary to a few labelled
probabilities (the digits 0..9, "Yes"/"No", "0"/"1"). Which tokens belong to a label is a
*rule* on the token's decoded text, and results always record the rule used:

* ``"exact"``: the token's text, with surrounding whitespace stripped, IS the label
  (``"4"`` and ``" 4"`` count for 4, ``"42"`` does not);
* ``"contains"``: the token's text contains the label anywhere (``"42"`` counts for 4 and 2);
* ``"prefix"``: the stripped text starts with the label (``"42"`` counts for 4 only): the
  natural rule for the leading digit of a multi-digit answer.

On SmolLM2-135M every digit is its own token and no other token contains a digit, so the
three digit rules select the same ten tokens there; on other tokenizers they differ.

>>> texts = [str(d) for d in range(10)] + [" 1", "12", "Yes"]
>>> Readout.digits(texts, rule="exact").token_ids[1]
[1, 10]
>>> r = Readout.digits(texts, rule="contains")
>>> r.token_ids[1], r.token_ids[2]
([1, 10, 11], [2, 11])
>>> probs = torch.zeros(1, 13)
>>> probs[0, 11] = 1.0  # all mass on "12"
>>> r(probs)[0, :3].tolist()
[0.0, 1.0, 1.0]
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["DIGITS", "Readout", "ReadoutRule", "vocab_texts"]

_DECODED: dict[tuple[int, int], tuple[Callable[[], Any], list[str]]] = {}

ReadoutRule = Literal["exact", "contains", "prefix"]
_RULES: tuple[str, ...] = ("exact", "contains", "prefix")
DIGITS: tuple[str, ...] = tuple(str(d) for d in range(10))


def vocab_texts(model_or_texts: Any) -> list[str]:
    """The decoded text of every vocabulary token.

    Args:
        model_or_texts: a ``HookedTransformer`` with a tokenizer, a Hugging Face tokenizer,
            or already a sequence of strings (one per token id).

    Raises:
        TypeError: nothing usable was given (e.g. a model without a tokenizer).

    >>> vocab_texts(["a", "b"])
    ['a', 'b']
    """
    if isinstance(model_or_texts, Sequence) and not isinstance(model_or_texts, str):
        return [str(t) for t in model_or_texts]
    tokenizer = getattr(model_or_texts, "tokenizer", model_or_texts)
    if tokenizer is None or not hasattr(tokenizer, "batch_decode"):
        raise TypeError(
            "model_or_texts must be a model with a tokenizer, a tokenizer, or a list of "
            f"token texts (got {type(model_or_texts).__name__} without a tokenizer)"
        )
    n_vocab = getattr(getattr(model_or_texts, "cfg", None), "d_vocab", None) or len(tokenizer)
    # decoding a whole vocabulary takes ~1 s (SmolLM2); sweeps over datasets ask per item
    key = (id(tokenizer), n_vocab)
    cached = _DECODED.get(key)
    if cached is None or cached[0]() is not tokenizer:
        texts = list(tokenizer.batch_decode([[i] for i in range(n_vocab)]))
        cached = (_reference(tokenizer), texts)
        _DECODED[key] = cached
    return list(cached[1])


def _reference(obj: Any) -> Callable[[], Any]:
    try:
        return weakref.ref(obj)
    except TypeError:  # not weak-referenceable: keep it alive with the cache entry
        return lambda: obj


def _matches(text: str, label: str, rule: str, case_sensitive: bool) -> bool:
    if not case_sensitive:
        text, label = text.lower(), label.lower()
    stripped = text.strip()
    if rule == "exact":
        return stripped == label
    if rule == "prefix":
        return stripped.startswith(label)
    return label in text


@dataclass(frozen=True)
class Readout:
    """Labelled groups of vocabulary tokens; calling it sums probabilities per label.

    Attributes:
        labels: one name per output column.
        token_ids: for each label, the token ids whose probabilities are summed.
        rule: how the token ids were chosen (see the module docstring).
        d_vocab: vocabulary size the ids refer to.
    """

    labels: tuple[str, ...]
    token_ids: tuple[list[int], ...]
    rule: str
    d_vocab: int

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.token_ids):
            raise ValueError(
                f"token_ids must have one list per label ({len(self.labels)} labels, "
                f"{len(self.token_ids)} lists)"
            )
        for label, ids in zip(self.labels, self.token_ids, strict=True):
            if any(not 0 <= i < self.d_vocab for i in ids):
                raise ValueError(f"token_ids of label {label!r} must lie in [0, {self.d_vocab})")

    @classmethod
    def from_texts(
        cls,
        model_or_texts: Any,
        variants: Mapping[str, Sequence[str]],
        rule: ReadoutRule = "exact",
        *,
        case_sensitive: bool = True,
    ) -> Readout:
        """Group the tokens whose text matches any variant of each label.

        Args:
            model_or_texts: see :func:`vocab_texts`.
            variants: label -> the strings that count for it, e.g.
                ``{"Yes": ["Yes"], "No": ["No"]}``.
            rule: ``"exact"``, ``"contains"`` or ``"prefix"``.
            case_sensitive: compare texts case-sensitively.

        Raises:
            ValueError: unknown rule, or a label that no token matches.

        >>> Readout.from_texts(["Yes", " yes", "No"], {"Yes": ["Yes"]},
        ...                    case_sensitive=False).token_ids
        ([0, 1],)
        """
        if rule not in _RULES:
            raise ValueError(f"rule must be one of {_RULES} (got {rule!r})")
        texts = vocab_texts(model_or_texts)
        groups: list[list[int]] = []
        for label, options in variants.items():
            ids = [
                i
                for i, text in enumerate(texts)
                if any(_matches(text, v, rule, case_sensitive) for v in options)
            ]
            if not ids:
                raise ValueError(f"no token matches label {label!r} under rule {rule!r}")
            groups.append(ids)
        return cls(tuple(variants), tuple(groups), rule, len(texts))

    @classmethod
    def digits(cls, model_or_texts: Any, rule: ReadoutRule = "exact") -> Readout:
        """The ten digits 0..9 under ``rule``.

        >>> Readout.digits([str(d) for d in range(10)]).labels[:3]
        ('0', '1', '2')
        """
        return cls.from_texts(model_or_texts, {d: [d] for d in DIGITS}, rule)

    @classmethod
    def yes_no(cls, model_or_texts: Any, *, case_sensitive: bool = False) -> Readout:
        """``Yes`` and ``No``: tokens whose stripped text is the word (any case by default).

        >>> Readout.yes_no(["Yes", " no", " NO", "Nothing"]).token_ids
        ([0], [1, 2])
        """
        return cls.from_texts(
            model_or_texts, {"Yes": ["Yes"], "No": ["No"]}, "exact", case_sensitive=case_sensitive
        )

    @classmethod
    def binary(cls, model_or_texts: Any) -> Readout:
        """``0`` and ``1``: tokens whose stripped text is the digit.

        >>> Readout.binary(["1", " 0", "10"]).token_ids
        ([1], [0])
        """
        return cls.from_texts(model_or_texts, {"0": ["0"], "1": ["1"]}, "exact")

    def matrix(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> Float[Tensor, "vocab label"]:
        """Indicator matrix: ``probs @ matrix`` gives the per-label sums.

        >>> Readout.binary(["0", "1"]).matrix().tolist()
        [[1.0, 0.0], [0.0, 1.0]]
        """
        out = torch.zeros(self.d_vocab, len(self.labels), device=device, dtype=dtype)
        for j, ids in enumerate(self.token_ids):
            out[torch.tensor(ids, dtype=torch.long), j] = 1.0
        return out

    def __call__(self, probs: Float[Tensor, "*batch vocab"]) -> Float[Tensor, "*batch label"]:
        """Sum the probabilities of each label's tokens (computed in float32 or wider)."""
        if probs.shape[-1] != self.d_vocab:
            raise ValueError(
                f"probs must end in the vocabulary dimension {self.d_vocab} "
                f"(got shape {tuple(probs.shape)})"
            )
        dtype = torch.float64 if probs.dtype == torch.float64 else torch.float32
        return probs.to(dtype) @ self.matrix(probs.device, dtype)

    def describe(self) -> str:
        """A one-line description for results and figures.

        >>> Readout.binary(["0", "1"]).describe()
        "rule 'exact': 1 token(s) per label on average"
        """
        mean = sum(len(ids) for ids in self.token_ids) / max(len(self.token_ids), 1)
        return f"rule {self.rule!r}: {mean:g} token(s) per label on average"
