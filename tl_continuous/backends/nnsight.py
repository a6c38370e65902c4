"""The nnsight backend: an nnsight ``LanguageModel`` (any Hugging Face causal LM).

An nnsight model (``LanguageModel``, ``TransformersModel``, or ``NNsight`` around a Hugging
Face model) runs the Hugging Face model it wraps, so the continuous mechanism goes where
Hugging Face computes, as on a ``TransformerBridge`` (:mod:`.bridge`):

* **Per-forward state.** A forward pre-hook on the Hugging Face base model computes the
  signal from ``input_ids``, the 2-D ``attention_mask`` and ``past_key_values``.
* **Duration-weighted attention.** ``log d`` is added inside Hugging Face's attention
  function of the chosen layers, on the model's own route (``"eager"``, ``"sdpa"`` or
  ``"flex_attention"``; :func:`~.attention_bias.install_attention_bias`).
* **Real positions.** A forward pre-hook on each rotary module replaces its ``position_ids``
  by the real table indices; on a learned table (GPT-2's ``wpe``) a forward hook returns the
  interpolated rows.
* **The signal's HookPoints.** The signal is spliced into the wrapped model as the submodule
  ``continuous``, which nnsight serves as an Envoy: inside ``with lm.trace(...)``,
  ``lm.continuous.hook_durations.output`` and ``lm.continuous.hook_positions.output`` read
  (``.save()``) or replace (assignment) the durations and positions of that forward. Both
  fire in the base model's forward pre-hook, that is after ``lm.input`` and before
  ``lm.model.input``, ``lm.model.embed_tokens`` and every layer (nnsight wants reads in
  execution order). Removal takes the submodule and its Envoy out again.

A model nnsight has not loaded yet (built on the meta device, ``dispatch=False``) is
dispatched first: hooks on the meta model would be lost when nnsight swaps in the weights.
The hooks are local: a remote (NDIF) trace runs the server's model, which does not have them.

Lines of thought: :func:`read_pilots` reads one batch's pilot residuals inside one nnsight
trace (``.save()`` of the pilot rows only, then ``tracer.stop()``), so the same collection
runs wherever the trace runs. The reading points: ``blocks.{i}.hook_resid_pre`` is the input
of decoder layer ``i``, ``hook_resid_post`` its output, ``hook_resid_mid`` the input of its
normalisation before the MLP, ``ln_final.hook_normalized`` the input of the final norm
normalised without the norm's weight and bias (:func:`.hf_parts.normalized`): what a
``TransformerBridge`` reads at those names.

Nothing here imports nnsight: the model is used through its own methods.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from tl_continuous.backends import hf_parts
from tl_continuous.backends.attention_bias import install_attention_bias
from tl_continuous.backends.base import Undo
from tl_continuous.backends.bridge import _rotary_hook, _state_hook, _table_hook
from tl_continuous.backends.hf_attention import check_route, plain_route
from tl_continuous.continuous.positions import integer_positions

__all__ = ["BACKEND", "ModelFacts", "NnsightBackend", "hf_model", "model_facts", "read_pilots"]

SIGNAL_NAME = "continuous"
#: the TransformerLens hook names a line of thought reads (see ``lines_of_thought.hooks``)
_BLOCK_HOOK = re.compile(r"blocks\.(\d+)\.hook_(resid_pre|resid_mid|resid_post)")
_FINAL_NORM_HOOK = "ln_final.hook_normalized"
_UNSUPPORTED = (
    "the nnsight backend runs continuous() and LinesOfThought.collect; the KL truncation "
    "readings need a TransformerLens model (load_model(..., backend='bridge'))"
)


def hf_model(model: Any) -> nn.Module:
    """The Hugging Face causal LM an nnsight model wraps (dispatched first if still on meta).

    Raises:
        ValueError: ``model`` is an Envoy of a submodule, or wraps no Hugging Face model.
    """
    if getattr(model, "parent", None) is not None:
        raise ValueError(
            f"model must be the nnsight model itself, not the Envoy of a submodule ({model.path})"
        )
    if getattr(model, "dispatched", True) is False:
        model.dispatch()
    module = model._module
    hf_parts.base_model(module)  # raises for anything else
    return module


@dataclass(frozen=True)
class ModelFacts:
    """What a collection needs to know about an nnsight model (a ``cfg`` for it).

    Attributes:
        model_name: the last part of the Hugging Face ``name_or_path`` (or the class name).
        n_layers: decoder layers.
        n_ctx: ``max_position_embeddings``.
        d_vocab: ``vocab_size``.
        d_model: ``hidden_size``.
        device: where the first parameter lives.
        dtype: the first parameter's dtype.
        config: the Hugging Face config as a dict.
    """

    model_name: str
    n_layers: int
    n_ctx: int
    d_vocab: int
    d_model: int
    device: torch.device
    dtype: torch.dtype
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The Hugging Face config (what collections record as ``model_config``)."""
        return dict(self.config)


