"""``LinesOfThought``: an ensemble of pilot trajectories ``[n_trajectories, n_layers, d_model]``.

A trajectory (line of thought) is the residual stream of one sequence's *pilot* token (its
last, or last non-pad, token) read at one hook per block: ``x(t)`` for ``t = 1..L`` when the
hook is ``resid_post`` (the default; the embedding, ``t = 0``, is left out). The residual after
the final normalisation (``ln_final.hook_normalized``) is not a layer; it can be appended as an
extra, clearly named, last entry (``include_final_norm=True``).

Trajectories are stored in float32 on the CPU whatever the model's dtype and devices.

>>> from tl_continuous.tiny import tiny_model
>>> model = tiny_model()
>>> lot = LinesOfThought.collect(model, torch.randint(0, 50, (6, 8)), progress=False)
>>> lot.trajectories.shape, lot.layer_names
(torch.Size([6, 2, 64]), ['blocks.0.hook_resid_post', 'blocks.1.hook_resid_post'])
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_continuous._io import load_tensors, reading, save_tensors
from tl_continuous.lines_of_thought.collect import Collected, collect_shards, collect_trajectories
from tl_continuous.lines_of_thought.collect import load_shards as _load_shards
from tl_continuous.lines_of_thought.hooks import (
    HookKind,
    layer_hook_names,
    pilot_positions_from_mask,
)

if TYPE_CHECKING:
    from tl_continuous.backends.base import Model
    from tl_continuous.lines_of_thought.corpus import PseudoSentences

__all__ = ["FORMAT", "VERSION", "LinesOfThought"]

FORMAT = "tl_continuous.lines_of_thought"
VERSION = 1


@dataclass
class LinesOfThought:
    """An ensemble of lines of thought.

    Attributes:
        trajectories: ``[n_trajectories, n_layers, d_model]`` float32 pilot residuals.
        layer_names: the hook read at each layer index (``blocks.{i}.hook_resid_post``...).
        tokens: ``[n_trajectories, pos]`` token ids of each sequence, if known.
        pilot_positions: ``[n_trajectories]`` position of the pilot in each row of ``tokens``.
        metadata: JSON-safe facts: model name and config, corpus hash, N_k, hook, ...
    """

    trajectories: Float[Tensor, "n_traj n_layers d_model"]
    layer_names: list[str]
    tokens: Int[Tensor, "n_traj pos"] | None = None
    pilot_positions: Int[Tensor, " n_traj"] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.trajectories.ndim != 3:
            raise ValueError(
                "trajectories must be [n_trajectories, n_layers, d_model] "
                f"(got shape {tuple(self.trajectories.shape)})"
            )
        if not self.trajectories.is_floating_point():
            raise TypeError(f"trajectories must be floating point (got {self.trajectories.dtype})")
        n, n_layers, _ = self.trajectories.shape
        if len(self.layer_names) != n_layers:
            raise ValueError(
                f"layer_names must name each of the {n_layers} layers (got {len(self.layer_names)})"
            )
        if self.tokens is not None and (self.tokens.ndim != 2 or self.tokens.shape[0] != n):
            raise ValueError(f"tokens must be [{n}, pos] (got shape {tuple(self.tokens.shape)})")
        if self.pilot_positions is not None and self.pilot_positions.shape != (n,):
            raise ValueError(f"pilot_positions must have shape ({n},)")

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return int(self.trajectories.shape[0])

    @property
    def n_trajectories(self) -> int:
        return int(self.trajectories.shape[0])

    @property
    def n_layers(self) -> int:
        return int(self.trajectories.shape[1])

    @property
    def d_model(self) -> int:
        return int(self.trajectories.shape[2])

    def layer_index(self, name: str) -> int:
        """Position of a hook name in :attr:`layer_names` (``ValueError`` if absent)."""
        if name not in self.layer_names:
            raise ValueError(f"layer {name!r} is not in this ensemble ({self.layer_names})")
        return self.layer_names.index(name)

    def subset(self, index: Int[Tensor, " k"] | slice | list[int]) -> LinesOfThought:
        """The trajectories at ``index`` (metadata kept)."""
        return LinesOfThought(
            trajectories=self.trajectories[index],
            layer_names=list(self.layer_names),
            tokens=None if self.tokens is None else self.tokens[index],
            pilot_positions=None if self.pilot_positions is None else self.pilot_positions[index],
            metadata=dict(self.metadata),
        )

    # ----------------------------------------------------------- constructors
    @classmethod
    def from_cache(
        cls,
        cache: Mapping[str, Tensor] | Any,
        pilot_positions: Int[Tensor, " batch"] | None = None,
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        *,
        hook: HookKind = "resid_post",
        layers: list[int] | None = None,
        include_final_norm: bool = False,
        tokens: Int[Tensor, "batch pos"] | None = None,
        n_layers: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> LinesOfThought:
        """Ensemble from an ``ActivationCache`` (or a dict of hook name -> activation).

        A cache restricted with ``names_filter`` to the needed hooks is enough.

        Args:
            cache: activations ``[batch, pos, d_model]`` by hook name.
            pilot_positions: the pilot's position per row; default: last non-pad token
                (from ``attention_mask``) or the last position.
            attention_mask: ``[batch, pos]``, 1 for real tokens.
            hook, layers, include_final_norm: which hooks make up a trajectory (see
                :func:`layer_hook_names`).
            tokens: the token ids, recorded with the ensemble.
            n_layers: the model's block count; default: ``cache.model.cfg.n_layers`` or the
                blocks found in the cache.
            metadata: extra facts to record.

        Raises:
            ValueError: the cache lacks a needed hook (the message lists them) or shapes
                disagree.

        >>> from tl_continuous.tiny import tiny_model
        >>> model = tiny_model()
        >>> toks = torch.randint(0, 50, (3, 5))
        >>> _, cache = model.run_with_cache(toks, names_filter=lambda n: n.endswith("resid_post"))
        >>> LinesOfThought.from_cache(cache, tokens=toks).trajectories.shape
        torch.Size([3, 2, 64])
        """
        names_in = list(cache.keys())
        model = getattr(cache, "model", None)
        if n_layers is None:
            if model is not None and hasattr(model, "cfg"):
                n_layers = int(model.cfg.n_layers)
            else:
                found = [int(n.split(".")[1]) for n in names_in if n.startswith("blocks.")]
                if not found:
                    raise ValueError(
                        "cache holds no blocks.* hooks; run run_with_cache with "
                        f"names_filter=lambda n: n.endswith('hook_{hook}')"
                    )
                n_layers = max(found) + 1
        names = layer_hook_names(n_layers, hook, layers, include_final_norm)
        found_keys = {n: _cache_key(n, names_in, model) for n in names}
        missing = [n for n, key in found_keys.items() if key is None]
        if missing:
            raise ValueError(
                f"cache is missing the hooks {missing}; run run_with_cache with a names_filter "
                f"that keeps {names}"
            )
        keys = {n: key for n, key in found_keys.items() if key is not None}
        first = cache[keys[names[0]]]
        batch = int(first.shape[0])
        per_layer: list[Tensor] = []
        if first.ndim == 3:
            pos = int(first.shape[1])
            if pilot_positions is None:
                pilot_positions = pilot_positions_from_mask(attention_mask, batch, pos)
            pilot_positions = torch.as_tensor(pilot_positions, dtype=torch.long).cpu()
            if pilot_positions.shape != (batch,):
                raise ValueError(f"pilot_positions must have shape ({batch},)")
        for name in names:
            act = cache[keys[name]]
            if act.shape[0] != batch:
                raise ValueError(f"cache[{name!r}] has batch {act.shape[0]}, expected {batch}")
            if act.ndim == 3:
                assert pilot_positions is not None
                rows = torch.arange(batch, device=act.device)
                act = act[rows, pilot_positions.to(act.device)]
            elif act.ndim != 2:
                raise ValueError(f"cache[{name!r}] must be [batch, pos, d_model]")
            per_layer.append(act.detach().to("cpu", torch.float32))
        meta = {"hook": hook, "include_final_norm": include_final_norm}
        meta |= metadata or {}
        return cls(
            trajectories=torch.stack(per_layer, dim=1),
            layer_names=names,
            tokens=None if tokens is None else tokens.detach().cpu().long(),
            pilot_positions=pilot_positions,
            metadata=meta,
        )

    @classmethod
    def collect(
        cls,
        model: Model,
        tokens_or_corpus: Int[Tensor, "batch pos"] | PseudoSentences,
        *,
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        batch_size: int = 32,
        hook: HookKind = "resid_post",
        layers: list[int] | None = None,
        include_final_norm: bool = False,
        shard_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
    ) -> LinesOfThought:
        """Run the model over token ids (or pseudo-sentences) keeping only the pilots.

        Batched forward passes with hooks that slice the pilot position inside the hook
        (never a full cache). With ``shard_dir`` every batch is written to that folder as it
        finishes and a rerun skips finished batches (see
        :func:`tl_continuous.lines_of_thought.collect.collect_shards` to split the work over
        several workers).

        Args:
            model: a ``HookedTransformer``, a ``TransformerBridge`` or an nnsight
                ``LanguageModel`` (each batch one nnsight trace; see
                :mod:`tl_continuous.backends.nnsight`).
            tokens_or_corpus: ``[n, pos]`` token ids or a :class:`PseudoSentences`.
            attention_mask: ``[n, pos]`` for padded ids; the pilot is the last real token.
            batch_size: sequences per forward pass.
            hook, layers, include_final_norm: see :func:`layer_hook_names`.
            shard_dir: folder for resumable collection.
            progress: show a progress bar.
        """
        options: dict[str, Any] = {
            "attention_mask": attention_mask,
            "batch_size": batch_size,
            "hook": hook,
            "layers": layers,
            "include_final_norm": include_final_norm,
            "progress": progress,
        }
        if shard_dir is None:
            return cls.from_collected(collect_trajectories(model, tokens_or_corpus, **options))
        collect_shards(model, tokens_or_corpus, shard_dir, **options)
        return cls.from_shards(shard_dir)

    @classmethod
    def from_shards(cls, shard_dir: str | os.PathLike[str]) -> LinesOfThought:
        """Merge a shard folder written by ``collect_shards`` (every batch must be there)."""
        return cls.from_collected(_load_shards(shard_dir))

    @classmethod
    def from_collected(cls, collected: Collected) -> LinesOfThought:
        """The ensemble made of what a collection returned (see :mod:`.collect`)."""
        return cls(
            trajectories=collected.trajectories,
            layer_names=list(collected.layer_names),
            tokens=collected.tokens,
            pilot_positions=collected.pilot_positions,
            metadata=dict(collected.metadata),
        )

    # -------------------------------------------------------------- save/load
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write one safetensors file (tensors) whose header carries the JSON metadata.

        The file is written to a temporary name and renamed into place.
        """
        tensors = {"trajectories": self.trajectories}
        if self.tokens is not None:
            tensors["tokens"] = self.tokens
        if self.pilot_positions is not None:
            tensors["pilot_positions"] = self.pilot_positions
        fields = {"layer_names": self.layer_names, "metadata": self.metadata}
        return save_tensors(path, FORMAT, VERSION, tensors, fields)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LinesOfThought:
        """Read a file written by :meth:`save`.

        >>> import tempfile, pathlib
        >>> lot = LinesOfThought(torch.zeros(2, 1, 3), ["blocks.0.hook_resid_post"])
        >>> with tempfile.TemporaryDirectory() as d:
        ...     back = LinesOfThought.load(lot.save(pathlib.Path(d) / "lot.safetensors"))
        >>> back.trajectories.shape
        torch.Size([2, 1, 3])
        """
        fields, tensors = load_tensors(path, FORMAT, VERSION, "LinesOfThought")
        with reading(path, "LinesOfThought"):
            return cls(
                trajectories=tensors["trajectories"],
                layer_names=fields["layer_names"],
                tokens=tensors.get("tokens"),
                pilot_positions=tensors.get("pilot_positions"),
                metadata=fields["metadata"],
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tensors kept as tensors); inverse of :meth:`from_dict`."""
        return {
            "trajectories": self.trajectories,
            "layer_names": list(self.layer_names),
            "tokens": self.tokens,
            "pilot_positions": self.pilot_positions,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinesOfThought:
        return cls(**data)


def _cache_key(name: str, names_in: list[str], model: Any) -> str | None:
    """The key under which ``cache`` holds hook ``name``, or ``None``.

    A ``TransformerBridge`` cache restricted by ``names_filter`` to canonical names
    (``blocks.0.hook_out``) holds no alias (``blocks.0.hook_resid_post``); the cache's model
    maps the alias to its HookPoint, whose ``name`` is the canonical one. On a
    ``HookedTransformer`` a HookPoint's name is the hook name itself.
    """
    if name in names_in:
        return name
    point = getattr(model, "hook_dict", {}).get(name)
    canonical = getattr(point, "name", None)
    return canonical if canonical in names_in else None
