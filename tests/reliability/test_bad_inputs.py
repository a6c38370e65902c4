"""A catalogue of bad inputs across the public API.

Every case must raise a specific exception whose message names the argument and what was
expected, and must leave the model as it was: the same hooks on every HookPoint and every
module (including a user's own hooks, placed before the call), the same weights, the same
logits, and no ``model.continuous`` left behind. One parametrised table; the check of the
model is in the test itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from jaxtyping import TypeCheckError
from transformer_lens import HookedTransformer
from transformer_lens.hook_points import HookPoint

from tl_continuous import (
    Durations,
    LinesOfThought,
    blend_embeddings,
    continuous,
    install_continuous,
    tiny_model,
)
from tl_continuous.continuous.signal import remove_continuous
from tl_continuous.lines_of_thought.bases import TrajectoryBases, svd_bases
from tl_continuous.lines_of_thought.collect import (
    CorruptShardError,
    IncompleteShardsError,
    collect_shards,
    load_shards,
)
from tl_continuous.lines_of_thought.controls import layer_separability
from tl_continuous.lines_of_thought.corpus import chunk_ids, gibberish, pseudo_sentences
from tl_continuous.lines_of_thought.dynamics import ResidualStatistics, residuals
from tl_continuous.lines_of_thought.truncation import (
    truncation_kl_every_layer,
    truncation_kl_last_layer,
)

TOKENS = torch.tensor([[1, 2, 3, 4]])
_TORCH_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)


# ------------------------------------------------------------------ the model's state
@dataclass
class ModelState:
    hooks: dict[str, tuple[Any, ...]]
    weights: dict[str, torch.Tensor]
    hook_names: list[str]
    logits: torch.Tensor


def model_state(model: HookedTransformer) -> ModelState:
    """Every hook on every module and HookPoint (by identity), the weights and the logits."""
    hooks: dict[str, tuple[Any, ...]] = {}
    for name, module in model.named_modules():
        entry: list[Any] = [tuple(getattr(module, attr, {}).keys()) for attr in _TORCH_HOOK_DICTS]
        if isinstance(module, HookPoint):
            entry.append(tuple(id(h) for h in module.fwd_hooks))
            entry.append(tuple(id(h) for h in module.bwd_hooks))
        hooks[name] = tuple(entry)
    with torch.no_grad():
        logits = model(TOKENS).detach().clone()
    return ModelState(
        hooks=hooks,
        weights={k: v.detach().clone() for k, v in model.state_dict().items()},
        hook_names=sorted(model.hook_dict),
        logits=logits,
    )


def assert_unchanged(before: ModelState, after: ModelState) -> None:
    assert after.hooks == before.hooks, "hooks changed"
    assert after.hook_names == before.hook_names, "hook points changed"
    assert after.weights.keys() == before.weights.keys()
    for k, v in before.weights.items():
        assert torch.equal(after.weights[k], v), f"weight {k} changed"
    assert torch.equal(after.logits, before.logits), "logits changed"


def add_user_hooks(model: HookedTransformer) -> None:
    """A user's own hooks (permanent, temporary and plain PyTorch) that must survive."""
    model.blocks[0].attn.hook_attn_scores.add_hook(lambda x, hook: x, is_permanent=True)
    model.blocks[0].hook_resid_post.add_hook(lambda x, hook: x)
    model.blocks[-1].attn.hook_pattern.add_hook(lambda x, hook: x)
    model.embed.register_forward_hook(lambda m, a, out: None)


