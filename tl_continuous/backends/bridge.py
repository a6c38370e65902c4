"""The ``TransformerBridge`` backend (TransformerLens 3.9 and 4.x, any Hugging Face model).

A bridge runs the Hugging Face model it wraps, so the continuous mechanism goes where Hugging
Face computes:

* **Per-forward state.** A forward pre-hook on the wrapped base model (``LlamaModel``,
  ``GPT2Model``, ...: ``original_model.base_model``) sees ``input_ids`` (or
  ``inputs_embeds``), the 2-D ``attention_mask`` and ``past_key_values`` on every call, also
  under ``run_with_hooks`` / ``run_with_cache`` / ``generate``; it computes the signal there, so
  ``continuous.hook_durations`` and ``continuous.hook_positions`` fire inside the forward.
* **Attention routes.** TransformerLens' attention bridges form the score matrix themselves
  (``"eager"``, the default: ``hook_attn_scores`` and ``hook_pattern`` fire). On the
  ``"sdpa"`` and ``"flex_attention"`` routes (:meth:`BridgeBackend.set_attention_route`,
  ``load_model(..., attn_implementation=...)``) each attention bridge hands the work to the
  Hugging Face attention module it wraps, which calls the fused kernel of that name: no
  ``[query, key]`` matrix, no ``hook_attn_scores``/``hook_pattern``/``hook_rot_q``/``hook_rot_k``;
  ``hook_in``, ``hook_q``/``hook_k``/``hook_v`` (separate projections), ``hook_z`` and
  ``hook_out`` still fire.
* **Duration-weighted attention.** On the eager route ``log d`` is added in permanent,
  prepended hooks of ``blocks.{i}.attn.hook_attn_scores`` (pre-softmax, after the mask, as on
  ``HookedTransformer``); on a fused route, inside the kernel as a per-key bias
  (:mod:`.hf_attention`).
* **Rotary positions.** A forward pre-hook on each Hugging Face rotary module replaces its
  ``position_ids`` argument by the real table indices of the new tokens. Hugging Face then
  builds ``cos``/``sin`` itself, so the model's own rope variant (grouped-query attention,
  partial rotary, linear / dynamic / YaRN / llama3 scaling) is honoured, and the masks, built
  before from the integer positions, are untouched. (Passing fractional ``position_ids`` to
  the model's forward instead would trip Hugging Face's packed-sequence detection.)
* **Learned positions.** A forward hook on the position-embedding table (GPT-2's ``wpe``)
  returns rows interpolated at the real indices (:func:`.positions.interpolate_table`).
* **The signal's HookPoints.** ``TransformerBridge.__setattr__`` registers a module that has
  ``get_hooks()``; removal deletes the attribute and the two registry entries.

Other positional schemes (ALiBi, relative buckets, ...) raise an error that names them.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tl_continuous.backends.base import Undo, add_permanent_hook, scores_hook
from tl_continuous.backends.hf_attention import (
    FUSED_ROUTES,
    attach_bias,
    check_route,
    continuous_implementation,
    set_implementation,
)
from tl_continuous.continuous.positions import interpolate_table

__all__ = ["BACKEND", "BridgeBackend", "base_model", "rotary_modules", "wrap_hf_model"]

SIGNAL_NAME = "continuous"
_SCHEMES = {"rotary": "rotary", "standard": "learned"}


def wrap_hf_model(hf_model: nn.Module, *, dtype: torch.dtype | None = None) -> Any:
    """A ``TransformerBridge`` around a Hugging Face causal LM built in code (no folder).

    ``hf_model.config.architectures`` (or the class name) names the architecture adapter.
    """
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

    config = hf_model.config
    arch = (getattr(config, "architectures", None) or [type(hf_model).__name__])[0]
    bridge = build_bridge_from_module(hf_model, arch, hf_config=config)
    if dtype is not None:
        bridge.cfg.dtype = dtype
    return bridge


def base_model(model: Any) -> nn.Module:
    """The Hugging Face base model (the one that takes ``input_ids``) a bridge wraps."""
    hf = model.original_model
    base = getattr(hf, "base_model", None)
    if not isinstance(base, nn.Module):
        raise ValueError(f"cannot find the base model of {type(hf).__name__}")
    return base


def rotary_modules(model: Any) -> list[nn.Module]:
    """The Hugging Face rotary-embedding modules of a bridge (one, or one per attention type)."""
    found: list[nn.Module] = []
    for module in base_model(model).modules():
        inner = getattr(module, "original_component", None)
        if isinstance(inner, nn.Module) and type(inner).__name__.endswith("RotaryEmbedding"):
            if inner not in found:
                found.append(inner)
        elif type(module).__name__.endswith("RotaryEmbedding") and module not in found:
            found.append(module)
    return found


def _position_table(model: Any) -> nn.Module | None:
    pos_embed = getattr(model, "pos_embed", None)
    inner = getattr(pos_embed, "original_component", None)
    return inner if isinstance(getattr(inner, "weight", None), Tensor) else None


#: bridges whose attention runs on a fused route -> that route (absent: eager)
_FUSED: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


def _attention_bridges(model: Any) -> list[nn.Module]:
    """Each block's TransformerLens attention bridge (all must wrap a Hugging Face module)."""
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    found = [getattr(block, "attn", None) for block in model.blocks]
    if not all(isinstance(a, AttentionBridge) and a.original_component for a in found):
        raise ValueError(
            "fused attention routes need every block's attention to be a TransformerLens "
            "AttentionBridge around a Hugging Face attention module"
        )
    return [a for a in found if a is not None]


