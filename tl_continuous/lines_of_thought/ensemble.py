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

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from tl_continuous.lines_of_thought.corpus import PseudoSentences

__all__ = [
    "BLOCK_HOOK_NAME",
    "FINAL_NORM_HOOK",
    "FORMAT",
    "HookKind",
    "LinesOfThought",
    "layer_hook_names",
    "parse_layer_hook_names",
    "pilot_positions_from_mask",
]

FORMAT = "tl_continuous.lines_of_thought/1"
FINAL_NORM_HOOK = "ln_final.hook_normalized"
HookKind = Literal["resid_pre", "resid_mid", "resid_post"]
_HOOKS = ("resid_pre", "resid_mid", "resid_post")
#: the block hooks a trajectory reads: group 1 is the block, group 2 the :data:`HookKind`
BLOCK_HOOK_NAME = re.compile(r"blocks\.(\d+)\.hook_(resid_pre|resid_mid|resid_post)")


def layer_hook_names(
    n_layers: int,
    hook: str = "resid_post",
    layers: list[int] | None = None,
    include_final_norm: bool = False,
) -> list[str]:
    """Hook names read for a trajectory, in layer order.

    Args:
        n_layers: the model's number of blocks.
        hook: ``"resid_pre"``, ``"resid_mid"`` or ``"resid_post"``.
        layers: block indices (0-based; block ``i``'s ``resid_post`` is ``x(t = i + 1)``);
            default every block.
        include_final_norm: append ``ln_final.hook_normalized`` (not a layer; see module doc).

    >>> layer_hook_names(3, "resid_mid", [0, 2], include_final_norm=True)
    ['blocks.0.hook_resid_mid', 'blocks.2.hook_resid_mid', 'ln_final.hook_normalized']
    """
    if hook not in _HOOKS:
        raise ValueError(f"hook must be one of {_HOOKS} (got {hook!r})")
    chosen = list(range(n_layers)) if layers is None else [int(i) for i in layers]
    if not chosen and not include_final_norm:
        raise ValueError("layers must name at least one block")
    bad = [i for i in chosen if not 0 <= i < n_layers]
    if bad:
        raise ValueError(f"layers must be block indices in [0, {n_layers}) (got {bad})")
    if len(set(chosen)) != len(chosen) or chosen != sorted(chosen):
        raise ValueError(f"layers must be increasing and distinct (got {chosen})")
    names = [f"blocks.{i}.hook_{hook}" for i in chosen]
    if include_final_norm:
        names.append(FINAL_NORM_HOOK)
    return names


def parse_layer_hook_names(names: list[str]) -> tuple[HookKind, list[int], bool]:
    """The inverse of :func:`layer_hook_names`: ``(hook, layers, include_final_norm)``.

    Raises:
        ValueError: the names are not one hook kind's block hooks in block order, optionally
            followed by :data:`FINAL_NORM_HOOK`.

    >>> parse_layer_hook_names(["blocks.0.hook_resid_mid", "blocks.2.hook_resid_mid"])
    ('resid_mid', [0, 2], False)
    """
    final = bool(names) and names[-1] == FINAL_NORM_HOOK
    matches = [BLOCK_HOOK_NAME.fullmatch(n) for n in (names[:-1] if final else names)]
    kinds = {m.group(2) for m in matches if m is not None}
    if None in matches or len(kinds) > 1:
        raise ValueError(
            "layer_names must be blocks.{i}.hook_<one of resid_pre/mid/post>, optionally "
            f"followed by {FINAL_NORM_HOOK} (got {names})"
        )
    blocks = [int(m.group(1)) for m in matches if m is not None]
    hook = kinds.pop() if kinds else "resid_post"
    if blocks != sorted(set(blocks)):
        raise ValueError(f"layer_names must be in block order (got {names})")
    return hook, blocks, final  # type: ignore[return-value]


