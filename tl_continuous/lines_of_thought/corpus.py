"""Pseudo-sentences: a text tokenised whole and cut into non-overlapping N_k-token chunks.

How a text becomes pseudo-sentences:

1. Newlines become spaces (optionally every run of whitespace becomes one space).
2. The whole text is tokenised once, without special tokens: no BOS (or anything else) is
   inserted inside the text.
3. The token ids are cut into ``len // n_tokens`` non-overlapping chunks of ``n_tokens``; the
   remainder at the end is dropped.
4. Optionally ``limit`` chunks are sampled without replacement with a seeded generator; the
   sampled chunks keep their order in the text (so neighbours in the ensemble are, mostly,
   neighbours in the text).
5. BOS: with ``prepend_bos=True`` the tokenizer's BOS id is put in front of every chunk (the
   chunk then holds ``n_tokens + 1`` ids, the last being the pilot). The default ``None``
   follows the model: ``model.cfg.default_prepend_bos`` when a ``HookedTransformer`` is given
   (``False`` for SmolLM2, whose tokenizer prepends nothing), else ``False``.

The default corpus is the prose of ``pydoc_data.topics`` (ships with every CPython): its
topics sorted by name and joined by blank lines. :func:`gibberish` is the control: uniformly
random token ids that are not special tokens.

>>> chunk_ids(list(range(10)), n_tokens=3).tolist()
[[0, 1, 2], [3, 4, 5], [6, 7, 8]]
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

__all__ = [
    "PseudoSentences",
    "chunk_ids",
    "default_corpus_text",
    "gibberish",
    "pseudo_sentences",
    "text_sha256",
]


def default_corpus_text() -> str:
    """The default corpus: every ``pydoc_data.topics`` entry, sorted by topic, blank-line joined.

    Deterministic for a given CPython release; its hash is recorded with every ensemble.

    >>> len(default_corpus_text()) > 100_000
    True
    """
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key].strip() for key in sorted(topics))


def text_sha256(text: str) -> str:
    """Hex SHA-256 of a text's UTF-8 bytes.

    >>> text_sha256("abc")[:12]
    'ba7816bf8f01'
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def chunk_ids(ids: list[int] | Tensor, n_tokens: int) -> Int[Tensor, "n_chunks n_tokens"]:
    """Cut a flat list of token ids into non-overlapping chunks, dropping the remainder.

    Args:
        ids: token ids of the whole text.
        n_tokens: tokens per chunk (N_k).
    """
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be a positive integer (got {n_tokens})")
    flat = torch.as_tensor(ids, dtype=torch.long).flatten()
    n_chunks = flat.numel() // n_tokens
    return flat[: n_chunks * n_tokens].reshape(n_chunks, n_tokens)


@dataclass
class PseudoSentences:
    """Token ids of pseudo-sentences plus where they came from.

    Attributes:
        tokens: ``[n_sentences, pos]`` token ids; ``pos`` is ``n_tokens`` (+1 with BOS).
        chunk_index: index of each pseudo-sentence among all chunks of the text (text order).
        n_tokens: N_k, text tokens per pseudo-sentence (BOS not counted).
        source: ``"pydoc_data.topics"``, a file path, ``"text"`` or ``"gibberish"``.
        text_sha256: hash of the (whitespace-normalised) text that was tokenised; for
            gibberish, a hash of the generating parameters.
        prepend_bos: whether a BOS id starts every row.
        seed: the sampling seed.
        n_chunks_total: how many chunks the whole text gave before sampling.
        extra: anything else worth recording (tokenizer name, ...).
    """

    tokens: Int[Tensor, "n_sentences pos"]
    chunk_index: Int[Tensor, " n_sentences"]
    n_tokens: int
    source: str
    text_sha256: str
    prepend_bos: bool = False
    seed: int = 0
    n_chunks_total: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tokens.ndim != 2:
            raise ValueError(
                f"tokens must be [n_sentences, pos] (got shape {tuple(self.tokens.shape)})"
            )
        expected = self.n_tokens + int(self.prepend_bos)
        if self.tokens.shape[1] != expected:
            raise ValueError(
                f"tokens must have n_tokens + prepend_bos = {expected} columns "
                f"(got {self.tokens.shape[1]})"
            )
        if self.chunk_index.shape != (self.tokens.shape[0],):
            raise ValueError("chunk_index must have one entry per pseudo-sentence")

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def metadata(self) -> dict[str, Any]:
        """JSON-safe description (everything but the token ids)."""
        return {
            "source": self.source,
            "text_sha256": self.text_sha256,
            "n_tokens": self.n_tokens,
            "prepend_bos": self.prepend_bos,
            "seed": self.seed,
            "n_sentences": len(self),
            "n_chunks_total": self.n_chunks_total,
            **self.extra,
        }


