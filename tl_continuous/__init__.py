"""tl-continuous: continuous tokens and lines of thought for TransformerLens.

The public API lives here; every name is importable as ``tl_continuous.<name>``. Names are
resolved on first use (PEP 562), so ``import tl_continuous`` and ``tl-continuous --help``
do not pay for importing torch and TransformerLens.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tl_continuous.lines_of_thought.compare import EnsembleComparison
    from tl_continuous.lines_of_thought.controls import LayerDiagnostics
    from tl_continuous.lines_of_thought.dynamics import ResidualStatistics, VarianceLawFit
    from tl_continuous.lines_of_thought.ensemble import LinesOfThought
    from tl_continuous.lines_of_thought.langevin import LangevinModel
    from tl_continuous.models import MODELS, load_hf_folder, load_model
    from tl_continuous.tiny import tiny_model

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "EnsembleComparison": "tl_continuous.lines_of_thought.compare",
    "LangevinModel": "tl_continuous.lines_of_thought.langevin",
    "LayerDiagnostics": "tl_continuous.lines_of_thought.controls",
    "LinesOfThought": "tl_continuous.lines_of_thought.ensemble",
    "ResidualStatistics": "tl_continuous.lines_of_thought.dynamics",
    "VarianceLawFit": "tl_continuous.lines_of_thought.dynamics",
    "MODELS": "tl_continuous.models",
    "load_hf_folder": "tl_continuous.models",
    "load_model": "tl_continuous.models",
    "tiny_model": "tl_continuous.tiny",
}

__all__ = [
    "EnsembleComparison",
    "LangevinModel",
    "LayerDiagnostics",
    "LinesOfThought",
    "ResidualStatistics",
    "VarianceLawFit",
    "MODELS",
    "load_hf_folder",
    "load_model",
    "tiny_model",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tl_continuous' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
