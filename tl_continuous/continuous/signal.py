"""The continuous signal spliced into a model, and the ``continuous()`` context.

Installing splices a :class:`ContinuousSignal` module into the model as ``model.continuous``,
with two HookPoints that every forward pass fires:

* ``continuous.hook_durations``: ``[batch, pos]`` durations of the keys of this forward;
* ``continuous.hook_positions``: ``[batch, pos]`` positions ``start + cumsum(durations)``.

Both appear in ``model.hook_dict`` and in ``run_with_cache`` caches; a user hook may read or
overwrite them, and what it returns is what attention and positions use. The model may be a
``HookedTransformer`` or a ``TransformerBridge``: the mechanism's model-specific half (where a
forward's batch, length, padding mask and KV-cache offset come from, how real positions reach
rotary angles or learned rows) lives in :mod:`tl_continuous.backends`. On both, ``log d`` is
added in permanent, prepended hooks of ``blocks.{i}.attn.hook_attn_scores``, so user hooks
there see the continuous scores; permanent hooks survive the ``reset_hooks()`` that
``run_with_hooks`` and ``transformer_lens.patching`` call, and removal takes off exactly
these hooks and no other.

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

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from tl_continuous.backends import backend_for
from tl_continuous.backends.base import AnyModel
from tl_continuous.continuous.attention import log_durations
from tl_continuous.continuous.durations import Durations
from tl_continuous.continuous.positions import table_index

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
        extra: what a backend derives from the state and keeps for the rest of the forward
            (rotation angles per device and dtype, ...).
    """

    key: tuple[int, int, int, bool]
    durations: Tensor
    positions: Tensor
    log_d: Tensor
    index: Tensor
    valid: Tensor | None
    extra: dict[Any, Any] = field(default_factory=dict)

    @property
    def offset(self) -> int:
        """Number of cached keys (KV cache) before this forward's tokens."""
        return self.key[2]


class ContinuousSignal(nn.Module):
    """Holds the durations of a model made continuous; its HookPoints expose the signal.

    Args:
        durations: the :class:`Durations` (one row broadcasts over the token batch).
        attention: whether ``log d`` is added to the scores of some layer (then every query
            needs a visible key of positive duration; see :meth:`forward`).

    The module has no parameters or buffers, so it leaves ``state_dict`` unchanged.
    """

    def __init__(self, durations: Durations, *, attention: bool = True) -> None:
        super().__init__()
        self.hook_durations = HookPoint()
        self.hook_positions = HookPoint()
        self.durations = durations
        self.attention = attention
        self.state: SignalState | None = None
        self.handle: ContinuousHandle | None = None

    def get_hooks(self) -> dict[str, HookPoint]:
        """The signal's HookPoints by local name (how a ``TransformerBridge`` finds them)."""
        return {"hook_durations": self.hook_durations, "hook_positions": self.hook_positions}

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

        Raises:
            ValueError: the durations do not match the batch or the forward's length; the
                durations returned by ``continuous.hook_durations`` are negative, not finite
                or leave a row without a token of positive duration (below); the positions
                returned by ``continuous.hook_positions`` are not finite or decrease.

        Zero durations: a key of duration 0 gets ``log 0 = -inf`` in every score, so the
        token vanishes from attention. The rule: every row (prompt) must keep at least one
        real token (not a pad) of positive duration among the keys of this forward;
        otherwise every query of the row would see only ``-inf`` scores and its attention
        would silently read nothing. A partly-zero row is allowed, zeros anywhere, including
        a zero prefix (``[0, 0, 1, 1]``): by the causal mask the tokens of an all-zero
        prefix see no key of positive duration, so their own outputs (the logits at those
        positions) read no attention and mean nothing, but no later token sees them either
        (their durations are 0), so from the first positive duration on the forward equals
        the prompt without that prefix at the same positions (this is how a duration
        sweep's ``c = 0`` removes tokens; on a learned table mind the origin convention of
        :mod:`.positions`: with ``d_0 = 0`` the first kept token ``k`` sits at table index
        ``start + d_k``). Durations at pad positions are ignored (their keys are masked): a
        padded row whose real tokens all have duration 0 is refused even if its pads have
        positive durations. Under a KV cache the keys include the cached tokens. With
        ``attention=False`` (positions only) any zeros are allowed.
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
        if self.attention:
            _check_rows_keep_a_key(d, valid, offset)
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
        return SignalState(
            key=(batch, length, offset, attention_mask is not None),
            durations=d,
            positions=positions,
            log_d=log_durations(d),
            index=table_index(positions, d, valid),
            valid=valid,
        )

    def current(self) -> SignalState:
        """The state of the running forward (``RuntimeError`` outside a forward)."""
        if self.state is None:
            raise RuntimeError(
                "the continuous signal was used outside a forward pass of the model it is "
                "installed in"
            )
        return self.state