def _tokenizer_of(model_or_tokenizer: Any) -> tuple[Any, bool | None]:
    tokenizer = getattr(model_or_tokenizer, "tokenizer", None)
    if tokenizer is not None and hasattr(model_or_tokenizer, "cfg"):
        return tokenizer, bool(model_or_tokenizer.cfg.default_prepend_bos)
    if hasattr(model_or_tokenizer, "cfg"):
        raise ValueError(
            "model_or_tokenizer: this model has no tokenizer; pass a tokenizer, or token ids "
            "to chunk_ids"
        )
    if not hasattr(model_or_tokenizer, "encode"):
        raise TypeError(
            "model_or_tokenizer must be a HookedTransformer with a tokenizer or a tokenizer "
            f"with an encode method (got {type(model_or_tokenizer).__name__})"
        )
    return model_or_tokenizer, None


def _encode(tokenizer: Any, text: str) -> list[int]:
    try:  # Hugging Face tokenizers: no special tokens, no "sequence too long" warning
        return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
    except TypeError:
        return list(tokenizer.encode(text, add_special_tokens=False))


def pseudo_sentences(
    model_or_tokenizer: Any,
    *,
    text: str | None = None,
    path: str | os.PathLike[str] | None = None,
    n_tokens: int = 50,
    limit: int | None = None,
    seed: int = 0,
    prepend_bos: bool | None = None,
    collapse_whitespace: bool = False,
) -> PseudoSentences:
    """Pseudo-sentences of a text (default: ``pydoc_data.topics``).

    Args:
        model_or_tokenizer: a ``HookedTransformer`` with a tokenizer, or a Hugging Face-style
            tokenizer (anything with ``encode(text, add_special_tokens=False)``).
        text: the text itself. Give at most one of ``text`` and ``path``.
        path: a UTF-8 text file.
        n_tokens: N_k, tokens per pseudo-sentence (50 in the paper; at least 2).
        limit: keep at most this many pseudo-sentences, sampled without replacement.
        seed: seed of that sample.
        prepend_bos: put the tokenizer's BOS id in front of every chunk; ``None`` follows
            ``model.cfg.default_prepend_bos`` (``False`` for a bare tokenizer).
        collapse_whitespace: turn every run of whitespace (not only newlines) into one space.

    Raises:
        ValueError: both ``text`` and ``path`` given, a text too short for one chunk, or
            BOS asked of a tokenizer without one, or ``n_tokens < 2``.
    """
    if text is not None and path is not None:
        raise ValueError("give at most one of text= and path=")
    if n_tokens < 2:
        raise ValueError(
            f"n_tokens must be >= 2: a pseudo-sentence needs context before its pilot "
            f"(got {n_tokens})"
        )
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer or None (got {limit})")
    tokenizer, model_bos = _tokenizer_of(model_or_tokenizer)
    if path is not None:
        source = str(path)
        raw = Path(path).expanduser().read_text(encoding="utf-8")
    elif text is not None:
        source, raw = "text", text
    else:
        source, raw = "pydoc_data.topics", default_corpus_text()
    clean = " ".join(raw.split()) if collapse_whitespace else raw.replace("\n", " ")
    chunks = chunk_ids(_encode(tokenizer, clean), n_tokens)
    if chunks.shape[0] == 0:
        raise ValueError(f"the text is shorter than one pseudo-sentence of {n_tokens} tokens")
    n_total = int(chunks.shape[0])
    index = torch.arange(n_total)
    if limit is not None and limit < n_total:
        gen = torch.Generator().manual_seed(seed)
        index = torch.randperm(n_total, generator=gen)[:limit].sort().values
    tokens = chunks[index]
    use_bos = model_bos if prepend_bos is None else prepend_bos
    use_bos = bool(use_bos)
    if use_bos:
        bos = getattr(tokenizer, "bos_token_id", None)
        if bos is None:
            raise ValueError("prepend_bos=True but the tokenizer has no bos_token_id")
        tokens = torch.cat([torch.full((tokens.shape[0], 1), int(bos)), tokens], dim=1)
    return PseudoSentences(
        tokens=tokens,
        chunk_index=index,
        n_tokens=n_tokens,
        source=source,
        text_sha256=text_sha256(clean),
        prepend_bos=use_bos,
        seed=seed,
        n_chunks_total=n_total,
        extra={
            "tokenizer": str(getattr(tokenizer, "name_or_path", type(tokenizer).__name__)),
            "collapse_whitespace": collapse_whitespace,
        },
    )