# ------------------------------------------------------------------ helpers for cases
class CharTokenizer:
    """A tokenizer with only ``encode``: one id per character (ids < 50)."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) % 50 for c in text]


def _forward(
    model: HookedTransformer, durations: Any, tokens: torch.Tensor = TOKENS, **kw: Any
) -> None:
    with continuous(model, durations, **kw):
        model(tokens)


def _lot(model: HookedTransformer, n: int = 12, pos: int = 6, seed: int = 0) -> LinesOfThought:
    gen = torch.Generator().manual_seed(seed)
    toks = torch.randint(0, model.cfg.d_vocab, (n, pos), generator=gen)
    return LinesOfThought.collect(model, toks, progress=False)


def _other_lot(d_model: int = 32, n_layers: int = 2) -> LinesOfThought:
    other = tiny_model("rotary", d_model=d_model, d_head=8, rotary_dim=8, n_layers=n_layers)
    return _lot(other)


def _shards(model: HookedTransformer, folder: Path) -> Path:
    toks = torch.randint(0, model.cfg.d_vocab, (6, 5), generator=torch.Generator().manual_seed(1))
    collect_shards(model, toks, folder, batch_size=2, progress=False)
    return folder


def _flip_bytes(model: HookedTransformer, folder: Path) -> None:
    path = _shards(model, folder) / "batch-00001.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-7] ^= 0xFF
    path.write_bytes(bytes(raw))
    load_shards(folder)


def _truncate_shard(model: HookedTransformer, folder: Path) -> None:
    path = _shards(model, folder) / "batch-00002.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    load_shards(folder)


def _missing_shard(model: HookedTransformer, folder: Path) -> None:
    (_shards(model, folder) / "batch-00001.safetensors").unlink()
    load_shards(folder)


def _damaged_manifest(model: HookedTransformer, folder: Path) -> None:
    manifest = _shards(model, folder) / "manifest.json"
    manifest.write_text(manifest.read_text()[:40])
    load_shards(folder)


def _foreign_shard(model: HookedTransformer, folder: Path) -> None:
    """A shard of another collection copied into the folder under a valid name."""
    _shards(model, folder / "a")
    other = torch.randint(0, 50, (6, 5), generator=torch.Generator().manual_seed(9))
    collect_shards(model, other, folder / "b", batch_size=2, progress=False)
    (folder / "b" / "batch-00001.safetensors").replace(folder / "a" / "batch-00001.safetensors")
    load_shards(folder / "a")


def _other_collection(model: HookedTransformer, folder: Path) -> None:
    _shards(model, folder)
    collect_shards(model, torch.zeros(6, 5, dtype=torch.long), folder, batch_size=2)


def _garbage_lot_file(model: HookedTransformer, folder: Path) -> None:
    path = folder / "lot.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    LinesOfThought.load(path)


def _decreasing_positions(model: HookedTransformer) -> None:
    def reverse(pos: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        return pos.flip(-1)

    with continuous(model, torch.ones(4)):
        model.run_with_hooks(TOKENS, fwd_hooks=[("continuous.hook_positions", reverse)])


def _negative_hooked_durations(model: HookedTransformer) -> None:
    with continuous(model, torch.ones(4)):
        model.run_with_hooks(
            TOKENS, fwd_hooks=[("continuous.hook_durations", lambda d, hook: d - 2)]
        )


def _zero_hooked_durations(model: HookedTransformer) -> None:
    with continuous(model, torch.ones(4)):
        model.run_with_hooks(
            TOKENS, fwd_hooks=[("continuous.hook_durations", lambda d, hook: d * 0)]
        )


def _zero_real_durations(model: HookedTransformer) -> None:
    """Positive durations on the pads only: the real tokens of row 0 have none."""
    toks = torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    with continuous(model, V([[2.0, 2, 0, 0], [1, 1, 1, 1]])):
        model(toks, attention_mask=mask)


def _shard_dir_is_a_file(model: HookedTransformer, folder: Path) -> None:
    path = folder / "not-a-folder"
    path.write_text("x")
    LinesOfThought.collect(
        model, torch.zeros(2, 3, dtype=torch.long), shard_dir=path, progress=False
    )


def _shard_dir_under_a_file(model: HookedTransformer, folder: Path) -> None:
    (folder / "file").write_text("x")
    collect_shards(model, torch.zeros(2, 3, dtype=torch.long), folder / "file" / "sub")


def _load_shards_of_a_file(model: HookedTransformer, folder: Path) -> None:
    (folder / "file").write_text("x")
    load_shards(folder / "file")


def _double_install(model: HookedTransformer) -> None:
    handle = install_continuous(model, torch.ones(4))
    try:
        install_continuous(model, torch.ones(4))
    finally:
        handle.remove()


def _error_inside_block(model: HookedTransformer) -> None:
    """A user's code fails inside the block (wrong token batch for the durations)."""
    with continuous(model, torch.ones(2, 4)):
        model(TOKENS)  # durations have 2 rows, the batch has 1


