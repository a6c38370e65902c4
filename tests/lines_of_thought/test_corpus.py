"""Pseudo-sentences: chunking, sampling, BOS handling, default corpus, gibberish."""

from __future__ import annotations

import pytest
import torch

from tl_continuous.lines_of_thought.corpus import (
    chunk_ids,
    default_corpus_text,
    gibberish,
    pseudo_sentences,
    text_sha256,
)
from tl_continuous.tiny import tiny_model


class WordTokenizer:
    """One id per whitespace-separated word (ids in order of first appearance); BOS is 0."""

    bos_token_id = 0
    all_special_ids = (0,)
    name_or_path = "words"

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        assert add_special_tokens is False
        return [self.vocab.setdefault(w, len(self.vocab) + 1) for w in text.split(" ") if w]


def test_chunks_are_the_text_in_order_without_overlap() -> None:
    text = " ".join(f"w{i}" for i in range(23))
    ps = pseudo_sentences(WordTokenizer(), text=text, n_tokens=5)
    assert ps.tokens.shape == (4, 5)  # 23 // 5, remainder dropped
    assert ps.tokens.flatten().tolist() == list(range(1, 21))
    assert ps.n_chunks_total == 4 and ps.chunk_index.tolist() == [0, 1, 2, 3]
    assert ps.text_sha256 == text_sha256(text)


def test_newlines_become_spaces_and_file_input(tmp_path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("a b\nc d\ne f")
    ps = pseudo_sentences(WordTokenizer(), path=path, n_tokens=2)
    assert ps.tokens.tolist() == [[1, 2], [3, 4], [5, 6]]
    assert ps.source == str(path)


def test_limit_and_seed_sample_without_replacement_in_text_order() -> None:
    text = " ".join(f"w{i}" for i in range(100))
    a = pseudo_sentences(WordTokenizer(), text=text, n_tokens=2, limit=10, seed=3)
    b = pseudo_sentences(WordTokenizer(), text=text, n_tokens=2, limit=10, seed=3)
    c = pseudo_sentences(WordTokenizer(), text=text, n_tokens=2, limit=10, seed=4)
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens)
    idx = a.chunk_index.tolist()
    assert idx == sorted(set(idx)) and len(idx) == 10
    assert a.tokens[:, 0].tolist() == [2 * i + 1 for i in idx]


def test_bos_is_prepended_to_every_chunk_only_on_request() -> None:
    text = "a b c d e f"
    plain = pseudo_sentences(WordTokenizer(), text=text, n_tokens=3)
    bos = pseudo_sentences(WordTokenizer(), text=text, n_tokens=3, prepend_bos=True)
    assert plain.tokens.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert bos.tokens.tolist() == [[0, 1, 2, 3], [0, 4, 5, 6]] and bos.prepend_bos


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="at most one"):
        pseudo_sentences(WordTokenizer(), text="a", path="x")
    with pytest.raises(ValueError, match="shorter than one"):
        pseudo_sentences(WordTokenizer(), text="a b", n_tokens=5)
    with pytest.raises(ValueError, match="no tokenizer"):
        pseudo_sentences(tiny_model(), text="a b")
    with pytest.raises(ValueError, match="n_tokens"):
        chunk_ids([1, 2], 0)


def test_default_corpus_is_deterministic() -> None:
    assert text_sha256(default_corpus_text()) == text_sha256(default_corpus_text())
    ps = pseudo_sentences(WordTokenizer(), n_tokens=50, limit=30)
    assert ps.source == "pydoc_data.topics" and len(ps) == 30 and ps.n_chunks_total > 1000


def test_gibberish_is_uniform_and_avoids_special_tokens() -> None:
    g = gibberish(20, 400, n_tokens=50, exclude=[0, 3], seed=1)
    counts = torch.bincount(g.tokens.flatten(), minlength=20)
    assert counts[0] == 0 and counts[3] == 0
    expected = g.tokens.numel() / 18
    assert (counts[counts > 0] - expected).abs().max() < 6 * expected**0.5
    assert torch.equal(g.tokens, gibberish(20, 400, n_tokens=50, exclude=[0, 3], seed=1).tokens)


@pytest.mark.model
def test_smollm2_pseudo_sentences_follow_its_tokenizer(smollm2) -> None:
    ps = pseudo_sentences(smollm2, text="The cat sat on the mat. " * 40, n_tokens=10, limit=3)
    assert not ps.prepend_bos and smollm2.cfg.default_prepend_bos is False
    assert (ps.tokens != smollm2.tokenizer.bos_token_id).all()
    text = smollm2.tokenizer.decode(ps.tokens[0])
    assert "cat" in text or "mat" in text