def gibberish(
    model_or_vocab: Any,
    n_sentences: int,
    *,
    n_tokens: int = 50,
    seed: int = 0,
    exclude: list[int] | None = None,
) -> PseudoSentences:
    """The gibberish control: uniformly random token ids, special tokens excluded.

    Args:
        model_or_vocab: a ``HookedTransformer`` (vocabulary ``model.cfg.d_vocab``, special
            ids from its tokenizer if it has one) or a vocabulary size.
        n_sentences: how many sequences.
        n_tokens: tokens per sequence.
        seed: generator seed.
        exclude: ids never drawn (default: the tokenizer's special ids, if any).

    >>> from tl_continuous.tiny import tiny_model
    >>> g = gibberish(tiny_model(), 4, n_tokens=6, exclude=[0])
    >>> g.tokens.shape, bool((g.tokens != 0).all())
    (torch.Size([4, 6]), True)
    """
    if n_sentences < 1 or n_tokens < 1:
        raise ValueError("n_sentences and n_tokens must be positive integers")
    if isinstance(model_or_vocab, int):
        vocab, special = model_or_vocab, []
    elif hasattr(model_or_vocab, "cfg"):
        vocab = int(model_or_vocab.cfg.d_vocab)
        tok = getattr(model_or_vocab, "tokenizer", None)
        if tok is not None:
            vocab = min(vocab, len(tok))
        special = list(getattr(tok, "all_special_ids", []) or [])
    else:
        raise TypeError(
            f"model_or_vocab must be a HookedTransformer or an int (got {type(model_or_vocab)})"
        )
    banned = set(special if exclude is None else exclude)
    allowed = torch.tensor([i for i in range(vocab) if i not in banned], dtype=torch.long)
    if allowed.numel() == 0:
        raise ValueError("exclude removes every token id")
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, allowed.numel(), (n_sentences, n_tokens), generator=gen)
    params = (
        f"gibberish vocab={vocab} exclude={sorted(banned)} seed={seed} n={n_sentences}x{n_tokens}"
    )
    return PseudoSentences(
        tokens=allowed[picks],
        chunk_index=torch.arange(n_sentences),
        n_tokens=n_tokens,
        source="gibberish",
        text_sha256=text_sha256(params),
        seed=seed,
        n_chunks_total=n_sentences,
        extra={"vocab": vocab, "excluded": sorted(banned)},
    )
