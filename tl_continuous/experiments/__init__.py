"""The continuous-tokens paper's experiments as library functions.

Each returns a :class:`Sweep` (one curve) or :class:`SweepSet` (many) that can be saved,
loaded and plotted (:mod:`tl_continuous.views.experiments`).
"""

from tl_continuous.experiments.counting import count_curve, count_dataset
from tl_continuous.experiments.events import event_curve, event_dataset
from tl_continuous.experiments.interpolation import (
    boolean_all_pairs,
    boolean_interpolation,
    interpolate_prompts,
    interpolation_dataset,
    operator_alignment,
)
from tl_continuous.experiments.prompts import load_dataset
from tl_continuous.experiments.readouts import Readout
from tl_continuous.experiments.results import Sweep, SweepSet
from tl_continuous.experiments.sums import sum_curve, sum_dataset
from tl_continuous.experiments.transforms import scaling_sweep, translation_sweep

__all__ = [
    "Readout",
    "Sweep",
    "SweepSet",
    "boolean_all_pairs",
    "boolean_interpolation",
    "count_curve",
    "count_dataset",
    "event_curve",
    "event_dataset",
    "interpolate_prompts",
    "interpolation_dataset",
    "load_dataset",
    "operator_alignment",
    "scaling_sweep",
    "sum_curve",
    "sum_dataset",
    "translation_sweep",
]
