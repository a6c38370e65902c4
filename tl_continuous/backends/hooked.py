"""The ``HookedTransformer`` backend (TransformerLens 3.x).

Where a forward's facts come from: a pre-hook on every attention module reads the batch,
the query length, the padding mask and the KV-cache offset from its arguments (TransformerLens
has no hook that sees them all at once). Real positions: TransformerLens rotates queries and
keys by integer positions before ``hook_rot_q`` / ``hook_rot_k``; rotations in the same
planes compose, so a hook there rotates further by ``(index - integer position) * omega``,
with ``omega`` read from the module's own ``calculate_sin_cos_rotary`` (its base, scaling,
partial ``rotary_dim`` and pair layout are honoured). Learned positions: a forward hook on
``pos_embed`` returns the interpolated rows of ``W_pos``. The signal is registered by
``setattr`` plus ``model.setup()``, which rebuilds ``hook_dict``.

Rotary variants (each checked against an independent implementation in
``tests/test_rope_hooked.py``): linear scaling (``rotary_scaling_factor``, global layers
only), llama3 / NTK-by-parts (``use_NTK_by_parts_rope``), YaRN (``use_yarn_rope``; its
attention factor scales TransformerLens' tables, and the extra rotation keeps that amplitude)
and local rotary bases (``rotary_base_local`` on ``attn_types == "local"`` layers, Gemma 3):
each is a fixed ``omega`` per layer, so real positions rotate by
``(index - integer position) * omega``. Dynamic NTK (``use_dynamic_ntk_rope``) changes the
base with the context length and is refused.

Two features count *tokens* in TransformerLens, and under real positions a token count and a
position no longer agree; each is allowed only where the two cannot disagree, and raises a
``ValueError`` naming it beyond (only with real positions: with ``positions=False`` the model
sees integer positions, which are token counts):

* sliding-window attention (``attn_types`` ``"local"``, ``window_size``; Gemma 3: 512): the
  mask keeps the last ``window_size`` *tokens*, whatever their durations. While the keys
  (cached plus new) number at most ``window_size`` the window masks nothing, and the layer is
  plain causal attention at real positions; beyond, a window in time and a window in tokens
  differ, and the forward raises ``sliding window ...``.
* log-n attention scaling (``use_logn_attn``, Qwen-1): queries are scaled by
  ``log(position) / log(train length)`` past the training length, with integer positions.
  While both the token count and the largest real position stay within
  ``train_seq_length`` the scaling is the identity; beyond, the forward raises
  ``log-n attention scaling ...``.

>>> from tl_continuous.tiny import tiny_model
>>> BACKEND.positional_scheme(tiny_model("learned"))
'learned'
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.components.abstract_attention import AbstractAttention
from transformer_lens.hook_points import HookPoint

from tl_continuous.backends.base import Undo, add_permanent_hook, scores_hook
from tl_continuous.backends.hf_attention import check_route
from tl_continuous.continuous.positions import integer_positions, interpolate_table

__all__ = ["BACKEND", "HookedBackend", "rotary_frequencies", "rotate_further"]

SIGNAL_NAME = "continuous"
_SCHEMES = {"rotary": "rotary", "standard": "learned"}


def rotary_frequencies(attn: AbstractAttention) -> Float[Tensor, " rotary_dim"]:
    """Angle per unit position of each rotary dimension, float64, in the module's layout.

    Read from the module's own ``calculate_sin_cos_rotary`` at position 1 (``atan2`` of its
    sine and cosine, so amplitude factors such as YaRN's attention factor drop out).

    >>> from tl_continuous.tiny import tiny_model
    >>> rotary_frequencies(tiny_model("rotary").blocks[0].attn).shape
    torch.Size([16])
    """
    rotary_dim = attn.cfg.rotary_dim
    if rotary_dim is None:
        raise ValueError("the attention module has no rotary_dim (not a rotary model)")
    sin, cos = attn.calculate_sin_cos_rotary(
        rotary_dim, 2, base=attn._rotary_base(), dtype=torch.float64
    )
    return torch.atan2(sin[1], cos[1])


def rotate_further(
    x: Float[Tensor, "batch pos head d_head"],
    cos: Float[Tensor, "batch pos 1 rotary_dim"],
    sin: Float[Tensor, "batch pos 1 rotary_dim"],
    attn: AbstractAttention,
) -> Float[Tensor, "batch pos head d_head"]:
    """Rotate the rotary part of ``x`` by the angles whose cosines and sines are given.

    Uses the module's own ``rotate_every_two`` so the pair layout is the model's.
    """
    rotary_dim = cos.shape[-1]
    x_rot = x[..., :rotary_dim]
    rotated = x_rot * cos + attn.rotate_every_two(x_rot) * sin
    if rotary_dim == x.shape[-1]:
        return rotated
    return torch.cat([rotated, x[..., rotary_dim:]], dim=-1)


def _frequency_groups(model: Any) -> tuple[list[Tensor], list[int]]:
    """Distinct rotary frequency vectors and each layer's group (layers may differ)."""
    groups: list[Tensor] = []
    layer_group: list[int] = []
    for block in model.blocks:
        omega = rotary_frequencies(block.attn)
        for g, known in enumerate(groups):
            if known.shape == omega.shape and torch.equal(known, omega):
                layer_group.append(g)
                break
        else:
            groups.append(omega)
            layer_group.append(len(groups) - 1)
    return groups, layer_group


