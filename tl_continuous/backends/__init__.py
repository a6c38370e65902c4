"""Backends: the one place that touches a model's internals.

tl-continuous runs on two kinds of TransformerLens model:

* ``"hooked"``: ``HookedTransformer`` (TransformerLens 3.x; :mod:`.hooked`);
* ``"bridge"``: ``TransformerBridge``, which wraps a Hugging Face model (TransformerLens 3.9
  and 4.x; :mod:`.bridge`).

and, for ``continuous()`` and ``LinesOfThought.collect``, on an nnsight model (``"nnsight"``:
``LanguageModel`` and any nnsight wrapper of a Hugging Face causal LM; :mod:`.nnsight`).

The rest of the package asks :func:`backend_for` for the model's backend and calls the small
interface of :class:`~.base.Backend`. The backend is chosen from the model's type, without
importing either class (TransformerLens 4 has no ``HookedTransformer``).

>>> from tl_continuous.tiny import tiny_model
>>> backend_for(tiny_model()).name
'hooked'
"""

from __future__ import annotations

import importlib
from typing import Any

from tl_continuous.backends.base import Backend

__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "attention_route",
    "backend_for",
    "backend_name",
    "require_hooked",
    "set_attention_route",
    "transformer_lens_major",
]

BACKEND_NAMES = ("hooked", "bridge")
_CLASSES = {
    ("transformer_lens.HookedTransformer", "HookedTransformer"): "hooked",
    ("transformer_lens.model_bridge.bridge", "TransformerBridge"): "bridge",  # 3.x
    ("transformer_lens.model_bridge.transformer_bridge", "TransformerBridge"): "bridge",  # 4.x
    ("nnsight.intervention.envoy", "Envoy"): "nnsight",  # LanguageModel, NNsight, ...
}


def transformer_lens_major() -> int:
    """The installed TransformerLens' major version (read from its metadata, not imported).

    >>> transformer_lens_major() >= 3
    True
    """
    from importlib.metadata import version

    return int(version("transformer-lens").split(".")[0])


def require_hooked(alternative: str) -> None:
    """Raise a clear ``ImportError`` where ``HookedTransformer`` does not exist (TransformerLens 4).

    Called first by the functions that build a ``HookedTransformer``, so that on
    TransformerLens 4 they fail with the way out (``alternative``) instead of TransformerLens'
    own import error.
    """
    if transformer_lens_major() >= 4:
        from importlib.metadata import version

        raise ImportError(
            "HookedTransformer needs transformer-lens<4 (installed: "
            f"{version('transformer-lens')}, which has TransformerBridge only); {alternative}"
        )


def backend_name(model: Any) -> str:
    """``"hooked"``, ``"bridge"`` or ``"nnsight"``, from the model's class (subclasses
    included; nothing is imported).

    Raises:
        TypeError: ``model`` is neither a ``HookedTransformer``, a ``TransformerBridge`` nor an
            nnsight model.
    """
    for cls in type(model).__mro__:
        name = _CLASSES.get((cls.__module__, cls.__name__))
        if name is not None:
            return name
    raise TypeError(
        "model must be a TransformerLens HookedTransformer or TransformerBridge, or an nnsight "
        f"LanguageModel (got {type(model).__name__})"
    )


def backend_for(model: Any) -> Backend:
    """The :class:`~.base.Backend` that runs ``model``."""
    module = importlib.import_module(f"{__name__}.{backend_name(model)}")
    backend: Backend = module.BACKEND
    return backend


def attention_route(model: Any) -> str:
    """The attention route ``model`` takes now: ``"eager"`` (an explicit score matrix,
    ``hook_attn_scores`` and ``hook_pattern`` fire), ``"sdpa"`` or ``"flex_attention"``
    (fused kernels, memory O(n) in the sequence length; ``TransformerBridge`` only).

    >>> from tl_continuous.tiny import tiny_bridge
    >>> attention_route(tiny_bridge())
    'eager'
    """
    return backend_for(model).attention_route(model)


def set_attention_route(model: Any, route: str) -> str:
    """Put ``model``'s attention on ``route``; return the route it had.

    Continuous forwards follow the route: ``log d`` is added to ``hook_attn_scores`` on the
    eager route and inside the kernel, as a per-key bias, on a fused one.

    Raises:
        ValueError: ``route`` is not one of ``"eager"``, ``"sdpa"``, ``"flex_attention"``,
            the model cannot take it (a ``HookedTransformer``, a bridge in compatibility
            mode), or a continuous signal is installed (pass ``route=`` to
            :func:`~tl_continuous.continuous` instead).

    >>> from tl_continuous.tiny import tiny_bridge
    >>> bridge = tiny_bridge()
    >>> set_attention_route(bridge, "sdpa"), attention_route(bridge)
    ('eager', 'sdpa')
    """
    previous = attention_route(model)
    backend_for(model).set_attention_route(model, route)
    return previous