def _set_implementation(model: Any, name: str) -> Undo:
    """Set the Hugging Face attention implementation name; return what restores it."""
    modules = [bridge.original_component for bridge in _attention_bridges(model)]
    return set_implementation(model.original_model.config, modules, name)


def _delegate(bridges: list[nn.Module]) -> None:
    """Let each attention bridge hand its forward to the Hugging Face module it wraps
    (``AttentionBridge.forward``: ``hook_in``, the wrapped module, ``hook_out``)."""
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    for bridge in bridges:
        # object.__setattr__: the bridge's own __setattr__ would set the wrapped module's
        delegated = AttentionBridge.forward.__get__(bridge)
        object.__setattr__(bridge, "forward", delegated)


def _undelegate(bridges: list[nn.Module]) -> None:
    for bridge in bridges:
        bridge.__dict__.pop("forward", None)


class BridgeBackend:
    """The :class:`~.base.Backend` of ``TransformerBridge``."""

    name = "bridge"

    def n_layers(self, model: Any) -> int:
        return int(model.cfg.n_layers)

    def attached_signal(self, model: Any) -> Any:
        return getattr(model, SIGNAL_NAME, None)

    def attention_route(self, model: Any) -> str:
        return _FUSED.get(model, "eager")

    def set_attention_route(self, model: Any, route: str) -> Undo:
        """Put every attention bridge of ``model`` on ``route`` (see the module docstring).

        Raises:
            ValueError: ``route`` is not a route, the bridge is in compatibility mode (its
                processed weights reach only TransformerLens' own attention) and ``route`` is
                fused, or an attention block does not wrap a Hugging Face module.
        """
        check_route(route)
        previous = self.attention_route(model)
        if route == previous:
            return lambda: None
        if route in FUSED_ROUTES and getattr(model, "compatibility_mode", False):
            raise ValueError(
                f"route={route!r}: a bridge in compatibility mode computes with processed "
                "weights in TransformerLens' own attention; use the eager route, or load the "
                "bridge without compatibility mode"
            )
        if getattr(model, SIGNAL_NAME, None) is not None:
            raise ValueError(
                "cannot change the attention route while a continuous signal is installed; "
                "pass route= to continuous() instead"
            )
        bridges = _attention_bridges(model)
        restore_name = _set_implementation(model, route)
        if route == "eager":
            _undelegate(bridges)
            _FUSED.pop(model, None)
        else:
            _delegate(bridges)
            _FUSED[model] = route

        def restore() -> None:
            restore_name()
            if previous == "eager":
                _undelegate(bridges)
                _FUSED.pop(model, None)
            else:
                _delegate(bridges)
                _FUSED[model] = previous

        return restore

    def positional_scheme(self, model: Any) -> str:
        scheme = str(getattr(model.cfg, "positional_embedding_type", "unknown"))
        return _SCHEMES.get(scheme, scheme)

    def check_positions(self, model: Any) -> None:
        scheme = self.positional_scheme(model)
        hint = "; pass positions=False to use duration-weighted attention alone"
        if scheme == "rotary" and not rotary_modules(model):
            raise ValueError(
                f"continuous positions: {type(model.original_model).__name__} is rotary but no "
                f"Hugging Face rotary-embedding module was found{hint}"
            )
        if scheme == "learned" and _position_table(model) is None:
            raise ValueError(
                "continuous positions: the model has learned positions but no position table "
                f"(pos_embed with a weight) was found{hint}"
            )
        if scheme not in ("rotary", "learned"):
            raise ValueError(
                f"continuous positions are not implemented for positional_embedding_type="
                f"{scheme!r} (supported: 'rotary', 'standard'){hint}"
            )

    def attach_signal(self, model: Any, signal: Any) -> Undo:
        setattr(model, SIGNAL_NAME, signal)  # TransformerBridge registers its HookPoints

        def detach() -> None:
            if getattr(model, SIGNAL_NAME, None) is signal:
                delattr(model, SIGNAL_NAME)
            for name in signal.get_hooks():
                model._hook_registry.pop(f"{SIGNAL_NAME}.{name}", None)

        return detach

    def kv_prefix(self, model: Any, prefix: Tensor) -> Any:
        """Run ``prefix`` once; return Hugging Face's key/value cache of it.

        Only the last position's logits are computed (``logits_to_keep=1``): the prefix
        is run for its keys and values, and the unembedding of every position is most of
        a forward's cost on a large vocabulary.
        """
        _, cache = model(prefix, return_type="logits_and_cache", use_cache=True, logits_to_keep=1)
        return cache

    def kv_continue(self, model: Any, tokens: Tensor, cache: Any, repeat: int) -> Tensor:
        """Logits ``[repeat * batch, pos, vocab]`` of ``tokens`` after the cached prefix, the
        cache's rows tiled ``repeat`` times (``K``-major); ``cache`` is left as it was.

        Hugging Face's caches have no frozen mode: each call continues a copy.
        """
        import copy

        rows = tokens.repeat(repeat, 1)
        big = copy.deepcopy(cache)
        if repeat > 1:
            big.reorder_cache(torch.arange(tokens.shape[0], device=tokens.device).repeat(repeat))
        logits: Tensor = model(rows, past_key_values=big, use_cache=True)
        return logits

    def kv_branches(self, model: Any, token: Tensor, cache: Any, m: int) -> Tensor:
        """Logits ``[m, batch, vocab]`` of ``m`` independent continuations of the cached
        prefix by ``token`` ``[batch, 1]``; hooks tell the branches apart and change each one.

        Where it applies (:func:`_branches_along_positions`) the branches run as ``m``
        positions of one continuation (``[batch, m]``: hooks see ``[batch, m, ...]``), all at
        ``position_ids`` = the prefix length, with a 4-D additive attention mask by which each
        branch sees the prefix's keys and its own key only. The prefix cache is read, not
        copied per branch: its layers' tensors are put back after the call, also on error.
        Otherwise the cache's rows are tiled ``m`` times (``K``-major; hooks see
        ``[m * batch, 1, ...]``). ``cache`` is left as it was.
        """
        b = token.shape[0]
        if m == 1 or not _branches_along_positions(model, cache):
            logits = self.kv_continue(model, token, cache, m)[:, -1]
            return logits.reshape(m, b, -1)
        prefix = int(cache.get_seq_length())
        dtype = cache.layers[0].keys.dtype
        rows = token.expand(b, m)
        own = torch.eye(m, dtype=torch.bool, device=token.device)
        allowed = torch.cat([own.new_ones(m, prefix), own], dim=1)
        mask = torch.zeros(allowed.shape, dtype=dtype, device=token.device)
        mask = mask.masked_fill(~allowed, torch.finfo(dtype).min)[None, None].expand(b, 1, -1, -1)
        positions = torch.full((b, m), prefix, dtype=torch.long, device=token.device)
        saved = [(layer.keys, layer.values) for layer in cache.layers]
        try:
            out: Tensor = model(
                rows,
                past_key_values=cache,
                use_cache=True,
                attention_mask=mask,
                position_ids=positions,
            )
        finally:
            for layer, (keys, values) in zip(cache.layers, saved, strict=True):
                layer.keys, layer.values = keys, values
        if cache.get_seq_length() != prefix:
            raise RuntimeError(
                f"the prefix cache holds {cache.get_seq_length()} positions after the branch "
                f"pass, expected {prefix}"
            )
        if out.shape[:2] != (b, m):
            raise RuntimeError(
                f"branch pass gave logits {tuple(out.shape)}, expected ({b}, {m}, vocab)"
            )
        return out.transpose(0, 1)

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
            handle = base_model(model).register_forward_pre_hook(
                _state_hook(signal), with_kwargs=True
            )
            undo.append(handle.remove)
            route = self.attention_route(model)
            if attention and route in FUSED_ROUTES:
                undo.append(_set_implementation(model, continuous_implementation(route)))
                modules = [model.blocks[layer].attn.original_component for layer in layers]
                undo.append(attach_bias(modules, signal))
            elif attention:
                for layer in layers:
                    point = model.blocks[layer].attn.hook_attn_scores
                    undo.append(add_permanent_hook(point, scores_hook(signal)))
            scheme = self.positional_scheme(model) if positions else None
            if scheme == "rotary":
                for module in rotary_modules(model):
                    handle = module.register_forward_pre_hook(
                        _rotary_hook(signal), with_kwargs=True
                    )
                    undo.append(handle.remove)
            elif scheme == "learned":
                table = _position_table(model)
                assert table is not None
                undo.append(table.register_forward_hook(_table_hook(signal)).remove)
        except BaseException:
            for u in reversed(undo):
                u()
            raise
        return undo