class HookedBackend:
    """The :class:`~.base.Backend` of ``HookedTransformer``."""

    name = "hooked"

    def n_layers(self, model: Any) -> int:
        return int(model.cfg.n_layers)

    def attached_signal(self, model: Any) -> Any:
        return getattr(model, SIGNAL_NAME, None)

    def positional_scheme(self, model: Any) -> str:
        scheme = str(model.cfg.positional_embedding_type)
        return _SCHEMES.get(scheme, scheme)

    def check_positions(self, model: Any) -> None:
        scheme = model.cfg.positional_embedding_type
        if scheme not in _SCHEMES:
            raise ValueError(
                f"continuous positions are not implemented for positional_embedding_type="
                f"{scheme!r} (supported: 'rotary', 'standard'); pass positions=False to use "
                "duration-weighted attention alone"
            )
        if scheme == "rotary" and model.cfg.use_dynamic_ntk_rope:
            raise ValueError(
                "continuous positions are not implemented for use_dynamic_ntk_rope=True (the "
                "rotary base changes with the context length); pass positions=False"
            )

    def attach_signal(self, model: Any, signal: Any) -> Undo:
        setattr(model, SIGNAL_NAME, signal)

        def detach() -> None:
            if getattr(model, SIGNAL_NAME, None) is signal:
                delattr(model, SIGNAL_NAME)
            model.setup()

        try:
            model.setup()
        except BaseException:
            detach()
            raise
        return detach

    def attention_route(self, model: Any) -> str:
        return "eager"  # TransformerLens 3.9's attention always forms the score matrix

    def set_attention_route(self, model: Any, route: str) -> Undo:
        if check_route(route) != "eager":
            raise ValueError(
                f"route={route!r}: HookedTransformer always computes attention with an explicit "
                "score matrix (eager); for a fused kernel load the model as a TransformerBridge, "
                f"e.g. load_model(..., backend='bridge', attn_implementation={route!r})"
            )
        return lambda: None

    def kv_prefix(self, model: Any, prefix: Tensor) -> Any:
        """Run ``prefix`` once into a frozen TransformerLens key/value cache; return it."""
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

        cache = TransformerLensKeyValueCache.init_cache(
            model.cfg, model.cfg.device, prefix.shape[0]
        )
        ones = torch.ones_like(prefix)
        model(prefix, attention_mask=ones, past_kv_cache=cache, return_type=None)
        cache.freeze()  # the continuations' keys/values are never appended
        return cache

    def kv_continue(self, model: Any, tokens: Tensor, cache: Any, repeat: int) -> Tensor:
        """Logits ``[repeat * batch, pos, vocab]`` of ``tokens`` after the cached prefix, the
        cache's rows tiled ``repeat`` times (``K``-major); ``cache`` is left as it was."""
        big = cache if repeat == 1 else _repeat_cache(cache, repeat)
        rows = tokens.repeat(repeat, 1)
        logits: Tensor = model(rows, attention_mask=torch.ones_like(rows), past_kv_cache=big)
        return logits

    def kv_branches(self, model: Any, token: Tensor, cache: Any, m: int) -> Tensor:
        """Logits ``[m, batch, vocab]`` of ``m`` independent continuations of the cached prefix
        by ``token`` ``[batch, 1]``; hooks tell the branches apart and change each one.

        On a rotary model the branches run as ``m`` positions of one continuation
        (``[batch, m]``: hooks see ``[batch, m, ...]``): an attention mask that counts only the
        first of them puts every branch at the prefix length, and each attention module's
        causal mask is replaced, for this call, by the one a single continuation would get,
        with each branch seeing its own key and none of the others'. The prefix's keys and
        values are then read once per sequence instead of once per branch. Other models
        (learned positions, which zero the position rows of masked tokens; dynamic NTK or
        log-n scaling, which read the token count) tile the cache's rows instead (hooks see
        ``[m * batch, 1, ...]``, ``K``-major). ``cache`` is left as it was.
        """
        b = token.shape[0]
        if m == 1 or not _branches_along_positions(model):
            tiled = self.kv_continue(model, token, cache, m)[:, -1]
            return tiled.reshape(m, b, -1)
        prefix = int(cache.previous_attention_mask.shape[1])
        rows = token.expand(b, m)
        mask = torch.zeros_like(rows)
        mask[:, 0] = 1  # later branches repeat the first one's position
        with _branch_masks(model, prefix, m):
            logits: Tensor = model(rows, attention_mask=mask, past_kv_cache=cache)
        return logits.transpose(0, 1)

    def install(
        self,
        model: Any,
        signal: Any,
        *,
        layers: Sequence[int],
        attention: bool,
        positions: bool,
    ) -> list[Undo]:
        undo: list[Undo] = []
        try:
            scheme = self.positional_scheme(model) if positions else None
            undo.extend(_state_hooks(model, signal, real_positions=scheme == "rotary"))
            groups, layer_group = _frequency_groups(model) if scheme == "rotary" else ([], [])
            for layer, block in enumerate(model.blocks):
                attn = block.attn
                if attention and layer in layers:
                    undo.append(add_permanent_hook(attn.hook_attn_scores, scores_hook(signal)))
                if scheme == "rotary":
                    omega = groups[layer_group[layer]]
                    key = layer_group[layer]
                    undo.append(
                        add_permanent_hook(
                            attn.hook_rot_q, _rotary_hook(signal, attn, omega, key, query=True)
                        )
                    )
                    undo.append(
                        add_permanent_hook(
                            attn.hook_rot_k, _rotary_hook(signal, attn, omega, key, query=False)
                        )
                    )
            if scheme == "learned":
                handle = model.pos_embed.register_forward_hook(
                    _pos_embed_hook(signal), with_kwargs=True
                )
                undo.append(handle.remove)
        except BaseException:
            for u in reversed(undo):
                u()
            raise
        return undo


