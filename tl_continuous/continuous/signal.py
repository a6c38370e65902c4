"""The continuous signal spliced into a ``HookedTransformer``, and the ``continuous()`` context.

Installing splices a :class:`ContinuousSignal` module into the model as ``model.continuous``,
with two HookPoints that every forward pass fires:

* ``continuous.hook_durations``: ``[batch, pos]`` durations of the keys of this forward;
* ``continuous.hook_positions``: ``[batch, pos]`` positions ``start + cumsum(durations)``.

Both appear in ``model.hook_dict`` and in ``run_with_cache`` caches; a user hook may read or
overwrite them, and what it returns is what attention and positions use. The mechanism then
lives in permanent hooks of TransformerLens' own HookPoints (``hook_attn_scores``,
``hook_rot_q``, ``hook_rot_k``), prepended so that user hooks there see the continuous
activations, plus plain PyTorch hooks that learn each forward's batch, length, padding mask
and KV-cache offset. Permanent hooks survive the ``reset_hooks()`` that ``run_with_hooks`` and
``transformer_lens.patching`` call; removal takes off exactly these hooks and no other.

Conventions: with an attention mask (left padding) the durations of pad tokens are ignored
(positions count real tokens only); under a KV cache, tokens beyond the given durations get
duration 1 (this is how ``model.generate(..., use_past_kv_cache=True)`` continues a prompt).
Positions map to table indices as described in :mod:`.positions`.

Precision: the hooked durations and positions have the durations' dtype (float32 unless
float64 values are given; positions are summed in float64 first); logs of durations are
taken in float32 or wider and rotary angles in float64, then cast to each activation's dtype
and device. For contexts of many thousands of tokens pass float64 durations.

>>> from tl_continuous.tiny import tiny_model
>>> model = tiny_model("rotary")
>>> tokens = torch.tensor([[1, 2, 3, 4]])
>>> with continuous(model, Durations.ones(1, 4)):
...     logits, cache = model.run_with_cache(tokens)
>>> cache["continuous.hook_positions"]
tensor([[1., 2., 3., 4.]])
>>> torch.allclose(logits, model(tokens), atol=1e-5)
True
>>> hasattr(model, "continuous")
False
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from transformer_lens import HookedTransformer
from transformer_lens.components.abstract_attention import AbstractAttention
from transformer_lens.hook_points import HookPoint, LensHandle

from tl_continuous.continuous.attention import add_log_durations, log_durations
from tl_continuous.continuous.durations import Durations
from tl_continuous.continuous.positions import (
    check_positional_scheme,
    integer_positions,
    interpolate_table,
    rotary_frequencies,
    rotate_further,
    table_index,
)

__all__ = [
    "ContinuousHandle",
    "ContinuousSignal",
    "SignalState",
    "continuous",
    "install_continuous",
    "remove_continuous",
]

SIGNAL_NAME = "continuous"


@dataclass
class SignalState:
    """What one forward pass needs: computed once, at the first hook that needs it.

    Attributes:
        key: ``(batch, key length, KV-cache offset, has mask)`` of the forward.
        durations: ``[batch, key_pos]`` as returned by ``hook_durations``.
        positions: ``[batch, key_pos]`` as returned by ``hook_positions``.
        log_d: ``[batch, key_pos]`` float32 (or float64) logs of the durations.
        index: ``[batch, key_pos]`` float64 table indices (see :func:`.positions.table_index`).
        valid: ``[batch, key_pos]`` attention mask, or ``None`` without padding.
        rotary_delta: float64 ``index - integer positions`` (rotary models), or ``None``.
        rotary: cache of ``(cos, sin)`` per frequency group, device and dtype.
    """

    key: tuple[int, int, int, bool]
    durations: Tensor
    positions: Tensor
    log_d: Tensor
    index: Tensor
    valid: Tensor | None
    rotary_delta: Tensor | None
    rotary: dict[tuple[int, str, torch.dtype], tuple[Tensor, Tensor]] = field(default_factory=dict)


class ContinuousSignal(nn.Module):
    """Holds the durations of a model made continuous; its HookPoints expose the signal.

    Args:
        durations: the :class:`Durations` (one row broadcasts over the token batch).
        frequencies: per frequency group, the rotary angles per unit position (empty for
            non-rotary models).

    The module has no parameters or buffers, so it leaves ``state_dict`` unchanged.
    """

    def __init__(self, durations: Durations, frequencies: Sequence[Tensor] = ()) -> None:
        super().__init__()
        self.hook_durations = HookPoint()
        self.hook_positions = HookPoint()
        self.durations = durations
        self.frequencies = list(frequencies)
        self.state: SignalState | None = None
        self.handle: ContinuousHandle | None = None

    def reset(self) -> None:
        """Forget the current forward's state (called at the start of every forward)."""
        self.state = None

    def ensure(
        self,
        batch: int,
        length: int,
        offset: int,
        attention_mask: Tensor | None,
        device: torch.device,
    ) -> SignalState:
        """The state of the running forward, computing it on first use."""
        key = (batch, length, offset, attention_mask is not None)
        if self.state is None or self.state.key != key:
            self.state = self(batch, length, offset, attention_mask, device)
        return self.state

    def forward(
        self,
        batch: int,
        length: int,
        offset: int,
        attention_mask: Tensor | None,
        device: torch.device,
    ) -> SignalState:
        """Compute durations and positions for a forward with ``length`` keys.

        Args:
            batch: token batch size.
            length: number of keys (cached plus new tokens).
            offset: number of cached tokens (KV cache), 0 otherwise.
            attention_mask: ``[batch, length]`` padding mask or ``None``.
            device: where the signal lives (the first block's device).
        """
        values = self.durations.values
        rows, n_pos = values.shape
        if rows not in (1, batch):
            raise ValueError(
                f"durations have {rows} rows but the token batch has {batch}: give one row "
                "(broadcast) or one row per prompt"
            )
        if n_pos != length:
            if offset == 0 or length < n_pos:
                raise ValueError(
                    f"durations cover {n_pos} tokens but this forward has {length} "
                    "(durations must match the tokens; only generation with a KV cache "
                    "extends them, with duration 1)"
                )
            values = torch.cat([values, values.new_ones(rows, length - n_pos)], dim=-1)
        d = values.to(device).expand(batch, length).clone()
        d = self.hook_durations(d)
        _check_hooked(d, (batch, length), "durations returned by continuous.hook_durations")
        if bool((d < 0).any()):
            raise ValueError(
                "durations returned by continuous.hook_durations must be >= 0 "
                f"(smallest is {d.min().item():g})"
            )
        valid = None if attention_mask is None else attention_mask.to(device)
        weighted = d.to(torch.float64)
        if valid is not None:
            weighted = weighted * valid.to(torch.float64)
        positions = (self.durations.start + torch.cumsum(weighted, dim=-1)).to(d.dtype)
        positions = self.hook_positions(positions)
        _check_hooked(positions, (batch, length), "positions returned by continuous.hook_positions")
        if length > 1 and bool((positions.diff(dim=-1) < 0).any()):
            raise ValueError(
                "positions returned by continuous.hook_positions must be non-decreasing along "
                "the sequence (a token cannot end before the one it follows)"
            )
        index = table_index(positions, d, valid)
        delta = None
        if self.frequencies:
            delta = index - integer_positions(valid, length, device).to(torch.float64)
        return SignalState(
            key=(batch, length, offset, attention_mask is not None),
            durations=d,
            positions=positions,
            log_d=log_durations(d),
            index=index,
            valid=valid,
            rotary_delta=delta,
        )

    def rotation(
        self, group: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[
        Float[Tensor, "batch key_pos 1 rotary_dim"], Float[Tensor, "batch key_pos 1 rotary_dim"]
    ]:
        """``cos`` and ``sin`` of the extra rotary angles of a frequency group."""
        state = self._current()
        key = (group, str(device), dtype)
        if key not in state.rotary:
            if state.rotary_delta is None:
                raise RuntimeError("rotary angles requested for a model without rotary groups")
            omega = self.frequencies[group].to(device)
            angles = state.rotary_delta.to(device)[..., None, None] * omega
            state.rotary[key] = (angles.cos().to(dtype), angles.sin().to(dtype))
        return state.rotary[key]

    def _current(self) -> SignalState:
        if self.state is None:
            raise RuntimeError(
                "the continuous signal was used outside a forward pass of the model it is "
                "installed in"
            )
        return self.state


def _check_hooked(x: Tensor, shape: tuple[int, int], what: str) -> None:
    if not isinstance(x, Tensor) or tuple(x.shape) != shape:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{what} must have shape {shape} (got {got})")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{what} must be finite (found inf or nan)")