#: Hugging Face attention implementations that add a given 4-D float mask to the scores.
_MASKED_ATTENTION = ("eager", "sdpa")


def _branches_along_positions(model: Any, cache: Any = None) -> bool:
    """Whether :meth:`BridgeBackend.kv_branches` may run branches as positions: a plain
    :class:`~transformers.DynamicCache` (no sliding window, whose cropping would drop prefix
    keys; checked when ``cache`` is given), attention that honours a 4-D mask, and no
    continuous signal attached (its per-forward state reads a 2-D padding mask and token
    positions)."""
    from transformers.cache_utils import DynamicLayer

    if cache is not None:
        layers = getattr(cache, "layers", None) or []
        if not layers or not all(
            type(layer) is DynamicLayer and layer.is_initialized for layer in layers
        ):
            return False
    config = model.original_model.config
    return bool(
        getattr(config, "_attn_implementation", None) in _MASKED_ATTENTION
        and getattr(config, "sliding_window", None) is None
        and getattr(model, SIGNAL_NAME, None) is None
    )


def _state_hook(signal: Any) -> Any:
    def hook(module: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            embeds = kwargs.get("inputs_embeds")
            if embeds is None:
                raise RuntimeError("continuous: the forward has neither input_ids nor embeddings")
            batch, n_new, device = int(embeds.shape[0]), int(embeds.shape[1]), embeds.device
        else:
            batch, n_new, device = int(ids.shape[0]), int(ids.shape[1]), ids.device
        past = kwargs.get("past_key_values")
        offset = 0 if past is None else int(past.get_seq_length())
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.ndim != 2:
            raise ValueError(
                "continuous: attention_mask must be a 2-D [batch, pos] padding mask "
                f"(got {mask.ndim} dimensions)"
            )
        if mask is not None and mask.shape[-1] != offset + n_new:
            mask = mask[:, -(offset + n_new) :]
        signal.reset()
        signal.ensure(batch, offset + n_new, offset, mask, device)

    return hook


def _rotary_hook(signal: Any) -> Any:
    def hook(module: nn.Module, args: Any, kwargs: dict[str, Any]) -> tuple[Any, Any]:
        state = signal.current()
        given = kwargs.get("position_ids", args[1] if len(args) > 1 else None)
        n_new = state.index.shape[-1] - state.offset
        if given is not None and given.shape[-1] != n_new:
            raise RuntimeError(
                f"the rotary module got {given.shape[-1]} positions but the signal has {n_new}"
            )
        index = state.index[:, state.offset :]
        device = given.device if given is not None else index.device
        real = index.to(device=device, dtype=torch.float32)
        if "position_ids" in kwargs or len(args) < 2:
            return args, kwargs | {"position_ids": real}
        return (args[0], real, *args[2:]), kwargs

    return hook


def _table_hook(signal: Any) -> Any:
    def hook(module: nn.Module, args: Any, output: Tensor) -> Tensor:
        state = signal.current()
        offset = state.offset
        valid = None if state.valid is None else state.valid[:, offset:]
        table = module.weight
        assert isinstance(table, Tensor)
        return interpolate_table(table, state.index[:, offset:], valid).to(output.device)

    return hook


BACKEND = BridgeBackend()
