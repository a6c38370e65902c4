"""Lean, resumable, sharded collection of pilot trajectories.

Each forward pass carries one temporary hook per read hook point; the hook slices the pilot
position out of the activation (``act[rows, pilot]``), moves that ``[batch, d_model]`` slice to
the CPU as float32 and returns nothing, so the model's computation is untouched and no full
activation is ever kept. The forward pass stops before the unembedding (``return_type=None``).
On an nnsight model each batch is one nnsight trace instead, which saves only the pilot rows
of each reading point and stops after the last
(:func:`tl_continuous.backends.nnsight.read_pilots`).

Shard folders (``collect_shards``):

* ``manifest.json``: what is being collected (model name and config, token hash, batch size,
  number of batches, hook names, corpus metadata). A rerun, or another worker, must agree
  with it, otherwise ``ValueError``.
* ``batch-00012.safetensors``: the trajectories, token ids and pilot positions of batch 12;
  its header holds the batch index and the SHA-256 of the payload. Each shard is written to
  a temporary file and renamed into place, so a shard either is complete or does not exist.
* Batch ``b`` belongs to worker ``b % n_workers``: worker ``i`` of ``n`` can run anywhere
  that sees the folder. A rerun skips shards that exist and pass their checksum.
* :func:`load_shards` merges every shard, verifies each checksum (:class:`CorruptShardError`
  names a damaged file) and refuses an incomplete folder (:class:`IncompleteShardsError`
  lists the missing batches and their workers).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_continuous._io import atomic_write, json_safe, read_safetensors, write_text
from tl_continuous._progress import progress as _progress
from tl_continuous.lines_of_thought.corpus import PseudoSentences
from tl_continuous.lines_of_thought.hooks import (
    FINAL_NORM_HOOK,
    HookKind,
    layer_hook_names,
    pilot_positions_from_mask,
)

if TYPE_CHECKING:
    from tl_continuous.backends.base import Model

__all__ = [
    "COMPLETE",
    "Collected",
    "CorruptShardError",
    "IncompleteShardsError",
    "batch_owner",
    "check_collection",
    "collect_shards",
    "collect_trajectories",
    "iter_shards",
    "load_shards",
    "model_metadata",
    "pilot_hooks",
    "read_manifest",
    "verify_shards",
]

MANIFEST = "manifest.json"
COMPLETE = "complete.json"
"""Written last, atomically, into a shard folder verified as one collection (see
:func:`~tl_continuous.lines_of_thought.launch.collect_launched`)."""
SHARD_FORMAT = "tl_continuous.lines_of_thought.shard/1"


@dataclass
class Collected:
    """What a collection returns: the parts :class:`LinesOfThought` is built from.

    ``LinesOfThought.from_collected`` turns it into the ensemble (collection does not import
    the result type, so the two modules depend one way).

    Attributes:
        trajectories: ``[n, layer, d_model]`` float32 on the CPU.
        layer_names: the hook read for each layer.
        tokens: ``[n, pos]`` token ids.
        pilot_positions: ``[n]`` position of each sequence's pilot token.
        metadata: model, hooks, corpus and token hash.
    """

    trajectories: Float[Tensor, "n layer d_model"]
    layer_names: list[str]
    tokens: Int[Tensor, "n pos"]
    pilot_positions: Int[Tensor, " n"]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class CollectionInputs:
    """Checked inputs of a collection (see :func:`check_collection`)."""

    tokens: Int[Tensor, "n pos"]
    attention_mask: Int[Tensor, "n pos"] | None
    names: list[str]
    metadata: dict[str, Any]


class CorruptShardError(ValueError):
    """A shard file is unreadable or its payload does not match its recorded checksum."""


class IncompleteShardsError(ValueError):
    """A shard folder lacks some batches."""

    def __init__(self, message: str, missing: list[int]) -> None:
        super().__init__(message)
        self.missing = missing


# --------------------------------------------------------------------------- helpers
def _on_nnsight(model: Model) -> bool:
    """Whether ``model`` is an nnsight model (which has no TransformerLens ``cfg``)."""
    from tl_continuous.backends import backend_name

    return getattr(model, "cfg", None) is None and backend_name(model) == "nnsight"


def _cfg(model: Model) -> Any:
    """``model.cfg``; for an nnsight model the same facts read from the wrapped Hugging Face
    model (:class:`~tl_continuous.backends.nnsight.ModelFacts`)."""
    if _on_nnsight(model):
        from tl_continuous.backends.nnsight import model_facts

        return model_facts(model)
    return model.cfg


def model_metadata(model: Model) -> dict[str, Any]:
    """Model name and its config as a JSON-safe dict."""
    cfg = _cfg(model)
    return {
        "model_name": str(cfg.model_name),
        "model_config": json_safe(cfg.to_dict()),
    }


def _tokens_sha256(tokens: Tensor, mask: Tensor | None) -> str:
    digest = hashlib.sha256(tokens.to(torch.int64).contiguous().numpy().tobytes())
    if mask is not None:
        digest.update(mask.to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _payload_sha256(tensors: Mapping[str, Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _write_safetensors(path: Path, tensors: Mapping[str, Tensor], header: dict[str, str]) -> None:
    from safetensors.torch import save_file

    data = {k: v.contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(data, str(tmp), metadata=header))


def batch_owner(batch: int, n_workers: int) -> int:
    """The worker that collects ``batch`` (round robin).

    >>> [batch_owner(b, 3) for b in range(5)]
    [0, 1, 2, 0, 1]
    """
    return batch % n_workers


def _as_tokens(
    tokens_or_corpus: Tensor | PseudoSentences,
) -> tuple[Int[Tensor, "n pos"], dict[str, Any]]:
    if isinstance(tokens_or_corpus, PseudoSentences):
        return tokens_or_corpus.tokens, {"corpus": tokens_or_corpus.metadata()}
    if not isinstance(tokens_or_corpus, Tensor):
        raise TypeError(
            "tokens_or_corpus must be a [n, pos] tensor of token ids or PseudoSentences "
            f"(got {type(tokens_or_corpus).__name__})"
        )
    if tokens_or_corpus.ndim != 2 or tokens_or_corpus.is_floating_point():
        raise ValueError(
            "tokens_or_corpus must be integer token ids of shape [n, pos] "
            f"(got {tokens_or_corpus.dtype} {tuple(tokens_or_corpus.shape)})"
        )
    return tokens_or_corpus, {}


# --------------------------------------------------------------------------- hooks
class _EnoughRead(Exception):
    """Raised by the last pilot hook: the rest of the forward pass is not needed."""


def pilot_hooks(
    names: list[str], pilots: Tensor, store: dict[str, Tensor], *, stop: bool = False
) -> list[tuple[str | Callable[..., Any], Callable[..., Any]]]:
    """Forward hooks that put ``act[rows, pilots]`` (float32, CPU) into ``store[name]``.

    Keyed by the name asked for, not ``hook.name``: on a ``TransformerBridge`` the block
    hooks are aliases and ``hook.name`` is the canonical name (``blocks.0.hook_out``).
    With ``stop`` the hook of the last name raises ``_EnoughRead`` once it has stored its
    slice, ending the forward there (as TransformerLens' own ``stop_at_layer`` does): the
    later blocks, the final norm and the unembedding, which a ``TransformerBridge`` runs
    even with ``return_type=None``, are skipped.
    """

    def reader(name: str) -> Callable[..., None]:
        last = stop and name == names[-1]

        def read(act: Tensor, hook: Any) -> None:
            rows = torch.arange(act.shape[0], device=act.device)
            store[name] = act[rows, pilots.to(act.device)].detach().to("cpu", torch.float32)
            if last:
                raise _EnoughRead

        return read

    return [(name, reader(name)) for name in names]


def _run_batch(
    model: Model,
    tokens: Tensor,
    mask: Tensor | None,
    names: list[str],
) -> tuple[Tensor, Tensor]:
    pilots = pilot_positions_from_mask(mask, tokens.shape[0], tokens.shape[1])
    if _on_nnsight(model):  # one nnsight trace that saves the pilot rows
        from tl_continuous.backends.nnsight import read_pilots

        with torch.inference_mode():
            read = read_pilots(model, tokens, mask, names, pilots)
        return torch.stack([read[n] for n in names], dim=1), pilots
    store: dict[str, Tensor] = {}
    device = model.cfg.device
    hooks = pilot_hooks(names, pilots, store, stop=True)
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks), suppress(_EnoughRead):
        model(
            tokens.to(device),
            return_type=None,
            attention_mask=None if mask is None else mask.to(device),
        )
    missing = [n for n in names if n not in store]
    if missing:
        raise ValueError(f"the model has no hook points {missing}")
    return torch.stack([store[n] for n in names], dim=1), pilots


def _check_model(model: Model, include_final_norm: bool) -> None:
    if _on_nnsight(model):  # its reading points are checked with the hook names
        return
    if include_final_norm and FINAL_NORM_HOOK not in model.hook_dict:
        raise ValueError(
            "include_final_norm=True but the model has no final normalisation "
            f"({FINAL_NORM_HOOK} is not a hook point)"
        )


def _check_tokens(model: Model, tokens: Tensor) -> None:
    """Token ids the model can run: at least one sequence of 1..n_ctx ids in the vocabulary."""
    n, pos = tokens.shape
    cfg = _cfg(model)
    if n == 0 or pos == 0:
        raise ValueError(
            f"tokens_or_corpus must hold at least one sequence of at least one token "
            f"(got shape {(n, pos)})"
        )
    if pos > cfg.n_ctx:
        raise ValueError(
            f"tokens_or_corpus has sequences of {pos} tokens but the model's context is "
            f"n_ctx={cfg.n_ctx}"
        )
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= cfg.d_vocab:
        raise ValueError(
            f"tokens_or_corpus must hold token ids in [0, d_vocab={cfg.d_vocab}) "
            f"(got ids in [{low}, {high}])"
        )


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text())
        int(manifest["n_batches"])
    except (ValueError, KeyError, TypeError) as err:
        raise CorruptShardError(
            f"manifest {path} is damaged ({err}); the shard folder cannot be trusted, "
            "collect into a new folder"
        ) from err
    if not isinstance(manifest, dict):
        raise CorruptShardError(f"manifest {path} is damaged (not a JSON object)")
    return manifest


def check_collection(
    model: Model,
    tokens_or_corpus: Int[Tensor, "n pos"] | PseudoSentences,
    *,
    attention_mask: Int[Tensor, "n pos"] | None = None,
    batch_size: int = 32,
    hook: HookKind = "resid_post",
    layers: list[int] | None = None,
    include_final_norm: bool = False,
    check_tokens: bool = True,
) -> CollectionInputs:
    """The input checks every collection runs first (in memory, sharded, under durations).

    Returns the token ids, the mask, the hook names to read and the metadata every
    collection records (corpus, model, hooks, token hash).

    Raises:
        TypeError, ValueError: an argument the model cannot run, named in the message.
    """
    tokens, meta = _as_tokens(tokens_or_corpus)
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer (got {batch_size})")
    if attention_mask is not None and attention_mask.shape != tokens.shape:
        raise ValueError("attention_mask must have the shape of the token ids")
    _check_model(model, include_final_norm)
    if check_tokens:
        _check_tokens(model, tokens)
    names = layer_hook_names(_cfg(model).n_layers, hook, layers, include_final_norm)
    if _on_nnsight(model):
        from tl_continuous.backends.nnsight import check_reading

        check_reading(model, names)
    meta |= model_metadata(model)
    meta |= {
        "hook": hook,
        "include_final_norm": include_final_norm,
        "tokens_sha256": _tokens_sha256(tokens, attention_mask),
    }
    if isinstance(tokens_or_corpus, PseudoSentences):
        meta["n_tokens"] = tokens_or_corpus.n_tokens
    return CollectionInputs(tokens, attention_mask, names, meta)


def _run_batches(
    model: Model,
    inputs: CollectionInputs,
    batches: list[int],
    batch_size: int,
    progress: bool,
    desc: str,
) -> Iterator[tuple[int, slice, Tensor, Tensor]]:
    """Run the batches numbered ``batches`` of ``inputs``, in order, under one progress bar.

    The loop of :func:`collect_trajectories` (every batch) and :func:`collect_shards` (this
    worker's unfinished ones). Yields each batch's number, its slice of the sequences, its
    trajectories and its pilot positions.
    """
    bar = _progress(batches, enabled=progress, total=len(batches), desc=f"lines of thought{desc}")
    for b in bar:
        sl = slice(b * batch_size, (b + 1) * batch_size)
        mask = None if inputs.attention_mask is None else inputs.attention_mask[sl]
        traj, pilots = _run_batch(model, inputs.tokens[sl], mask, inputs.names)
        yield b, sl, traj, pilots


# --------------------------------------------------------------------- in memory
def collect_trajectories(
    model: Model,
    tokens_or_corpus: Int[Tensor, "n pos"] | PseudoSentences,
    *,
    attention_mask: Int[Tensor, "n pos"] | None = None,
    batch_size: int = 32,
    hook: HookKind = "resid_post",
    layers: list[int] | None = None,
    include_final_norm: bool = False,
    progress: bool = True,
) -> Collected:
    """In-memory collection; see :meth:`LinesOfThought.collect` for the arguments.

    >>> from tl_continuous.tiny import tiny_model
    >>> got = collect_trajectories(tiny_model(), torch.randint(0, 50, (5, 4)), progress=False)
    >>> got.trajectories.dtype, got.trajectories.shape
    (torch.float32, torch.Size([5, 2, 64]))
    """
    inputs = check_collection(
        model,
        tokens_or_corpus,
        attention_mask=attention_mask,
        batch_size=batch_size,
        hook=hook,
        layers=layers,
        include_final_norm=include_final_norm,
    )
    n_batches = -(-int(inputs.tokens.shape[0]) // batch_size)
    parts: list[Tensor] = []
    pilots: list[Tensor] = []
    batches = _run_batches(model, inputs, list(range(n_batches)), batch_size, progress, "")
    for _, _, traj, pil in batches:
        parts.append(traj)
        pilots.append(pil)
    return Collected(
        trajectories=torch.cat(parts),
        layer_names=inputs.names,
        tokens=inputs.tokens.detach().cpu().long(),
        pilot_positions=torch.cat(pilots),
        metadata=inputs.metadata,
    )


# ------------------------------------------------------------------------ shards
def _shard_path(folder: Path, batch: int) -> Path:
    return folder / f"batch-{batch:05d}.safetensors"


def _read_shard(path: Path, batch: int, tokens_sha256: str | None = None) -> dict[str, Tensor]:
    try:
        header, tensors = read_safetensors(path)
    except Exception as err:
        raise CorruptShardError(
            f"shard {path} is unreadable ({err}); delete it and rerun the collection"
        ) from err
    if header.get("format") != SHARD_FORMAT or header.get("batch") != str(batch):
        raise CorruptShardError(f"shard {path} does not hold batch {batch}; delete it and rerun")
    if _payload_sha256(tensors) != header.get("sha256"):
        raise CorruptShardError(
            f"shard {path} fails its SHA-256 check (damaged); delete it and rerun the collection"
        )
    if tokens_sha256 is not None and header.get("tokens_sha256") != tokens_sha256:
        raise CorruptShardError(
            f"shard {path} belongs to another collection (its token hash differs from the "
            "manifest's); delete it and rerun the collection"
        )
    return tensors


def _manifest(
    tokens: Tensor, batch_size: int, names: list[str], metadata: dict[str, Any]
) -> dict[str, Any]:
    meta = {k: v for k, v in metadata.items() if k != "tokens_sha256"}
    meta.setdefault("n_tokens", None)
    return {
        "format": "tl_continuous.lines_of_thought.shards/1",
        "n_sequences": int(tokens.shape[0]),
        "seq_len": int(tokens.shape[1]),
        "batch_size": batch_size,
        "n_batches": -(-int(tokens.shape[0]) // batch_size),
        "tokens_sha256": metadata["tokens_sha256"],
        "layer_names": names,
        "metadata": meta,
    }


def collect_shards(
    model: Model,
    tokens_or_corpus: Int[Tensor, "n pos"] | PseudoSentences,
    shard_dir: str | os.PathLike[str],
    *,
    worker: int = 0,
    n_workers: int = 1,
    attention_mask: Int[Tensor, "n pos"] | None = None,
    batch_size: int = 32,
    hook: HookKind = "resid_post",
    layers: list[int] | None = None,
    include_final_norm: bool = False,
    progress: bool = True,
) -> list[int]:
    """Collect this worker's share of the batches into ``shard_dir``; return the batches run.

    Every worker must be given the same token ids, batch size and hooks (the manifest checks
    it). Finished, intact shards are skipped, so a rerun after an interruption resumes.
    Merge with :meth:`LinesOfThought.from_shards` once every worker is done. The arguments
    not listed below are as in :meth:`LinesOfThought.collect`.

    Args:
        worker: this worker's index, ``0 <= worker < n_workers``.
        n_workers: how many workers share the batches (batch ``b`` goes to ``b % n_workers``).

    Raises:
        NotADirectoryError: ``shard_dir`` is an existing file (or lies under one).
        ValueError: ``shard_dir`` holds another collection, or an argument is wrong.

    >>> import tempfile
    >>> from tl_continuous.lines_of_thought.ensemble import LinesOfThought
    >>> from tl_continuous.tiny import tiny_model
    >>> model, toks = tiny_model(), torch.randint(0, 50, (5, 4))
    >>> kw = dict(batch_size=2, progress=False)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     ran0 = collect_shards(model, toks, d, worker=0, n_workers=2, **kw)
    ...     ran1 = collect_shards(model, toks, d, worker=1, n_workers=2, **kw)
    ...     again = collect_shards(model, toks, d, **kw)
    ...     lot = LinesOfThought.from_shards(d)
    >>> ran0, ran1, again, lot.trajectories.shape
    ([0, 2], [1], [], torch.Size([5, 2, 64]))
    """
    if not 0 <= worker < n_workers:
        raise ValueError(f"worker must be in [0, n_workers={n_workers}) (got {worker})")
    inputs = check_collection(
        model,
        tokens_or_corpus,
        attention_mask=attention_mask,
        batch_size=batch_size,
        hook=hook,
        layers=layers,
        include_final_norm=include_final_norm,
        check_tokens=False,  # after the folder check, before a manifest is written
    )
    tokens, names = inputs.tokens, inputs.names
    manifest = _manifest(tokens, batch_size, names, inputs.metadata)
    folder = _shard_folder(shard_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise NotADirectoryError(
            f"shard_dir {folder} cannot be created: a part of its path is an existing file"
        ) from err
    manifest_path = folder / MANIFEST
    if manifest_path.is_file():
        old = _read_manifest(manifest_path)
        keys = ("n_sequences", "seq_len", "batch_size", "tokens_sha256", "layer_names")
        differ = [k for k in keys if old.get(k) != manifest[k]]
        if old["metadata"].get("model_config") != manifest["metadata"]["model_config"]:
            differ.append("model_config")
        if differ:
            raise ValueError(
                f"shard_dir {folder} holds a different collection (differs in {differ}); "
                "use another folder"
            )
    _check_tokens(model, tokens)  # after the folder check, before a manifest is written
    if not manifest_path.is_file():
        write_text(manifest_path, json.dumps(manifest, indent=1))

    mine = [b for b in range(manifest["n_batches"]) if batch_owner(b, n_workers) == worker]
    todo = []
    for b in mine:
        path = _shard_path(folder, b)
        if path.is_file():
            try:
                _read_shard(path, b, manifest["tokens_sha256"])
                continue
            except CorruptShardError:
                pass  # recomputed below
        todo.append(b)
    batches = _run_batches(model, inputs, todo, batch_size, progress, f" (worker {worker})")
    for b, sl, traj, pilots in batches:
        tensors = {
            "trajectories": traj,
            "tokens": tokens[sl].detach().cpu().long(),
            "pilot_positions": pilots,
        }
        header = {
            "format": SHARD_FORMAT,
            "batch": str(b),
            "sha256": _payload_sha256(tensors),
            "tokens_sha256": manifest["tokens_sha256"],
        }
        _write_safetensors(_shard_path(folder, b), tensors, header)
    return todo


def _shard_folder(shard_dir: str | os.PathLike[str]) -> Path:
    """``shard_dir`` as a path, refusing an existing file."""
    folder = Path(shard_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(
            f"shard_dir {folder} is an existing file, not a folder; give the path of a folder "
            "(it is created if missing)"
        )
    return folder


def _ranges(ids: list[int]) -> str:
    out: list[str] = []
    for i in ids:
        if out and out[-1].split("-")[-1] == str(i - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{i}"
        else:
            out.append(str(i))
    return ", ".join(out)


def _complete_manifest(shard_dir: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """The folder and manifest of a shard folder that has every batch (see :func:`load_shards`)."""
    folder = _shard_folder(shard_dir)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{folder} is not a shard folder (no {MANIFEST})")
    manifest = _read_manifest(manifest_path)
    n_batches = int(manifest["n_batches"])
    missing = [b for b in range(n_batches) if not _shard_path(folder, b).is_file()]
    if missing:
        raise IncompleteShardsError(
            f"{folder} lacks {len(missing)} of {n_batches} batches: {_ranges(missing)} "
            "(batch b belongs to worker b % n_workers); rerun those workers",
            missing,
        )
    return folder, manifest


def read_manifest(shard_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a complete shard folder (sizes, layer names, metadata).

    Raises:
        NotADirectoryError: ``shard_dir`` is an existing file.
        FileNotFoundError: no ``manifest.json`` in the folder.
        IncompleteShardsError: some batches are missing (listed in the message).
    """
    return _complete_manifest(shard_dir)[1]


def iter_shards(shard_dir: str | os.PathLike[str]) -> Iterator[dict[str, Tensor]]:
    """The shards of a complete folder, in batch order, one at a time, each verified.

    Each item holds ``trajectories`` ``[batch, layer, d_model]`` (float32), ``tokens`` and
    ``pilot_positions``; only one shard is in memory at a time (the out-of-core analysis of
    :mod:`~tl_continuous.lines_of_thought.streaming` reads folders this way).

    Raises:
        NotADirectoryError: ``shard_dir`` is an existing file.
        FileNotFoundError: no ``manifest.json`` in the folder.
        IncompleteShardsError: some batches are missing (listed in the message).
        CorruptShardError: a shard is unreadable or fails its checksum (raised when
            it is reached).
    """
    folder, manifest = _complete_manifest(shard_dir)
    expected = str(manifest["tokens_sha256"])
    for b in range(int(manifest["n_batches"])):
        yield _read_shard(_shard_path(folder, b), b, expected)


def verify_shards(shard_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Check a shard folder as one collection without merging it; return a summary.

    Every batch must be present and pass its checksum, and the shards together must hold
    the manifest's number of sequences, so a batch lost or written twice is caught. Shards
    are read one at a time (memory independent of the number of trajectories).

    Returns:
        ``n_sequences``, ``n_batches``, ``n_layers``, ``d_model`` and ``tokens_sha256``.

    Raises:
        NotADirectoryError: ``shard_dir`` is an existing file.
        FileNotFoundError: no ``manifest.json`` in the folder.
        IncompleteShardsError: some batches are missing (listed in the message).
        CorruptShardError: a shard is unreadable, fails its checksum, or the sizes
            disagree with the manifest.
    """
    folder, manifest = _complete_manifest(shard_dir)
    n_seen, shape = 0, (0, 0)
    for shard in iter_shards(folder):
        n_seen += int(shard["trajectories"].shape[0])
        shape = tuple(shard["trajectories"].shape[1:])  # type: ignore[assignment]
    if n_seen != int(manifest["n_sequences"]):
        raise CorruptShardError(
            f"{folder} holds {n_seen} sequences but its manifest says "
            f"{manifest['n_sequences']}; collect into a new folder"
        )
    return {
        "n_sequences": n_seen,
        "n_batches": int(manifest["n_batches"]),
        "n_layers": int(shape[0]),
        "d_model": int(shape[1]),
        "tokens_sha256": str(manifest["tokens_sha256"]),
    }


def load_shards(shard_dir: str | os.PathLike[str]) -> Collected:
    """Merge a complete shard folder (``LinesOfThought.from_shards`` makes it an ensemble).

    Raises:
        NotADirectoryError: ``shard_dir`` is an existing file.
        FileNotFoundError: no ``manifest.json`` in the folder.
        IncompleteShardsError: some batches are missing (listed in the message).
        CorruptShardError: a shard is unreadable or fails its checksum.
    """
    _, manifest = _complete_manifest(shard_dir)
    shards = list(iter_shards(shard_dir))
    tokens = torch.cat([s["tokens"] for s in shards])
    return Collected(
        trajectories=torch.cat([s["trajectories"] for s in shards]),
        layer_names=list(manifest["layer_names"]),
        tokens=tokens,
        pilot_positions=torch.cat([s["pilot_positions"] for s in shards]),
        metadata={**manifest["metadata"], "tokens_sha256": manifest["tokens_sha256"]},
    )
