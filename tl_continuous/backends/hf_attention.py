"""Duration-weighted attention inside Hugging Face's attention functions (the fused routes).

Hugging Face models pick their attention kernel by name (``config._attn_implementation``:
``"eager"``, ``"sdpa"``, ``"flex_attention"``, ...) from transformers' public registries
(``AttentionInterface`` for the kernel, ``AttentionMaskInterface`` for the mask it wants).
This module registers one more name per route, ``"tl_continuous_<route>"``: the route's own
kernel, plus the per-key ``log d`` bias of the attention modules a continuous signal is
attached to (:func:`attach_bias`). No score matrix is made on the fused routes:

* ``sdpa``: the bias rides in extra query/key components
  (:func:`~tl_continuous.continuous.attention.append_key_bias`), so PyTorch's
  ``scaled_dot_product_attention`` keeps its fused, causal kernels (memory O(n));
* ``flex_attention``: the bias is FlexAttention's ``score_mod`` (``score + log_d[b, kv]``,
  float32), with the causal/padding ``BlockMask`` transformers builds;
* ``eager``: the scores are formed explicitly, ``log d`` added, then softmax (for plain
  Hugging Face models, e.g. under nnsight, that want the attention weights).

Modules without an attached signal run the route's plain kernel. Zero durations are floored at
:data:`~tl_continuous.continuous.attention.LOG_DURATION_FLOOR` on the fused kernels (their
weight is exactly 0 wherever a query sees a key of positive duration).

Registration happens on first use, never at import.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any, no_type_check

import torch
from torch import Tensor, nn

from tl_continuous.continuous.attention import LOG_DURATION_FLOOR, append_key_bias

__all__ = [
    "FUSED_ROUTES",
    "ROUTES",
    "attach_bias",
    "check_route",
    "continuous_implementation",
    "plain_route",
    "set_implementation",
]

#: the attention routes, by Hugging Face's names
ROUTES = ("eager", "sdpa", "flex_attention")
#: the routes without an attention-score matrix
FUSED_ROUTES = ("sdpa", "flex_attention")
_PREFIX = "tl_continuous_"

#: attention module -> the continuous signal whose ``log d`` it adds
_SOURCES: weakref.WeakKeyDictionary[nn.Module, Any] = weakref.WeakKeyDictionary()


def check_route(route: str, *, argument: str = "route") -> str:
    """``route`` if it is one of :data:`ROUTES`; otherwise a ``ValueError`` naming it.

    >>> check_route("sdpa")
    'sdpa'
    """
    if route not in ROUTES:
        raise ValueError(
            f"{argument} must be one of {', '.join(map(repr, ROUTES))} (got {route!r}); other "
            "attention schemes (flash_attention_2, paged, ...) cannot carry the log-duration bias"
        )
    return route


def plain_route(implementation: str | None) -> str:
    """The route of a Hugging Face attention implementation name (``None`` is eager).

    >>> plain_route("tl_continuous_sdpa"), plain_route(None)
    ('sdpa', 'eager')
    """
    name = implementation or "eager"
    return name.removeprefix(_PREFIX)


def continuous_implementation(route: str) -> str:
    """Register (once) and return the implementation name that adds the bias on ``route``."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import AttentionInterface

    check_route(route)
    name = _PREFIX + route
    if name not in AttentionInterface._global_mapping:
        AttentionInterface.register(name, _KERNELS[route])
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[route])
    return name


def set_implementation(model_config: Any, modules: Iterable[Any], name: str) -> Callable[[], None]:
    """Set the attention implementation ``name`` on a model's config and on any other config
    an attention module reads it from (a multimodal model's text config); return what
    restores the names they had."""
    configs = [model_config]
    for module in modules:
        config = getattr(module, "config", None)
        if config is not None and all(config is not c for c in configs):
            configs.append(config)
    before = [c._attn_implementation for c in configs]
    for config in configs:
        config._attn_implementation = name

    def restore() -> None:
        for config, old in zip(configs, before, strict=True):
            config._attn_implementation = old

    return restore


def attach_bias(modules: Iterable[nn.Module], signal: Any) -> Callable[[], None]:
    """Make each Hugging Face attention module add ``signal``'s ``log d`` on the continuous
    implementations; return what detaches exactly these modules."""
    attached = list(modules)
    for module in attached:
        if module in _SOURCES:
            raise ValueError(f"{type(module).__name__} already carries a continuous signal")
    for module in attached:
        _SOURCES[module] = signal

    def detach() -> None:
        for module in attached:
            if _SOURCES.get(module) is signal:
                del _SOURCES[module]

    return detach


def _key_bias(module: nn.Module, key: Tensor) -> Tensor | None:
    """``[batch, key_pos]`` float32 ``log d`` of this forward's keys, or ``None``."""
    signal = _SOURCES.get(module)
    if signal is None:
        return None
    log_d: Tensor = signal.current().log_d
    if log_d.shape[-1] != key.shape[-2]:
        raise RuntimeError(
            f"attention has {key.shape[-2]} keys but the continuous signal has {log_d.shape[-1]}"
        )
    return log_d.to(key.device)


