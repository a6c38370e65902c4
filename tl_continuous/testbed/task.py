"""The counting task: a readable, tokenizer-free vocabulary and a seeded data generator.

A prompt lists objects and fillers, then asks how many times one object occurs::

    <bos> apple . pear apple , apple how-many apple      ->  3

The body holds ``n`` copies of the *target* (0 to 9 of them, in one contiguous run or
scattered), copies of up to three *distractor* objects and some *filler* tokens. The prompt
ends with the query marker and the target's name; the answer (the next token) is the count
token ``str(n)``. Every token is one word, so prompts are written and read as plain strings
with :data:`VOCAB`.

>>> VOCAB.decode(VOCAB.encode("<bos> apple pear how-many apple"))
'<bos> apple pear how-many apple'
>>> example = CountingTask().sample(random.Random(0))
>>> VOCAB.decode([example.tokens[-2]]), example.count == example.tokens[1:-2].count(example.target)
('how-many', True)
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Int
from torch import Tensor

__all__ = [
    "COUNTS",
    "FILLERS",
    "OBJECTS",
    "VOCAB",
    "CountingExample",
    "CountingTask",
    "Vocabulary",
    "collate",
]

OBJECTS: tuple[str, ...] = (
    "apple",
    "pear",
    "plum",
    "fig",
    "lime",
    "kiwi",
    "grape",
    "peach",
    "lemon",
    "cherry",
)
FILLERS: tuple[str, ...] = (".", ",", "and", "the", "a")
COUNTS: tuple[str, ...] = tuple(str(k) for k in range(10))
BOS, PAD, QUERY = "<bos>", "<pad>", "how-many"


@dataclass(frozen=True)
class Vocabulary:
    """A word-level vocabulary: one token per word, encoded by position in ``words``.

    Attributes:
        words: every token's text, in id order.
    """

    words: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(set(self.words)) != len(self.words):
            raise ValueError("words must be unique")
        object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.words)})

    def __len__(self) -> int:
        return len(self.words)

    def id(self, word: str) -> int:
        """The id of one word.

        >>> VOCAB.id("3") - VOCAB.id("0")
        3
        """
        try:
            return self._index[word]
        except KeyError:
            raise ValueError(f"word must be one of the vocabulary's words (got {word!r})") from None

    def encode(self, text: str | Sequence[str]) -> Int[Tensor, " pos"]:
        """Token ids of a whitespace-separated string (or a list of words).

        >>> VOCAB.encode("<bos> apple how-many apple").tolist()
        [0, 2, 17, 2]
        """
        words = text.split() if isinstance(text, str) else list(text)
        return torch.tensor([self.id(w) for w in words], dtype=torch.long)

    def decode(self, ids: Tensor | Iterable[int]) -> str:
        """The words of token ids, joined by spaces.

        >>> VOCAB.decode([0, 2, 3])
        '<bos> apple pear'
        """
        flat = ids.flatten().tolist() if isinstance(ids, Tensor) else list(ids)
        return " ".join(self.words[int(i)] for i in flat)

    @property
    def count_ids(self) -> list[int]:
        """Ids of the count tokens ``"0"``..``"9"``, in count order."""
        return [self._index[c] for c in COUNTS]

    @property
    def object_ids(self) -> list[int]:
        """Ids of the object tokens."""
        return [self._index[o] for o in OBJECTS]

    @property
    def filler_ids(self) -> list[int]:
        """Ids of the filler tokens."""
        return [self._index[f] for f in FILLERS]


VOCAB = Vocabulary((BOS, PAD, *OBJECTS, *FILLERS, QUERY, *COUNTS))
"""The testbed's vocabulary (28 tokens): ``<bos>``, ``<pad>``, objects, fillers,
``how-many`` and the counts ``0``..``9``."""


@dataclass(frozen=True)
class CountingExample:
    """One prompt and its answer.

    Attributes:
        tokens: prompt ids, ``<bos> body... how-many target`` (no answer token).
        target: id of the counted object.
        count: number of target copies in the body (the answer is ``VOCAB.count_ids[count]``).
        contiguous: whether the target copies form one run.
        target_positions: positions (in ``tokens``) of the target copies in the body.
    """

    tokens: tuple[int, ...]
    target: int
    count: int
    contiguous: bool
    target_positions: tuple[int, ...]

    @property
    def text(self) -> str:
        """The prompt as words."""
        return VOCAB.decode(self.tokens)


@dataclass(frozen=True)
class CountingTask:
    """Distribution of counting prompts.

    Attributes:
        max_count: counts are drawn uniformly from ``0..max_count`` (at most 9).
        max_distractor_kinds: up to this many other objects appear in the body.
        max_distractor_copies: each distractor object appears 1 to this many times.
        max_fillers: 0 to this many filler tokens.
        p_contiguous: probability that the target copies form one run.
    """

    max_count: int = 9
    max_distractor_kinds: int = 3
    max_distractor_copies: int = 4
    max_fillers: int = 8
    p_contiguous: float = 0.5

    def __post_init__(self) -> None:
        if not 1 <= self.max_count <= 9:
            raise ValueError(f"max_count must be in 1..9 (got {self.max_count})")
        if not 0 <= self.max_distractor_kinds < len(OBJECTS):
            raise ValueError(
                f"max_distractor_kinds must be in 0..{len(OBJECTS) - 1} "
                f"(got {self.max_distractor_kinds})"
            )
        if not 0.0 <= self.p_contiguous <= 1.0:
            raise ValueError(f"p_contiguous must be in [0, 1] (got {self.p_contiguous})")

    @property
    def max_len(self) -> int:
        """Longest prompt the task produces."""
        body = (
            self.max_count + self.max_distractor_kinds * self.max_distractor_copies
        ) + self.max_fillers
        return body + 3

    def sample(self, rng: random.Random, count: int | None = None) -> CountingExample:
        """Draw one example (with a given count if ``count`` is set)."""
        n = rng.randint(0, self.max_count) if count is None else count
        target = rng.choice(OBJECTS)
        others = [o for o in OBJECTS if o != target]
        kinds = rng.sample(others, rng.randint(0, self.max_distractor_kinds))
        rest = [k for k in kinds for _ in range(rng.randint(1, self.max_distractor_copies))]
        rest += [rng.choice(FILLERS) for _ in range(rng.randint(0, self.max_fillers))]
        rng.shuffle(rest)
        contiguous = rng.random() < self.p_contiguous
        if contiguous:
            cut = rng.randint(0, len(rest))
            body = rest[:cut] + [target] * n + rest[cut:]
        else:
            body = rest + [target] * n
            rng.shuffle(body)
        words = [BOS, *body, QUERY, target]
        positions = tuple(i + 1 for i, w in enumerate(body) if w == target)
        return CountingExample(
            tokens=tuple(VOCAB.id(w) for w in words),
            target=VOCAB.id(target),
            count=n,
            contiguous=contiguous,
            target_positions=positions,
        )

    def batch(
        self, rng: random.Random, size: int
    ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"], Int[Tensor, " batch"]]:
        """A right-padded batch: tokens, index of each prompt's last token, answer ids.

        >>> tokens, last, answer = CountingTask().batch(random.Random(0), 4)
        >>> tokens.shape[0], bool((tokens[torch.arange(4), last] >= 2).all())
        (4, True)
        """
        examples = [self.sample(rng) for _ in range(size)]
        return collate(examples)


def collate(
    examples: Sequence[CountingExample],
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"], Int[Tensor, " batch"]]:
    """Right-pad examples with ``<pad>``; return tokens, last-token index and answer id."""
    width = max(len(e.tokens) for e in examples)
    pad = VOCAB.id(PAD)
    tokens = torch.full((len(examples), width), pad, dtype=torch.long)
    for row, e in enumerate(examples):
        tokens[row, : len(e.tokens)] = torch.tensor(e.tokens)
    last = torch.tensor([len(e.tokens) - 1 for e in examples], dtype=torch.long)
    counts = VOCAB.count_ids
    answer = torch.tensor([counts[e.count] for e in examples], dtype=torch.long)
    return tokens, last, answer