@dataclass
class ContinuousHandle:
    """An installed continuous signal; :meth:`remove` takes it out again.

    Attributes:
        model: the model.
        signal: the spliced :class:`ContinuousSignal` (``model.continuous``).
    """

    model: HookedTransformer
    signal: ContinuousSignal
    lens_handles: list[tuple[HookPoint, LensHandle]] = field(default_factory=list)
    torch_handles: list[RemovableHandle] = field(default_factory=list)
    removed: bool = False

    @property
    def durations(self) -> Durations:
        """The durations in use; assign a new :class:`Durations` to change them in place."""
        return self.signal.durations

    @durations.setter
    def durations(self, value: Durations) -> None:
        self.signal.durations = _as_durations(value)
        self.signal.reset()

    def remove(self) -> None:
        """Remove exactly the hooks and module this installation added (idempotent)."""
        if self.removed:
            return
        self.removed = True
        for handle in self.torch_handles:
            handle.remove()
        for point, lens in self.lens_handles:
            lens.hook.remove()
            point.fwd_hooks = [h for h in point.fwd_hooks if h is not lens]
        self.signal.reset()
        if getattr(self.model, SIGNAL_NAME, None) is self.signal:
            delattr(self.model, SIGNAL_NAME)
        self.model.setup()

    def __enter__(self) -> ContinuousHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _as_durations(durations: Durations | Tensor) -> Durations:
    if isinstance(durations, Durations):
        return durations
    if isinstance(durations, Tensor):
        return Durations(durations)
    raise TypeError(f"durations must be a Durations or a tensor (got {type(durations).__name__})")