def _scaling(kwargs: dict[str, Any], query: Tensor) -> float:
    scaling = kwargs.pop("scaling", None)
    return float(query.shape[-1] ** -0.5 if scaling is None else scaling)


def _sdpa(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    **kwargs: Any,
) -> tuple[Tensor, Tensor | None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bias = _key_bias(module, key)
    scaling = _scaling(kwargs, query)
    if bias is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, **kwargs
        )
    d_value = value.shape[-1]
    query, key, value = append_key_bias(
        query, key, value, bias.clamp(min=LOG_DURATION_FLOOR), scaling
    )
    out, weights = sdpa_attention_forward(
        module, query, key, value, attention_mask, scaling=scaling, **kwargs
    )
    return out[..., :d_value], weights  # [batch, query_pos, head, d_value]


_STATIC_FLEX: list[Callable[..., Any]] = []


def _static_flex() -> Callable[..., Any]:
    """FlexAttention compiled for fixed shapes, for CPU tensors.

    transformers compiles FlexAttention with automatic dynamic shapes, so the first new sequence
    length (a decoding step) recompiles it with symbolic sizes; with a score_mod that reads a
    captured tensor, torch 2.13's CPU template then emits C++ that does not compile. Static
    shapes cost one compilation per sequence length (past torch._dynamo's recompile limit the
    kernel runs uncompiled: slower, same numbers). CUDA keeps transformers' compiled kernel.
    """
    if not _STATIC_FLEX:
        from torch.nn.attention.flex_attention import flex_attention

        _STATIC_FLEX.append(torch.compile(flex_attention, dynamic=False))
    return _STATIC_FLEX[0]


def _flex(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Any,
    **kwargs: Any,
) -> tuple[Tensor, Tensor | None]:
    from torch.nn.attention.flex_attention import BlockMask
    from transformers.integrations.flex_attention import (
        compile_friendly_flex_attention,
        flex_attention_forward,
        get_flex_attention_lse_kwargs,
    )

    bias = _key_bias(module, key)
    if bias is None:
        return flex_attention_forward(module, query, key, value, attention_mask, **kwargs)
    for name in ("softcap", "s_aux", "position_bias"):
        if kwargs.get(name) is not None:
            raise ValueError(
                f"the flex_attention route cannot combine durations with {name}; use eager"
            )
    scaling = _scaling(kwargs, query)
    log_d = bias.clamp(min=LOG_DURATION_FLOOR).to(torch.float32)  # [batch, key_pos]
    block_mask = attention_mask if isinstance(attention_mask, BlockMask) else None
    score_mask = None if block_mask is not None or attention_mask is None else attention_mask
    if score_mask is not None:
        score_mask = score_mask[:, :, :, : key.shape[-2]]

    # The test suite's jaxtyping import hook would wrap this function in a shape-memo push, a
    # side effect FlexAttention's compiler refuses; no_type_check keeps it a plain function.
    @no_type_check
    def score_mod(score: Tensor, b: Tensor, h: Tensor, q: Tensor, kv: Tensor) -> Tensor:
        if score_mask is not None:
            score = score + score_mask[b, 0, q, kv]
        return score + log_d[b, kv]

    groups = query.shape[1] // key.shape[1]
    enable_gqa = groups == 1 or (query.shape[1] & (query.shape[1] - 1)) == 0
    if not enable_gqa:  # as transformers does: GQA needs a power-of-two number of heads
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    options: dict[str, Any] = {
        "score_mod": score_mod,
        "block_mask": block_mask,
        "enable_gqa": enable_gqa and groups > 1,
        "scale": scaling,
        "kernel_options": kwargs.get("kernel_options"),
        **get_flex_attention_lse_kwargs(False),
    }
    if query.device.type == "cpu":
        out = _static_flex()(query, key, value, **options)
    else:
        out = compile_friendly_flex_attention(
            query, key, value, training=module.training, **options
        )
    assert isinstance(out, Tensor)
    return out.transpose(1, 2).contiguous(), None


def _eager(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    scaling = _scaling(kwargs, query)
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    scores = (query @ key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask[..., : key.shape[-2]]
    bias = _key_bias(module, key)
    if bias is not None:
        scores = scores + bias.to(scores.dtype)[:, None, None, :]
    weights = scores.softmax(dim=-1, dtype=torch.float32).to(query.dtype)
    dropout = float(kwargs.get("dropout", 0.0))
    if dropout > 0.0 and module.training:
        weights = nn.functional.dropout(weights, p=dropout, training=True)
    out = (weights @ value).transpose(1, 2).contiguous()
    return out, weights


_KERNELS: dict[str, Callable[..., Any]] = {"eager": _eager, "sdpa": _sdpa, "flex_attention": _flex}
