"""What a backend provides: the seam between the package and a model's internals.

A backend knows, for one kind of model, where a forward pass's facts come from (batch,
number of keys, KV-cache offset, padding mask), how real positions reach the model (rotary
angles or learned position rows), how the continuous signal's HookPoints are registered and
removed, and how to run a forward that reuses a key/value cache. Everything else in the
package is written once against this interface and the public TransformerLens API that both
kinds share (``hook_dict``, ``hooks()``, ``run_with_hooks``, ``run_with_cache``, ``cfg``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from tl_continuous.continuous.attention import add_log_durations

__all__ = ["AnyModel", "Backend", "Model", "Undo", "add_permanent_hook", "scores_hook"]

#: What public functions take: a ``HookedTransformer`` or a ``TransformerBridge``. Both are
#: torch modules with TransformerLens' hook API (``hook_dict``, ``hooks()``,
#: ``run_with_hooks``, ``run_with_cache``, ``cfg``); :func:`tl_continuous.backends.backend_for`
#: tells them apart and rejects anything else. (For the type checker it is ``Any``: the two
#: classes share no typed base class with their attributes.)
if TYPE_CHECKING:
    Model: TypeAlias = Any
else:
    Model = nn.Module

#: What ``continuous()`` and ``LinesOfThought.collect`` take: a :data:`Model` or an nnsight
#: model (a ``LanguageModel``: an nnsight ``Envoy``, not a torch module). ``Any`` for the type
#: checker and at run time (nnsight is optional); ``backend_for`` tells the kinds apart.
AnyModel: TypeAlias = Any

#: removes one thing an installation added
Undo = Callable[[], None]


@runtime_checkable
class Backend(Protocol):
    """The interface each backend module exposes as ``BACKEND``."""

    name: str

    def n_layers(self, model: Any) -> int:
        """Number of blocks (decoder layers)."""
        ...

    def attached_signal(self, model: Any) -> Any:
        """The ``ContinuousSignal`` spliced into ``model`` by :meth:`attach_signal` (whatever
        ``model.continuous`` holds), or ``None``."""
        ...

    def positional_scheme(self, model: Any) -> str:
        """``"rotary"``, ``"learned"``, or the name of a scheme with no real positions."""
        ...

    def check_positions(self, model: Any) -> None:
        """Raise ``ValueError`` naming the scheme when real positions are not implemented."""
        ...

    def attach_signal(self, model: Any, signal: Any) -> Undo:
        """Splice the ``ContinuousSignal`` into ``model`` as ``model.continuous`` (its
        HookPoints then appear in ``hook_dict`` and caches); return what detaches it."""
        ...

    def attention_route(self, model: Any) -> str:
        """How ``model`` computes attention now: ``"eager"`` (an explicit score matrix, with
        ``hook_attn_scores`` and ``hook_pattern``), ``"sdpa"`` or ``"flex_attention"``."""
        ...

    def set_attention_route(self, model: Any, route: str) -> Undo:
        """Make ``model`` compute attention on ``route``; return what restores the route it
        had. ``ValueError`` names a route the model cannot take."""
        ...

    def kv_prefix(self, model: Any, prefix: Tensor) -> Any:
        """Run ``prefix`` ``[batch, pos]`` once and return its key/value cache."""
        ...

    def kv_continue(self, model: Any, tokens: Tensor, cache: Any, repeat: int) -> Tensor:
        """Logits of ``tokens`` after a :meth:`kv_prefix` cache whose rows are tiled
        ``repeat`` times (``K``-major), leaving the cache as it was."""
        ...

    def kv_branches(self, model: Any, token: Tensor, cache: Any, m: int) -> Tensor:
        """Logits ``[m, batch, vocab]`` of ``m`` independent one-token continuations of a
        :meth:`kv_prefix` cache by ``token`` ``[batch, 1]``, told apart by hooks, which see
        the branches either as positions (``[batch, m, ...]``) or as rows ``K``-major
        (``[m * batch, 1, ...]``); ``cache`` is left as it was."""
        ...

    def install(
        self,
        model: Any,
        signal: Any,
        *,
        layers: Sequence[int],
        attention: bool,
        positions: bool,
    ) -> list[Undo]:
        """Add the hooks that make every forward continuous; return one undo per hook."""
        ...


def add_permanent_hook(point: HookPoint, fn: Callable[..., Any]) -> Undo:
    """Prepend a permanent forward hook to a HookPoint; return what removes exactly it.

    Permanent hooks survive ``reset_hooks()`` (which ``run_with_hooks`` and
    ``transformer_lens.patching`` call); prepended ones run before user hooks, so a user
    hook on the same point sees the continuous activation.
    """
    before = {id(h) for h in point.fwd_hooks}
    point.add_hook(fn, dir="fwd", is_permanent=True, prepend=True)
    (added,) = [h for h in point.fwd_hooks if id(h) not in before]

    def undo() -> None:
        added.hook.remove()
        point.fwd_hooks = [h for h in point.fwd_hooks if h is not added]

    return undo


def scores_hook(signal: Any) -> Callable[[Tensor, HookPoint], Tensor]:
    """The hook of ``blocks.{i}.attn.hook_attn_scores``: ``log d`` added in every key column.

    The same on both backends: the scores there are pre-softmax, after the causal and
    padding masks, ``[batch, head, query_pos, key_pos]``.
    """

    def hook(scores: Tensor, hook: HookPoint) -> Tensor:
        state = signal.current()
        if scores.shape[-1] != state.log_d.shape[-1]:
            raise RuntimeError(
                f"attention scores have {scores.shape[-1]} keys but the signal has "
                f"{state.log_d.shape[-1]}"
            )
        return add_log_durations(scores, state.log_d)

    return hook