def _check_layers(model: HookedTransformer, layers: Sequence[int] | None) -> list[int]:
    n_layers = model.cfg.n_layers
    if layers is None:
        return list(range(n_layers))
    chosen = sorted({int(i) for i in layers})
    bad = [i for i in chosen if not 0 <= i < n_layers]
    if bad:
        raise ValueError(f"layers must be in [0, {n_layers - 1}] (got {bad})")
    return chosen


def _frequency_groups(model: HookedTransformer) -> tuple[list[Tensor], list[int]]:
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


def install_continuous(
    model: HookedTransformer,
    durations: Durations | Float[Tensor, "batch pos"] | Float[Tensor, " pos"],
    *,
    layers: Sequence[int] | None = None,
    attention: bool = True,
    positions: bool = True,
) -> ContinuousHandle:
    """Make every forward of ``model`` continuous until the returned handle is removed.

    Args:
        model: a ``HookedTransformer``.
        durations: a :class:`Durations` (or a tensor of durations, ``start = 0``).
        layers: layers whose attention gets the log-duration term (default: all).
            Positions are real in every layer regardless.
        attention: add ``log d`` to the pre-softmax scores (duration-weighted attention).
        positions: use the real positions (rotary or learned tables).

    Returns:
        A :class:`ContinuousHandle`; ``handle.remove()`` or :func:`remove_continuous` undoes
        the installation.

    Raises:
        ValueError: the model already has a continuous signal, ``layers`` are out of range,
            or ``positions=True`` on a positional scheme that is not supported.

    >>> from tl_continuous.tiny import tiny_model
    >>> model = tiny_model("learned")
    >>> handle = install_continuous(model, torch.tensor([1.0, 0.5, 2.0]))
    >>> "continuous.hook_durations" in model.hook_dict
    True
    >>> handle.remove()
    >>> "continuous.hook_durations" in model.hook_dict
    False
    """
    if not isinstance(model, HookedTransformer):
        raise TypeError(f"model must be a HookedTransformer (got {type(model).__name__})")
    if isinstance(getattr(model, SIGNAL_NAME, None), ContinuousSignal):
        raise ValueError(
            "model already has a continuous signal installed; remove it first "
            "(handle.remove() or remove_continuous(model))"
        )
    if hasattr(model, SIGNAL_NAME):
        raise ValueError(f"model already has an attribute {SIGNAL_NAME!r}")
    durations = _as_durations(durations)
    chosen = _check_layers(model, layers)
    scheme = model.cfg.positional_embedding_type
    if positions:
        check_positional_scheme(model.cfg)
    rotary = positions and scheme == "rotary"
    groups, layer_group = _frequency_groups(model) if rotary else ([], [])

    signal = ContinuousSignal(durations, groups)
    handle = ContinuousHandle(model=model, signal=signal)
    setattr(model, SIGNAL_NAME, signal)
    try:
        model.setup()
        _add_state_hooks(model, signal, handle)
        for layer, block in enumerate(model.blocks):
            attn = block.attn
            if attention and layer in chosen:
                _add_lens_hook(handle, attn.hook_attn_scores, _scores_hook(signal))
            if rotary:
                group = layer_group[layer]
                _add_lens_hook(handle, attn.hook_rot_q, _rotary_hook(signal, attn, group, True))
                _add_lens_hook(handle, attn.hook_rot_k, _rotary_hook(signal, attn, group, False))
        if positions and scheme == "standard":
            handle.torch_handles.append(
                model.pos_embed.register_forward_hook(_pos_embed_hook(signal), with_kwargs=True)
            )
    except BaseException:
        handle.remove()
        raise
    signal.handle = handle
    return handle