def model_facts(model: Any) -> ModelFacts:
    """The :class:`ModelFacts` of an nnsight model."""
    hf: Any = hf_model(model)
    config = hf_parts.text_config(hf)
    first = next(hf.parameters())
    name = str(getattr(hf.config, "name_or_path", "") or "")
    return ModelFacts(
        model_name=Path(name).name or type(hf).__name__,
        n_layers=hf_parts.n_layers(hf),
        n_ctx=int(getattr(config, "max_position_embeddings", 0) or 0),
        d_vocab=int(config.vocab_size),
        d_model=int(config.hidden_size),
        device=first.device,
        dtype=first.dtype,
        config=hf.config.to_dict(),
    )


# ----------------------------------------------------------------- lines of thought
@dataclass(frozen=True)
class _Point:
    """Where a hook name is read: an Envoy's ``input`` or ``output``, then ``post`` (if any)
    applied to the pilot rows."""

    name: str
    envoy: Any
    kind: str
    post: Callable[[Tensor], Tensor] | None = None


def _reading_points(model: Any, names: Sequence[str]) -> list[_Point]:
    """Where each hook name is read, in the order given.

    Raises:
        ValueError: a name has no reading point on this model (listed in the message).
    """
    hf = hf_model(model)
    layers = hf_parts.decoder_layers(hf)
    paths = {id(m): name for name, m in hf.named_modules()}
    points: list[_Point] = []
    missing: list[str] = []
    for name in names:
        module: nn.Module | None
        kind, post = "output", None
        match = _BLOCK_HOOK.fullmatch(name)
        if name == _FINAL_NORM_HOOK:  # normalised, before the norm's weight (and bias)
            module, kind = hf_parts.final_norm(hf), "input"
            if module is not None:
                post = partial(hf_parts.normalized, module)
        elif match is None or int(match.group(1)) >= len(layers):
            module = None
        elif match.group(2) == "resid_mid":
            module, kind = hf_parts.mid_norm(hf, layers[int(match.group(1))]), "input"
        else:
            module = layers[int(match.group(1))]
            kind = "input" if match.group(2) == "resid_pre" else "output"
        if module is None or id(module) not in paths:
            missing.append(name)
        else:
            points.append(_Point(name, model.get(paths[id(module)]), kind, post))
    if missing:
        raise ValueError(f"the nnsight model has no reading point for the hooks {missing}")
    return points


