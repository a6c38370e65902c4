"""tl-continuous: continuous tokens and lines of thought for TransformerLens.

The public API lives here; every name is importable as ``tl_continuous.<name>``. Names are
resolved on first use (PEP 562), so ``import tl_continuous`` and ``tl-continuous --help``
do not pay for importing torch and TransformerLens.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tl_continuous.backends import attention_route, set_attention_route
    from tl_continuous.continuous.blend import blend_embeddings
    from tl_continuous.continuous.durations import Durations
    from tl_continuous.continuous.signal import (
        continuous,
        install_continuous,
        remove_continuous,
    )
    from tl_continuous.experiments.counting import count_curve, count_dataset
    from tl_continuous.experiments.events import event_curve, event_dataset
    from tl_continuous.experiments.interpolation import (
        boolean_all_pairs,
        boolean_interpolation,
        interpolate_prompts,
        interpolation_dataset,
    )
    from tl_continuous.experiments.readouts import Readout
    from tl_continuous.experiments.results import Sweep, SweepSet
    from tl_continuous.experiments.sums import sum_curve, sum_dataset
    from tl_continuous.experiments.transforms import scaling_sweep, translation_sweep
    from tl_continuous.lines_of_thought.compare import EnsembleComparison
    from tl_continuous.lines_of_thought.controls import LayerDiagnostics
    from tl_continuous.lines_of_thought.duration_sweep import DurationSweepLines
    from tl_continuous.lines_of_thought.dynamics import ResidualStatistics, VarianceLawFit
    from tl_continuous.lines_of_thought.ensemble import LinesOfThought
    from tl_continuous.lines_of_thought.langevin import LangevinModel
    from tl_continuous.models import MODELS, load_hf_folder, load_model
    from tl_continuous.patching import patch_across_durations, patch_all_across_durations
    from tl_continuous.testbed.experiment import CountingContinuityResult
    from tl_continuous.tiny import tiny_model

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "Readout": "tl_continuous.experiments.readouts",
    "Sweep": "tl_continuous.experiments.results",
    "SweepSet": "tl_continuous.experiments.results",
    "count_curve": "tl_continuous.experiments.counting",
    "patch_across_durations": "tl_continuous.patching",
    "patch_all_across_durations": "tl_continuous.patching",
    "count_dataset": "tl_continuous.experiments.counting",
    "event_curve": "tl_continuous.experiments.events",
    "event_dataset": "tl_continuous.experiments.events",
    "sum_curve": "tl_continuous.experiments.sums",
    "sum_dataset": "tl_continuous.experiments.sums",
    "interpolate_prompts": "tl_continuous.experiments.interpolation",
    "interpolation_dataset": "tl_continuous.experiments.interpolation",
    "boolean_interpolation": "tl_continuous.experiments.interpolation",
    "boolean_all_pairs": "tl_continuous.experiments.interpolation",
    "translation_sweep": "tl_continuous.experiments.transforms",
    "scaling_sweep": "tl_continuous.experiments.transforms",
    "CountingContinuityResult": "tl_continuous.testbed.experiment",
    "Durations": "tl_continuous.continuous.durations",
    "blend_embeddings": "tl_continuous.continuous.blend",
    "continuous": "tl_continuous.continuous.signal",
    "install_continuous": "tl_continuous.continuous.signal",
    "remove_continuous": "tl_continuous.continuous.signal",
    "attention_route": "tl_continuous.backends",
    "set_attention_route": "tl_continuous.backends",
    "EnsembleComparison": "tl_continuous.lines_of_thought.compare",
    "DurationSweepLines": "tl_continuous.lines_of_thought.duration_sweep",
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
    "MODELS",
    "CountingContinuityResult",
    "DurationSweepLines",
    "Durations",
    "EnsembleComparison",
    "LangevinModel",
    "LayerDiagnostics",
    "LinesOfThought",
    "Readout",
    "ResidualStatistics",
    "Sweep",
    "SweepSet",
    "VarianceLawFit",
    "attention_route",
    "blend_embeddings",
    "boolean_all_pairs",
    "boolean_interpolation",
    "continuous",
    "count_curve",
    "count_dataset",
    "event_curve",
    "event_dataset",
    "install_continuous",
    "interpolate_prompts",
    "interpolation_dataset",
    "load_hf_folder",
    "load_model",
    "patch_across_durations",
    "patch_all_across_durations",
    "remove_continuous",
    "scaling_sweep",
    "set_attention_route",
    "sum_curve",
    "sum_dataset",
    "tiny_model",
    "translation_sweep",
]

__version__ = "0.1.0"


class _Package(types.ModuleType):
    """The package's module type: the public ``continuous`` (a function) shares its name
    with the subpackage ``tl_continuous.continuous``. The import system binds a subpackage
    as an attribute of its parent once loaded; this keeps the public name instead (the
    subpackage stays importable: ``from tl_continuous.continuous.signal import ...``).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tl_continuous' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
