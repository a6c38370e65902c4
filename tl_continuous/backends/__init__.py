"""Backends: the one place that touches a model's internals.

tl-continuous runs on two kinds of TransformerLens model:

* ``"hooked"``: ``HookedTransformer`` (TransformerLens 3.x; :mod:`.hooked`);
* ``"bridge"``: ``TransformerBridge``, which wraps a Hugging Face model (TransformerLens 3.9
  and 4.x; :mod:`.bridge`).

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

__all__ = ["BACKEND_NAMES", "Backend", "backend_for", "backend_name"]

BACKEND_NAMES = ("hooked", "bridge")
_CLASSES = {
    ("transformer_lens.HookedTransformer", "HookedTransformer"): "hooked",
    ("transformer_lens.model_bridge.bridge", "TransformerBridge"): "bridge",
}


def backend_name(model: Any) -> str:
    """``"hooked"`` or ``"bridge"``, from the model's class (subclasses included).

    Raises:
        TypeError: ``model`` is neither a ``HookedTransformer`` nor a ``TransformerBridge``.
    """
    for cls in type(model).__mro__:
        name = _CLASSES.get((cls.__module__, cls.__name__))
        if name is not None:
            return name
    raise TypeError(
        "model must be a TransformerLens HookedTransformer or TransformerBridge "
        f"(got {type(model).__name__})"
    )


def backend_for(model: Any) -> Backend:
    """The :class:`~.base.Backend` that runs ``model``."""
    module = importlib.import_module(f"{__name__}.{backend_name(model)}")
    backend: Backend = module.BACKEND
    return backend