def _check_rows_keep_a_key(d: Tensor, valid: Tensor | None, offset: int) -> None:
    """Raise if a row with real queries in this forward has no real key of positive duration."""
    real = torch.ones_like(d, dtype=torch.bool) if valid is None else valid.bool()
    empty = ~((d > 0) & real).any(dim=-1) & real[:, offset:].any(dim=-1)
    if not bool(empty.any()):
        return
    row = int(empty.nonzero()[0])
    values = [f"{v:g}" for v in d[row].tolist()]
    shown = ", ".join(values[:12]) + (", ..." if len(values) > 12 else "")
    pads = "" if valid is None else " (pad positions do not count)"
    raise ValueError(
        f"durations returned by continuous.hook_durations leave row {row} without a token of "
        f"positive duration{pads}: row {row} = [{shown}]. A token of duration 0 vanishes from "
        "attention (its scores get -inf), so every query of this row would read nothing and "
        "the attention output would be silently zero; keep at least one duration > 0 per row"
    )


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

    model: AnyModel
    signal: ContinuousSignal
    undo: list[Callable[[], None]] = field(default_factory=list)
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
        for undo in reversed(self.undo):
            undo()
        self.signal.reset()

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


def _check_layers(n_layers: int, layers: Sequence[int] | None) -> list[int]:
    if layers is None:
        return list(range(n_layers))
    chosen = sorted({int(i) for i in layers})
    bad = [i for i in chosen if not 0 <= i < n_layers]
    if bad:
        raise ValueError(f"layers must be in [0, {n_layers - 1}] (got {bad})")
    return chosen


def install_continuous(
    model: AnyModel,
    durations: Durations | Float[Tensor, "batch pos"] | Float[Tensor, " pos"],
    *,
    layers: Sequence[int] | None = None,
    attention: bool = True,
    positions: bool = True,
    route: str | None = None,
) -> ContinuousHandle:
    """Make every forward of ``model`` continuous until the returned handle is removed.

    Args:
        model: a ``HookedTransformer``, a ``TransformerBridge`` or an nnsight
            ``LanguageModel`` (see :mod:`tl_continuous.backends.nnsight`).
        durations: a :class:`Durations` (or a tensor of durations, ``start = 0``).
        layers: layers whose attention gets the log-duration term (default: all).
            Positions are real in every layer regardless.
        attention: add ``log d`` to the pre-softmax scores (duration-weighted attention).
        positions: use the real positions (rotary or learned tables).
        route: the attention route while installed: ``"eager"`` (the score matrix, where
            ``blocks.{i}.attn.hook_attn_scores`` sees the continuous scores), ``"sdpa"`` or
            ``"flex_attention"`` (fused kernels, ``log d`` as a per-key bias; a
            ``TransformerBridge`` only). Default: the model's own route
            (:func:`attention_route`); removal restores it.

    Returns:
        A :class:`ContinuousHandle`; ``handle.remove()`` or :func:`remove_continuous` undoes
        the installation.

    Raises:
        TypeError: ``model`` is not a TransformerLens (or nnsight) model.
        ValueError: the model already has a continuous signal, ``layers`` are out of range,
            ``positions=True`` on a positional scheme that is not supported, or ``route`` is
            not a route the model can take.

    >>> from tl_continuous.tiny import tiny_model
    >>> model = tiny_model("learned")
    >>> handle = install_continuous(model, torch.tensor([1.0, 0.5, 2.0]))
    >>> "continuous.hook_durations" in model.hook_dict
    True
    >>> handle.remove()
    >>> "continuous.hook_durations" in model.hook_dict
    False
    """
    backend = backend_for(model)
    if isinstance(backend.attached_signal(model), ContinuousSignal):
        raise ValueError(
            "model already has a continuous signal installed; remove it first "
            "(handle.remove() or remove_continuous(model))"
        )
    if hasattr(model, SIGNAL_NAME):
        raise ValueError(f"model already has an attribute {SIGNAL_NAME!r}")
    durations = _as_durations(durations)
    chosen = _check_layers(backend.n_layers(model), layers)
    if positions:
        backend.check_positions(model)

    # in the model's mode: TransformerLens 4's patching refuses a model with any submodule in
    # training mode, and the signal becomes a submodule
    signal = ContinuousSignal(durations, attention=attention and bool(chosen)).train(model.training)
    handle = ContinuousHandle(model=model, signal=signal)
    try:
        if route is not None:
            handle.undo.append(backend.set_attention_route(model, route))
        handle.undo.append(backend.attach_signal(model, signal))
        handle.undo.extend(
            backend.install(model, signal, layers=chosen, attention=attention, positions=positions)
        )
    except BaseException:
        handle.remove()
        raise
    signal.handle = handle
    return handle


def remove_continuous(model: AnyModel) -> bool:
    """Remove the continuous signal installed in ``model``; ``False`` if there was none.

    >>> from tl_continuous.tiny import tiny_model
    >>> remove_continuous(tiny_model("rotary"))
    False
    """
    signal = backend_for(model).attached_signal(model)
    if not isinstance(signal, ContinuousSignal) or signal.handle is None:
        return False
    signal.handle.remove()
    return True


@contextmanager
def continuous(
    model: AnyModel,
    durations: Durations | Float[Tensor, "batch pos"] | Float[Tensor, " pos"],
    *,
    layers: Sequence[int] | None = None,
    attention: bool = True,
    positions: bool = True,
    route: str | None = None,
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
        model, durations, layers=layers, attention=attention, positions=positions, route=route
    )
    try:
        yield handle
    finally:
        handle.remove()
