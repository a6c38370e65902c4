"""Prompt templates, the bundled datasets, and character spans mapped to token spans.

>>> prompt, (lo, hi) = counting_prompt("apple", 3)
>>> prompt[lo:hi]
'apple apple apple'
>>> len(load_dataset("counting")) >= 30
True
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from tl_continuous.backends.base import Model

__all__ = [
    "COUNTING_TEMPLATE",
    "EVENTS_TEMPLATE",
    "SUMS_TEMPLATE",
    "apply_chat",
    "counting_prompt",
    "events_prompt",
    "load_dataset",
    "sums_prompt",
    "token_span",
]

COUNTING_TEMPLATE = (
    'Question: In the sentence "{sentence}", how many times is {word} mentioned? '
    "Reply with a single-digit number\nAnswer: "
)
EVENTS_TEMPLATE = (
    "How to {task}:\n{steps}\nQuestion: How many steps are listed above? "
    "Reply with a single-digit number\nAnswer: "
)
SUMS_TEMPLATE = "Question: {text} {question} Reply with a number\nAnswer: "

_DATASETS = ("counting", "events", "sums", "interpolation")


def load_dataset(name: str) -> list[dict[str, Any]]:
    """The items of a dataset shipped with the package (written for this project).

    Args:
        name: ``"counting"``, ``"events"``, ``"sums"`` or ``"interpolation"``.
    """
    if name not in _DATASETS:
        raise ValueError(f"name must be one of {_DATASETS} (got {name!r})")
    text = resources.files("tl_continuous.experiments").joinpath(f"datasets/{name}.json")
    return list(json.loads(text.read_text())["items"])


def counting_prompt(
    word: str, n: int, template: str = COUNTING_TEMPLATE
) -> tuple[str, tuple[int, int]]:
    """The counting prompt with ``word`` repeated ``n`` times, and the characters of the
    repetitions (``prompt[lo:hi]`` is ``"w w ... w"``)."""
    if n < 1:
        raise ValueError(f"n must be >= 1 (got {n})")
    if not word.strip():
        raise ValueError("word must contain a non-space character")
    sentence = " ".join([word] * n)
    if "{sentence}" not in template:
        raise ValueError("template must contain '{sentence}'")
    prefix = template.split("{sentence}")[0].format(word=word)
    prompt = template.format(sentence=sentence, word=word)
    return prompt, (len(prefix), len(prefix) + len(sentence))


def events_prompt(
    task: str, steps: list[str], template: str = EVENTS_TEMPLATE
) -> tuple[str, tuple[int, int]]:
    """A how-to text with one ``- step.`` line per step, and the characters from the first
    ``-`` to the last ``.`` of the steps.

    >>> p, (lo, hi) = events_prompt("boil water", ["Fill a pot", "Heat it"])
    >>> p[lo:hi]
    '- Fill a pot.\\n- Heat it.'
    """
    if not steps:
        raise ValueError("steps must hold at least one step")
    block = "\n".join(f"- {s.strip().rstrip('.')}." for s in steps)
    prefix = template.split("{steps}")[0].format(task=task)
    prompt = template.format(task=task, steps=block)
    return prompt, (len(prefix), len(prefix) + len(block))


def sums_prompt(
    text: str, question: str, a: int, template: str = SUMS_TEMPLATE
) -> tuple[str, tuple[int, int]]:
    """A word problem and the characters of the first occurrence of operand ``a``.

    >>> p, (lo, hi) = sums_prompt("Al has 12 pens and 30 pens.", "How many?", 12)
    >>> p[lo:hi]
    '12'
    """
    prefix = template.split("{text}")[0]
    where = text.find(str(a))
    if where < 0:
        raise ValueError(f"a={a} does not occur in text {text!r}")
    prompt = template.format(text=text, question=question)
    return prompt, (len(prefix) + where, len(prefix) + where + len(str(a)))


def apply_chat(model: Model, prompt: str) -> tuple[str, int]:
    """Wrap ``prompt`` as the user turn of the tokenizer's chat template.

    Returns:
        The templated text and the character offset of ``prompt`` inside it.
    """
    tokenizer = model.tokenizer
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError("chat=True needs a tokenizer with a chat template")
    text = str(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    )
    where = text.find(prompt)
    if where < 0:
        raise ValueError("the chat template altered the prompt; cannot locate the span")
    return text, where


def token_span(model: Model, prompt: str, lo: int, hi: int) -> tuple[int, int]:
    """First and last (inclusive) token positions of ``model.to_tokens(prompt)`` whose
    characters overlap ``prompt[lo:hi]`` (a BOS the model prepends is counted).

    Raises:
        ValueError: the span is empty or outside the prompt, or the tokenizer gives no
            character offsets.
    """
    if not 0 <= lo < hi <= len(prompt):
        raise ValueError(f"lo, hi must satisfy 0 <= lo < hi <= {len(prompt)} (got {lo}, {hi})")
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise ValueError("model must have a tokenizer to locate a text span")
    enc = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    tokens = model.to_tokens(prompt)[0].tolist()
    shift = len(tokens) - len(ids)
    if shift < 0 or tokens[shift:] != ids:
        raise ValueError("the model's tokens do not match the tokenizer's offsets for this prompt")
    hits = [k for k, (s, e) in enumerate(enc["offset_mapping"]) if s < hi and e > lo]
    if not hits:
        raise ValueError(f"no token covers characters {lo}..{hi} of the prompt")
    return hits[0] + shift, hits[-1] + shift