def _add_lens_hook(handle: ContinuousHandle, point: HookPoint, fn: Any) -> None:
    before = {id(h) for h in point.fwd_hooks}
    point.add_hook(fn, dir="fwd", is_permanent=True, prepend=True)
    (added,) = [h for h in point.fwd_hooks if id(h) not in before]
    handle.lens_handles.append((point, added))


def _add_state_hooks(
    model: HookedTransformer, signal: ContinuousSignal, handle: ContinuousHandle
) -> None:
    """Reset the state at every forward; compute it before the first attention layer."""

    def reset(module: nn.Module, args: Any) -> None:
        signal.reset()

    def before_attention(module: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        query = kwargs["query_input"] if "query_input" in kwargs else args[0]
        entry = kwargs.get("past_kv_cache_entry")
        offset = 0 if entry is None else int(entry.past_keys.shape[1])
        signal.ensure(
            int(query.shape[0]),
            offset + int(query.shape[1]),
            offset,
            kwargs.get("attention_mask"),
            query.device,
        )

    handle.torch_handles.append(model.register_forward_pre_hook(reset))
    handle.torch_handles.append(model.embed.register_forward_pre_hook(reset))
    for block in model.blocks:
        handle.torch_handles.append(
            block.attn.register_forward_pre_hook(before_attention, with_kwargs=True)
        )


def _scores_hook(signal: ContinuousSignal) -> Any:
    def hook(scores: Tensor, hook: HookPoint) -> Tensor:
        state = signal._current()
        if scores.shape[-1] != state.log_d.shape[-1]:
            raise RuntimeError(
                f"attention scores have {scores.shape[-1]} keys but the signal has "
                f"{state.log_d.shape[-1]}"
            )
        return add_log_durations(scores, state.log_d)

    return hook


def _rotary_hook(signal: ContinuousSignal, attn: AbstractAttention, group: int, query: bool) -> Any:
    def hook(x: Tensor, hook: HookPoint) -> Tensor:
        cos, sin = signal.rotation(group, x.device, x.dtype)
        if query:
            cos, sin = cos[:, -x.shape[1] :], sin[:, -x.shape[1] :]
        return rotate_further(x, cos, sin, attn)

    return hook


def _pos_embed_hook(signal: ContinuousSignal) -> Any:
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


def remove_continuous(model: HookedTransformer) -> bool:
    """Remove the continuous signal installed in ``model``; ``False`` if there was none.

    >>> from tl_continuous.tiny import tiny_model
    >>> remove_continuous(tiny_model("rotary"))
    False
    """
    signal = getattr(model, SIGNAL_NAME, None)
    if not isinstance(signal, ContinuousSignal) or signal.handle is None:
        return False
    signal.handle.remove()
    return True


@contextmanager
def continuous(
    model: HookedTransformer,
    durations: Durations | Float[Tensor, "batch pos"] | Float[Tensor, " pos"],
    *,
    layers: Sequence[int] | None = None,
    attention: bool = True,
    positions: bool = True,
) -> Iterator[ContinuousHandle]:
    """Within the block every forward of ``model`` is continuous (see :func:`install_continuous`).

    Leaving the block, also by an exception, removes exactly the hooks it added.

    >>> from tl_continuous.tiny import tiny_model
    >>> model = tiny_model("rotary")
    >>> with continuous(model, torch.tensor([1.0, 0.0, 1.0])):
    ...     logits = model(torch.tensor([[1, 2, 3]]))
    >>> logits.shape
    torch.Size([1, 3, 50])
    """
    handle = install_continuous(
        model, durations, layers=layers, attention=attention, positions=positions
    )
    try:
        yield handle
    finally:
        handle.remove()