def _cache_without_hooks(model: HookedTransformer) -> None:
    _, cache = model.run_with_cache(TOKENS, names_filter=lambda n: n.endswith("resid_pre"))
    LinesOfThought.from_cache(cache)


def _cache_without_blocks(model: HookedTransformer) -> None:
    LinesOfThought.from_cache({"hook_embed": torch.zeros(1, 4, 64)})


def _padded_every_layer(model: HookedTransformer) -> None:
    toks = torch.randint(0, 50, (70, 6), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(toks)
    mask[:, -1] = 0
    lot = LinesOfThought.collect(model, toks, attention_mask=mask, progress=False)
    truncation_kl_every_layer(model, lot, TrajectoryBases.from_ensemble(lot), [2], progress=False)


def _trunc(model: HookedTransformer, lot: LinesOfThought, ks: list[int] | None = None) -> None:
    bases = TrajectoryBases.from_ensemble(lot)
    truncation_kl_last_layer(model, lot, bases, ks, progress=False)


def _bases_of_other_model(model: HookedTransformer) -> None:
    lot, other = _lot(model), _other_lot()
    other.layer_names = list(lot.layer_names)
    bases = TrajectoryBases.from_ensemble(other)
    truncation_kl_last_layer(model, lot, bases, [2], progress=False)


def _lot_of_three_layers(model: HookedTransformer) -> None:
    three = tiny_model("rotary", n_layers=3)
    lot = _lot(three)
    lot = LinesOfThought(
        lot.trajectories[:, :2], lot.layer_names[:2], lot.tokens, metadata=lot.metadata
    )
    _trunc(model, lot, [2])


def _stats_mixed(model: HookedTransformer) -> None:
    lot, other = _lot(model), _other_lot()
    bases = TrajectoryBases.from_ensemble(other)
    ResidualStatistics.from_tensors(lot.trajectories, bases.U, bases.S, progress=False)


def _separability_mixed(model: HookedTransformer) -> None:
    layer_separability(_lot(model).trajectories, _other_lot().trajectories, progress=False)


# ------------------------------------------------------------------ the catalogue
Fn = Callable[..., Any]


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # which tiny model the case runs against
    call: Fn  # (model) or (model, tmp_path)
    error: type[BaseException]
    match: str
    needs_dir: bool = False
    # Under the test suite's jaxtyping/beartype import hook a wrong type or shape is caught
    # at the call, before the library's own check: then the error must name this argument.
    arg: str | None = None


def _alibi() -> HookedTransformer:
    return tiny_model("learned", positional_embedding_type="alibi")


def _shortformer() -> HookedTransformer:
    return tiny_model("learned", positional_embedding_type="shortformer")


MODELS: dict[str, Callable[[], HookedTransformer]] = {
    "rotary": lambda: tiny_model("rotary"),
    "learned": lambda: tiny_model("learned"),
    "nopos": lambda: tiny_model("nopos", n_layers=1, attn_only=True),
    "alibi": _alibi,
    "shortformer": _shortformer,
}

V = torch.tensor
CASES: list[Case] = [
    # --- durations
    Case("negative duration", "rotary", lambda m: _forward(m, V([1.0, -1, 1, 1])),
         ValueError, r"values must be >= 0 \(smallest is -1\)"),
    Case("nan duration", "rotary", lambda m: _forward(m, V([1.0, float("nan"), 1, 1])),
         ValueError, r"values must be finite"),
    Case("inf duration", "learned", lambda m: _forward(m, V([1.0, float("inf"), 1, 1])),
         ValueError, r"values must be finite"),
    Case("3-d durations", "rotary", lambda m: _forward(m, torch.ones(1, 1, 4)),
         ValueError, r"values must have shape \[batch, pos\] or \[pos\].*\(1, 1, 4\)",
         arg="durations"),
    Case("empty durations", "rotary", lambda m: _forward(m, torch.ones(0)),
         ValueError, r"values must have shape .* pos >= 1"),
    Case("durations as a list", "rotary", lambda m: _forward(m, [1.0, 1.0, 1.0, 1.0]),
         TypeError, r"durations must be a Durations or a tensor \(got list\)", arg="durations"),
    Case("durations longer than the tokens", "rotary", lambda m: _forward(m, torch.ones(5)),
         ValueError, r"durations cover 5 tokens but this forward has 4"),
    Case("durations rows != token batch", "rotary", lambda m: _forward(m, torch.ones(3, 4)),
         ValueError, r"durations have 3 rows but the token batch has 1"),
    Case("all-zero durations", "rotary", lambda m: _forward(m, torch.zeros(4)),
         ValueError, r"values must have at least one positive duration per row"),
    Case("nan start", "rotary", lambda m: _forward(m, Durations(torch.ones(4), start=float("nan"))),
         ValueError, r"start must be finite"),
    Case("positions overflow float32", "rotary", lambda m: _forward(m, torch.full((4,), 3e38)),
         ValueError, r"values are too large: the positions .* overflow torch.float32"),
    Case("non-increasing positions (hooked)", "rotary", _decreasing_positions,
         ValueError, r"positions returned by continuous.hook_positions must be non-decreasing"),
    Case("negative hooked durations", "learned", _negative_hooked_durations,
         ValueError, r"durations returned by continuous.hook_durations must be >= 0"),
    Case("positions beyond the learned table", "learned",
         lambda m: _forward(m, V([1.0, 30, 30, 30])),
         ValueError, r"positions must map into the position table.*\[0, 63\]"),
    Case("negative start, learned table", "learned",
         lambda m: _forward(m, Durations(torch.ones(4), start=-2)),
         ValueError, r"table indices .* must lie in \[0, 63\] \(got \[-2"),
    Case("alibi positions", "alibi", lambda m: _forward(m, torch.ones(4)),
         ValueError, r"positional_embedding_type='alibi' \(supported: 'rotary', 'standard'\)"),
    Case("shortformer positions", "shortformer", lambda m: _forward(m, torch.ones(4)),
         ValueError, r"positional_embedding_type='shortformer'"),
    Case("layer index too large", "rotary", lambda m: _forward(m, torch.ones(4), layers=[5]),
         ValueError, r"layers must be in \[0, 1\] \(got \[5\]\)"),
    Case("negative layer index", "rotary", lambda m: _forward(m, torch.ones(4), layers=[-1]),
         ValueError, r"layers must be in \[0, 1\] \(got \[-1\]\)"),
    Case("all-zero hooked durations", "rotary", _zero_hooked_durations,
         ValueError, r"durations returned by continuous.hook_durations leave row 0 without a "
         r"token of positive duration: row 0 = \[0, 0, 0, 0\]"),
    Case("zero durations on every real token", "learned", _zero_real_durations,
         ValueError, r"continuous.hook_durations leave row 0 without a token of positive "
         r"duration \(pad positions do not count\): row 0 = \[2, 2, 0, 0\]"),
    Case("double install", "rotary", _double_install,
         ValueError, r"model already has a continuous signal installed"),
    Case("wrong batch inside the block", "nopos", _error_inside_block,
         ValueError, r"durations have 2 rows but the token batch has 1"),
    Case("reversed span", "rotary", lambda m: Durations.from_spans(4, [(2, 1)]),
         ValueError, r"spans must hold 0 <= first <= last < n_pos=4 \(got \(2, 1\)\)"),
    Case("span beyond the prompt", "rotary", lambda m: Durations.from_spans(4, [(1, 9)]),
         ValueError, r"spans must hold 0 <= first <= last < n_pos=4"),
    Case("n_pos 0", "rotary", lambda m: Durations.from_spans(0, []),
         ValueError, r"n_pos must be >= 1 \(got 0\)"),
    Case("word not in the prompt", "rotary",
         lambda m: Durations.from_word(["A", " pear"], None, "apple"),
         ValueError, r"word 'apple' does not occur in the prompt's tokens"),
    Case("blank word", "rotary", lambda m: Durations.from_word(["A", " b"], None, "  "),
         ValueError, r"word must contain a non-space character"),
    Case("occurrence out of range", "rotary",
         lambda m: Durations.from_word(["A", " b", " b"], None, "b", occurrences=[5]),
         ValueError, r"occurrences \[5\] out of range: 'b' occurs 2 times"),
    # --- embedding interpolation
    Case("prompts of different lengths", "rotary",
         lambda m: blend_embeddings(m, V([1, 2, 3]), V([1, 2]), [0.5]),
         ValueError, r"prompt_a and prompt_b must tokenise to the same length \(got 3 and 2"),
    Case("nan lambda", "rotary",
         lambda m: blend_embeddings(m, V([1, 2]), V([1, 3]), [float("nan")]),
         ValueError, r"lambdas must be finite"),
    Case("empty lambdas", "rotary", lambda m: blend_embeddings(m, V([1, 2]), V([1, 3]), []),
         ValueError, r"lambdas must not be empty"),
    Case("unknown blend method", "rotary",
         lambda m: blend_embeddings(m, V([1, 2]), V([1, 3]), [0.5], method="cubic"),  # type: ignore[arg-type]
         ValueError, r"method must be 'lerp' or 'slerp' \(got 'cubic'\)", arg="method"),
    Case("float token ids to blend", "rotary",
         lambda m: blend_embeddings(m, V([1.0, 2.0]), V([1, 3]), [0.5]),
         TypeError, r"prompt_a must be a string or an integer token tensor", arg="prompt_a"),
    # --- corpus
    Case("N_k = 1", "rotary",
         lambda m: pseudo_sentences(CharTokenizer(), text="x" * 99, n_tokens=1),
         ValueError, r"n_tokens must be >= 2: a pseudo-sentence needs context .* \(got 1\)"),
    Case("N_k = 0 chunks", "rotary", lambda m: chunk_ids([1, 2, 3], 0),
         ValueError, r"n_tokens must be a positive integer \(got 0\)"),
    Case("empty text", "rotary", lambda m: pseudo_sentences(CharTokenizer(), text="", n_tokens=4),
         ValueError, r"the text is shorter than one pseudo-sentence of 4 tokens"),
    Case("text too short", "rotary",
         lambda m: pseudo_sentences(CharTokenizer(), text="abc", n_tokens=50),
         ValueError, r"the text is shorter than one pseudo-sentence of 50 tokens"),
    Case("text and path", "rotary",
         lambda m: pseudo_sentences(CharTokenizer(), text="abc", path="x.txt"),
         ValueError, r"give at most one of text= and path="),
    Case("limit 0", "rotary", lambda m: pseudo_sentences(CharTokenizer(), text="a" * 9, limit=0),
         ValueError, r"limit must be a positive integer or None \(got 0\)"),
    Case("model without tokenizer", "rotary", lambda m: pseudo_sentences(m, text="abc"),
         ValueError, r"model_or_tokenizer: this model has no tokenizer"),
    Case("no gibberish sentences", "rotary", lambda m: gibberish(m, 0),
         ValueError, r"n_sentences and n_tokens must be positive integers"),
    # --- collection
    Case("collect: layer out of range", "rotary",
         lambda m: LinesOfThought.collect(m, torch.zeros(2, 3, dtype=torch.long), layers=[7]),
         ValueError, r"layers must be block indices in \[0, 2\) \(got \[7\]\)"),
    Case("collect: layers not increasing", "rotary",
         lambda m: LinesOfThought.collect(m, torch.zeros(2, 3, dtype=torch.long), layers=[1, 0]),
         ValueError, r"layers must be increasing and distinct \(got \[1, 0\]\)"),
    Case("collect: unknown hook", "rotary",
         lambda m: LinesOfThought.collect(m, torch.zeros(2, 3, dtype=torch.long), hook="resid"),  # type: ignore[arg-type]
         ValueError, r"hook must be one of \('resid_pre', 'resid_mid', 'resid_post'\)", arg="hook"),
    Case("collect: batch_size 0", "rotary",
         lambda m: LinesOfThought.collect(m, torch.zeros(2, 3, dtype=torch.long), batch_size=0),
         ValueError, r"batch_size must be a positive integer \(got 0\)"),
    Case("collect: float token ids", "rotary",
         lambda m: LinesOfThought.collect(m, torch.rand(2, 3), progress=False),
         ValueError, r"tokens_or_corpus must be integer token ids of shape \[n, pos\]",
         arg="tokens_or_corpus"),
    Case("collect: ids beyond the vocabulary", "rotary",
         lambda m: LinesOfThought.collect(m, torch.full((2, 3), 99), progress=False),
         ValueError, r"tokens_or_corpus must hold token ids in \[0, d_vocab=50\) .*\[99, 99\]"),
    Case("collect: no sequences", "rotary",
         lambda m: LinesOfThought.collect(m, torch.zeros(0, 3, dtype=torch.long), progress=False),
         ValueError, r"tokens_or_corpus must hold at least one sequence .*\(0, 3\)"),
    Case("collect: sequences beyond n_ctx", "learned",
         lambda m: LinesOfThought.collect(m, torch.zeros(2, 80, dtype=torch.long), progress=False),
         ValueError, r"sequences of 80 tokens but the model's context is n_ctx=64"),
    Case("collect: mask of another shape", "rotary",
         lambda m: LinesOfThought.collect(
             m, torch.zeros(2, 3, dtype=torch.long), attention_mask=torch.ones(2, 4)),
         ValueError, r"attention_mask must have the shape of the token ids", arg="attention_mask"),
    Case("collect: mask row without tokens", "rotary",
         lambda m: LinesOfThought.collect(
             m, torch.zeros(2, 3, dtype=torch.long),
             attention_mask=V([[1, 1, 1], [0, 0, 0]]), progress=False),
         ValueError, r"attention_mask has a row without any real token"),
    Case("shards: worker out of range", "rotary",
         lambda m, d: collect_shards(m, torch.zeros(2, 3, dtype=torch.long), d, worker=2,
                                     n_workers=2),
         ValueError, r"worker must be in \[0, n_workers=2\) \(got 2\)", needs_dir=True),
    Case("shards: folder of another collection", "rotary", _other_collection,
         ValueError, r"shard_dir .* holds a different collection \(differs in", needs_dir=True),
    Case("shards: flipped bytes", "rotary", _flip_bytes,
         CorruptShardError, r"batch-00001.safetensors fails its SHA-256 check", needs_dir=True),
    Case("shards: truncated shard", "rotary", _truncate_shard,
         CorruptShardError, r"batch-00002.safetensors is unreadable", needs_dir=True),
    Case("shards: missing shard", "rotary", _missing_shard,
         IncompleteShardsError, r"lacks 1 of 3 batches: 1 ", needs_dir=True),
    Case("shards: damaged manifest", "rotary", _damaged_manifest,
         CorruptShardError, r"manifest .*manifest.json is damaged", needs_dir=True),
    Case("shards: shard of another collection", "rotary", _foreign_shard,
         CorruptShardError, r"batch-00001.safetensors belongs to another collection",
         needs_dir=True),
    Case("shards: shard_dir is a file", "rotary", _shard_dir_is_a_file,
         NotADirectoryError, r"shard_dir .*not-a-folder is an existing file, not a folder",
         needs_dir=True),
    Case("shards: shard_dir under a file", "rotary", _shard_dir_under_a_file,
         NotADirectoryError, r"shard_dir .*file/sub cannot be created: a part of its path is an "
         r"existing file", needs_dir=True),
    Case("shards: load a file", "rotary", _load_shards_of_a_file,
         NotADirectoryError, r"shard_dir .*file is an existing file, not a folder",
         needs_dir=True),
    Case("shards: not a shard folder", "rotary", lambda m, d: load_shards(d),
         FileNotFoundError, r"is not a shard folder \(no manifest.json\)", needs_dir=True),
    Case("ensemble file: garbage", "rotary", _garbage_lot_file,
         ValueError, r"path .*lot.safetensors is not a readable safetensors file", needs_dir=True),
    # --- ensembles, bases, truncation, dynamics
    Case("cache missing the hooks", "rotary", _cache_without_hooks,
         ValueError, r"cache is missing the hooks \['blocks.0.hook_resid_post'"),
    Case("cache without blocks", "rotary", _cache_without_blocks,
         ValueError, r"cache holds no blocks.\* hooks"),
    Case("ensemble: layer names", "rotary",
         lambda m: LinesOfThought(torch.zeros(3, 2, 4), ["blocks.0.hook_resid_post"]),
         ValueError, r"layer_names must name each of the 2 layers \(got 1\)"),
    Case("ensemble: 2-d trajectories", "rotary", lambda m: LinesOfThought(torch.zeros(3, 4), []),
         ValueError, r"trajectories must be \[n_trajectories, n_layers, d_model\]",
         arg="trajectories"),
    Case("bases of one trajectory", "rotary",
         lambda m: TrajectoryBases.from_ensemble(_lot(m, n=1)),
         ValueError, r"lot must hold at least 2 trajectories to span bases \(got 1\)"),
    Case("svd rank 0", "rotary", lambda m: TrajectoryBases.from_ensemble(_lot(m), rank=0),
         ValueError, r"rank must be in \[1, min\(n_traj, d_model\) = 12\] \(got 0\)"),
    Case("svd in float16", "rotary",
         lambda m: svd_bases(torch.zeros(3, 2, 4), dtype=torch.float16),
         ValueError, r"dtype must be torch.float64 or torch.float32"),
    Case("K = 0", "rotary", lambda m: _trunc(m, _lot(m, n=70), [0]),
         ValueError, r"ks must lie in \[1, rank=64\] \(got \[0\]\)"),
    Case("K > d_model", "rotary", lambda m: _trunc(m, _lot(m, n=70), [2, 65]),
         ValueError, r"ks must lie in \[1, rank=64\] \(got \[65\]\)"),
    Case("bases: layer out of range", "rotary",
         lambda m: TrajectoryBases.from_ensemble(_lot(m)).top(5, 2),
         ValueError, r"layer must be in \[0, n_layers=2\) \(got 5\)"),
    Case("truncation: ensemble of another model", "rotary", lambda m: _trunc(m, _other_lot()),
         ValueError, r"lot was not collected from this model \(lot d_model=32, model d_model=64"),
    Case("truncation: bases of another model", "rotary", _bases_of_other_model,
         ValueError, r"bases were not built from this ensemble \(bases d_model=32"),
    Case("truncation: ensemble of a 3-layer model", "rotary", _lot_of_three_layers,
         ValueError, r"lot was collected from another model .*differs in \['n_layers'\]"),
    Case("truncation: padded ensemble, every layer", "rotary", _padded_every_layer,
         ValueError, r"the every-layer reading needs the pilot at the last position"),
    Case("dynamics: bases of another model", "rotary", _stats_mixed,
         ValueError, r"U must be \[layer=2, d_model=64, rank\] \(got shape \(2, 32, 12\)\)",
         arg="U"),
    Case("dynamics: t + tau beyond the layers", "rotary",
         lambda m: residuals(_lot(m).trajectories, torch.zeros(2, 64, 3), torch.ones(2, 3), 1, 1),
         ValueError, r"need 0 <= t and tau >= 1 and t \+ tau < 2 \(got t=1, tau=1\)"),
    Case("separability: ensembles of two models", "rotary", _separability_mixed,
         ValueError, r"a and b must share layers and d_model", arg="b"),
]  # fmt: skip


def test_the_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    model = MODELS[case.kind]()
    add_user_hooks(model)
    before = model_state(model)
    args = (model, tmp_path) if case.needs_dir else (model,)
    # the library's message, or (under the import hook) the type check naming the argument
    pattern = case.match if case.arg is None else rf"{case.match}|parameter '{case.arg}'"
    with pytest.raises((case.error, TypeCheckError), match=pattern) as info:
        case.call(*args)
    message = str(info.value)
    if isinstance(info.value, TypeCheckError) and not issubclass(case.error, TypeCheckError):
        assert case.arg is not None, f"unexpected type-check error: {message[:300]}"
        assert f"parameter '{case.arg}'" in message
    else:
        assert isinstance(info.value, case.error)
        assert re.search(case.match, message), f"{message!r} does not match {case.match!r}"
    assert not hasattr(model, "continuous")
    assert remove_continuous(model) is False
    assert_unchanged(before, model_state(model))


def test_the_state_check_can_fail() -> None:
    """The hygiene check notices a leaked hook and a changed weight."""
    model = tiny_model("rotary")
    before = model_state(model)
    handle = install_continuous(model, torch.ones(4))
    with pytest.raises(AssertionError, match="hooks changed"):
        assert_unchanged(before, model_state(model))
    handle.remove()
    assert_unchanged(before, model_state(model))
    with torch.no_grad():
        model.blocks[0].attn.W_Q[0, 0, 0] += 1.0
    with pytest.raises(AssertionError, match=r"weight blocks\.0\.attn\.W_Q changed"):
        assert_unchanged(before, model_state(model))


@pytest.mark.parametrize("row", [[0.0, 0, 0, 0], [0.0, 0, 0, 0, 5]])
def test_zero_hooked_durations_on_both_backends(make_tiny: Callable[..., Any], row) -> None:
    """A user's hook that zeroes a row's durations is refused on either backend; the model's
    hooks and weights are as before. ``[..., 5]``: the positive duration sits on a pad."""
    model = make_tiny("rotary")
    add_user_hooks(model)
    model(TOKENS)  # a bridge wires its own capture hooks at its first forward
    before = model_state(model)
    n = len(row)
    toks = torch.randint(1, 50, (2, n), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, n, dtype=torch.long)
    mask[1, -1] = 0  # not left padding, but a pad all the same: its key is masked
    zeros = V(row)

    def zero_row_1(d: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        d = d.clone()
        d[1] = zeros
        return d

    pattern = (
        r"durations returned by continuous.hook_durations leave row 1 without a token of "
        r"positive duration.*: row 1 = \[0, 0, 0, 0"
    )
    with pytest.raises(ValueError, match=pattern), continuous(model, torch.ones(n)):
        model.run_with_hooks(
            toks, attention_mask=mask, fwd_hooks=[("continuous.hook_durations", zero_row_1)]
        )
    assert not hasattr(model, "continuous")
    assert_unchanged(before, model_state(model))