def pilot_positions_from_mask(
    attention_mask: Int[Tensor, "batch pos"] | None, batch: int, pos: int
) -> Int[Tensor, " batch"]:
    """Index of each row's last non-pad token (the last position without a mask).

    Works for left and right padding.

    >>> pilot_positions_from_mask(torch.tensor([[1, 1, 0], [0, 1, 1]]), 2, 3).tolist()
    [1, 2]
    """
    if attention_mask is None:
        return torch.full((batch,), pos - 1, dtype=torch.long)
    if attention_mask.shape != (batch, pos):
        raise ValueError(
            f"attention_mask must have shape {(batch, pos)} (got {tuple(attention_mask.shape)})"
        )
    mask = attention_mask.to("cpu").bool()
    if not mask.any(dim=1).all():
        raise ValueError("attention_mask has a row without any real token")
    idx = torch.arange(pos).expand(batch, pos)
    return torch.where(mask, idx, torch.full_like(idx, -1)).max(dim=1).values


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
        if n_layers is None:
            model = getattr(cache, "model", None)
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
        missing = [n for n in names if n not in names_in]
        if missing:
            raise ValueError(
                f"cache is missing the hooks {missing}; run run_with_cache with a names_filter "
                f"that keeps {names}"
            )
        first = cache[names[0]]
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
            act = cache[name]
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
        model: HookedTransformer,
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
            model: the ``HookedTransformer``.
            tokens_or_corpus: ``[n, pos]`` token ids or a :class:`PseudoSentences`.
            attention_mask: ``[n, pos]`` for padded ids; the pilot is the last real token.
            batch_size: sequences per forward pass.
            hook, layers, include_final_norm: see :func:`layer_hook_names`.
            shard_dir: folder for resumable collection.
            progress: show a progress bar.
        """
        from tl_continuous.lines_of_thought.collect import collect_shards, collect_trajectories

        if shard_dir is None:
            return collect_trajectories(
                model,
                tokens_or_corpus,
                attention_mask=attention_mask,
                batch_size=batch_size,
                hook=hook,
                layers=layers,
                include_final_norm=include_final_norm,
                progress=progress,
            )
        collect_shards(
            model,
            tokens_or_corpus,
            shard_dir,
            attention_mask=attention_mask,
            batch_size=batch_size,
            hook=hook,
            layers=layers,
            include_final_norm=include_final_norm,
            progress=progress,
        )
        return cls.from_shards(shard_dir)

    @classmethod
    def from_shards(cls, shard_dir: str | os.PathLike[str]) -> LinesOfThought:
        """Merge a shard folder written by ``collect_shards`` (every batch must be there)."""
        from tl_continuous.lines_of_thought.collect import load_shards

        return load_shards(shard_dir)

    # -------------------------------------------------------------- save/load
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write one safetensors file (tensors) whose header carries the JSON metadata.

        The file is written to a temporary name and renamed into place.
        """
        from tl_continuous.lines_of_thought.collect import write_safetensors_atomically

        tensors = {"trajectories": self.trajectories.contiguous()}
        if self.tokens is not None:
            tensors["tokens"] = self.tokens.contiguous()
        if self.pilot_positions is not None:
            tensors["pilot_positions"] = self.pilot_positions.contiguous()
        header = {
            "format": FORMAT,
            "layer_names": json.dumps(self.layer_names),
            "metadata": json.dumps(self.metadata),
        }
        path = Path(path).expanduser()
        write_safetensors_atomically(path, tensors, header)
        return path

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
        from tl_continuous.lines_of_thought.collect import read_safetensors

        header, tensors = read_safetensors(path, FORMAT, "LinesOfThought")
        return cls(
            trajectories=tensors["trajectories"],
            layer_names=json.loads(header["layer_names"]),
            tokens=tensors.get("tokens"),
            pilot_positions=tensors.get("pilot_positions"),
            metadata=json.loads(header["metadata"]),
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