def check_reading(model: Any, names: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the hooks :func:`read_pilots` cannot read on ``model``."""
    _reading_points(model, names)


def read_pilots(
    model: Any,
    tokens: Int[Tensor, "batch pos"],
    attention_mask: Int[Tensor, "batch pos"] | None,
    names: Sequence[str],
    pilots: Int[Tensor, " batch"],
) -> dict[str, Float[Tensor, "batch d_model"]]:
    """The pilot rows ``act[rows, pilots]`` of each hook in ``names`` (float32, CPU).

    One nnsight trace: each reading point's value is sliced to the pilot rows inside the
    trace and saved; the trace stops after the last one (the rest of the model, unembedding
    included, is not run). With a mask, each row's tokens get the positions they would have
    without padding (``position_ids``, as a ``TransformerBridge`` gives them).
    """
    points = _reading_points(model, names)
    device = next(hf_model(model).parameters()).device
    rows = torch.arange(tokens.shape[0], device=device)
    pilots = pilots.to(device)
    kwargs: dict[str, Any] = {"use_cache": False}
    if attention_mask is not None:  # padded rows at their own positions, as TransformerLens
        kwargs["attention_mask"] = attention_mask.to(device)
        kwargs["position_ids"] = integer_positions(attention_mask, tokens.shape[1], device)
    store: dict[str, Tensor] = {}
    with model.trace(tokens.to(device), **kwargs) as tracer:
        for point in points:
            act = point.envoy.output if point.kind == "output" else point.envoy.input
            store[point.name] = act[rows, pilots].detach().to("cpu", torch.float32).save()
        tracer.stop()
    for point in points:
        if point.post is not None:
            store[point.name] = point.post(store[point.name])
    return store


# ----------------------------------------------------------------------- backend
class NnsightBackend:
    """The :class:`~.base.Backend` of nnsight models."""

    name = "nnsight"

    def n_layers(self, model: Any) -> int:
        return hf_parts.n_layers(hf_model(model))

    def attached_signal(self, model: Any) -> Any:
        envoy = getattr(model, SIGNAL_NAME, None)
        return getattr(envoy, "_module", None)

    def positional_scheme(self, model: Any) -> str:
        return hf_parts.positional_scheme(hf_model(model))

    def check_positions(self, model: Any) -> None:
        if self.positional_scheme(model) == "unknown":
            raise ValueError(
                f"continuous positions: {type(hf_model(model)).__name__} has neither a "
                "rotary-embedding module nor a learned position table (wpe); pass "
                "positions=False to use duration-weighted attention alone"
            )

    def attach_signal(self, model: Any, signal: Any) -> Undo:
        hf = hf_model(model)
        setattr(model, SIGNAL_NAME, signal)  # nnsight registers it on hf and serves an Envoy

        def detach() -> None:
            if SIGNAL_NAME in getattr(model, "_child_map", {}):
                model._drop_envoy(SIGNAL_NAME)
            if hf._modules.get(SIGNAL_NAME) is signal:
                delattr(hf, SIGNAL_NAME)

        return detach

    def attention_route(self, model: Any) -> str:
        return plain_route(getattr(hf_model(model).config, "_attn_implementation", None))

    def set_attention_route(self, model: Any, route: str) -> Undo:
        """Switch the wrapped model's attention implementation (transformers'
        ``set_attn_implementation``); return what switches it back.

        Raises:
            ValueError: ``route`` is not a route, or a continuous signal is installed.
        """
        check_route(route)
        if self.attached_signal(model) is not None:
            raise ValueError(
                "cannot change the attention route while a continuous signal is installed; "
                "pass route= to continuous() instead"
            )
        hf = hf_model(model)
        previous = self.attention_route(model)
        if route != previous:
            hf.set_attn_implementation(route)  # type: ignore[operator]

        def restore() -> None:
            if self.attention_route(model) != previous:
                hf.set_attn_implementation(previous)  # type: ignore[operator]

        return restore

    def kv_prefix(self, model: Any, prefix: Tensor) -> Any:
        raise NotImplementedError(_UNSUPPORTED)

    def kv_continue(self, model: Any, tokens: Tensor, cache: Any, repeat: int) -> Tensor:
        raise NotImplementedError(_UNSUPPORTED)

    def kv_branches(self, model: Any, token: Tensor, cache: Any, m: int) -> Tensor:
        raise NotImplementedError(_UNSUPPORTED)

    def install(
        self,
        model: Any,
        signal: Any,
        *,
        layers: Sequence[int],
        attention: bool,
        positions: bool,
    ) -> list[Undo]:
        hf = hf_model(model)
        undo: list[Undo] = []
        try:
            handle = hf_parts.base_model(hf).register_forward_pre_hook(
                _state_hook(signal), with_kwargs=True
            )
            undo.append(handle.remove)
            if attention and layers:
                undo.extend(install_attention_bias(hf, signal, layers))
            scheme = hf_parts.positional_scheme(hf) if positions else None
            if scheme == "rotary":
                for module in hf_parts.rotary_modules(hf):
                    handle = module.register_forward_pre_hook(
                        _rotary_hook(signal), with_kwargs=True
                    )
                    undo.append(handle.remove)
            elif scheme == "learned":
                table = hf_parts.position_table(hf)
                assert table is not None
                undo.append(table.register_forward_hook(_table_hook(signal)).remove)
        except BaseException:
            for u in reversed(undo):
                u()
            raise
        return undo


BACKEND = NnsightBackend()