def _state_hooks(model: Any, signal: Any, *, real_positions: bool) -> list[Undo]:
    """Reset the state at every forward; compute it before the first attention layer; with
    ``real_positions``, refuse the token-counting features beyond where they are the
    identity (see the module docstring)."""

    def reset(module: nn.Module, args: Any) -> None:
        signal.reset()

    def before_attention(module: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        query = kwargs["query_input"] if "query_input" in kwargs else args[0]
        entry = kwargs.get("past_kv_cache_entry")
        offset = 0 if entry is None else int(entry.past_keys.shape[1])
        length = offset + int(query.shape[1])
        state = signal.ensure(
            int(query.shape[0]), length, offset, kwargs.get("attention_mask"), query.device
        )
        if real_positions:
            _check_token_counting(module, state, length)

    handles = [model.register_forward_pre_hook(reset), model.embed.register_forward_pre_hook(reset)]
    for block in model.blocks:
        handles.append(block.attn.register_forward_pre_hook(before_attention, with_kwargs=True))
    return [h.remove for h in handles]


def _check_token_counting(attn: Any, state: Any, length: int) -> None:
    """Raise where sliding-window attention or log-n scaling would count tokens, not time."""
    cfg = attn.cfg
    if getattr(attn, "attn_type", "global") == "local" and length > cfg.window_size:
        raise ValueError(
            f"sliding window attention (layer {attn.layer_id}, window_size={cfg.window_size} "
            f"tokens) is not defined under real positions beyond the window: this forward "
            f"has {length} keys, and the window would count tokens, not positions. Keep the "
            f"context within {cfg.window_size} tokens, or pass positions=False"
        )
    if cfg.use_logn_attn:
        train = cfg.train_seq_length or cfg.n_ctx
        reach = max(float(length), float(state.index.max()) + 1.0)
        if reach > train:
            raise ValueError(
                f"log-n attention scaling (use_logn_attn) is not defined under real positions "
                f"past the training length {train}: this forward reaches position {reach:g}, "
                "and TransformerLens would scale by token count, not position. Keep the "
                "context and the positions within it, or pass positions=False"
            )


def _rotation(
    signal: Any, omega: Tensor, group: int, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """``cos`` and ``sin`` ``[batch, key_pos, 1, rotary_dim]`` of the extra rotary angles."""
    state = signal.current()
    key = ("rotary", group, str(device), dtype)
    if key not in state.extra:
        if "rotary_delta" not in state.extra:
            length = state.index.shape[-1]
            whole = integer_positions(state.valid, length, state.index.device)
            state.extra["rotary_delta"] = state.index - whole.to(torch.float64)
        angles = state.extra["rotary_delta"].to(device)[..., None, None] * omega.to(device)
        state.extra[key] = (angles.cos().to(dtype), angles.sin().to(dtype))
    cos_sin: tuple[Tensor, Tensor] = state.extra[key]
    return cos_sin


def _rotary_hook(
    signal: Any, attn: AbstractAttention, omega: Tensor, group: int, query: bool
) -> Any:
    def hook(x: Tensor, hook: HookPoint) -> Tensor:
        cos, sin = _rotation(signal, omega, group, x.device, x.dtype)
        if query:
            cos, sin = cos[:, -x.shape[1] :], sin[:, -x.shape[1] :]
        return rotate_further(x, cos, sin, attn)

    return hook


def _pos_embed_hook(signal: Any) -> Any:
    def hook(module: nn.Module, args: Any, kwargs: dict[str, Any], output: Tensor) -> Tensor:
        names = ("tokens", "past_kv_pos_offset", "attention_mask")
        given = dict(zip(names, args, strict=False)) | kwargs
        tokens = given["tokens"]
        offset = int(given.get("past_kv_pos_offset", 0) or 0)
        mask = given.get("attention_mask")
        state = signal.ensure(
            int(tokens.shape[0]), offset + int(tokens.shape[-1]), offset, mask, output.device
        )
        valid = None if state.valid is None else state.valid[:, offset:]
        table = module.W_pos
        assert isinstance(table, Tensor)
        return interpolate_table(table, state.index[:, offset:], valid)

    return hook


def _branches_along_positions(model: Any) -> bool:
    """Whether :meth:`HookedBackend.kv_branches` may run branches as positions."""
    cfg = model.cfg
    return bool(
        cfg.positional_embedding_type == "rotary"
        and not getattr(cfg, "use_dynamic_ntk_rope", False)
        and not getattr(cfg, "use_logn_attn", False)
        and cfg.attention_dir == "causal"
        and all(isinstance(block.attn, AbstractAttention) for block in model.blocks)
    )


@contextmanager
def _branch_masks(model: Any, prefix: int, m: int) -> Iterator[None]:
    """Within the ``with`` body, every attention module masks a ``[batch, m]`` continuation
    of a ``prefix``-long cache as ``m`` separate one-token continuations: query ``j`` sees
    the prefix keys that one continuation would see (its own sliding window included) and
    key ``prefix + j``, nothing else. The padding mask is ignored (the prefix has none; it
    only moves the branches' positions)."""
    patched = []
    try:
        for block in model.blocks:
            attn = block.attn
            single = attn._make_causal_mask(1, prefix + 1, prefix, attn.IGNORE.device)[0, 0, 0]
            own = torch.eye(m, dtype=torch.bool, device=single.device) & single[prefix]
            allowed = torch.cat([single[:prefix].expand(m, prefix), own], dim=1)
            attn.apply_causal_mask = _masker(attn, allowed)
            patched.append(attn)
        yield
    finally:
        for attn in patched:
            del attn.apply_causal_mask


def _masker(attn: Any, allowed: Tensor) -> Any:
    def apply_causal_mask(scores: Tensor, offset: int = 0, attention_mask: Any = None) -> Tensor:
        if tuple(scores.shape[-2:]) != tuple(allowed.shape):
            raise RuntimeError(
                f"branch mask {tuple(allowed.shape)} does not fit scores {tuple(scores.shape)}"
            )
        ignore = attn.IGNORE.to(scores.device, scores.dtype)
        return torch.where(allowed.to(scores.device), scores, ignore)

    return apply_causal_mask


def _repeat_cache(cache: Any, m: int) -> Any:
    """A frozen copy of a key/value cache with every row repeated ``m`` times (K-major)."""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

    entries = [
        TransformerLensKeyValueCacheEntry(
            past_keys=e.past_keys.repeat(m, 1, 1, 1),
            past_values=e.past_values.repeat(m, 1, 1, 1),
            frozen=True,
        )
        for e in cache.entries
    ]
    return TransformerLensKeyValueCache(
        entries=entries,
        previous_attention_mask=cache.previous_attention_mask.repeat(m, 1),
        frozen=True,
    )


BACKEND = HookedBackend()
