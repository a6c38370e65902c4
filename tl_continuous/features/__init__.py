"""Both papers read in SAE features: a small SAELens SAE on SmolLM2's middle residual stream.

Modules, in the order data flows:

* :mod:`~tl_continuous.features.sae`: the SAELens SAE (:func:`load_sae`, the bundled
  checkpoint), its random-initialisation control (:func:`random_sae_like`), encoding;
* :mod:`~tl_continuous.features.activations`: residuals at one hook, every position;
* :mod:`~tl_continuous.features.train`: training with SAELens' ``SAETrainer`` on the default
  corpus, offline (``tl-continuous train-sae``);
* :mod:`~tl_continuous.features.quality`: explained variance, L0, dead features, spliced
  next-token loss (:class:`SAEQuality`);
* :mod:`~tl_continuous.features.counting`: the counting prompt's features as the repetitions
  shrink to duration ``c`` and over plain counts (:class:`CountFeatures`);
* :mod:`~tl_continuous.features.lines`: lines of thought in features
  (:class:`LinesOfThoughtFeatures`).

SAELens (``pip install -e '.[sae]'``; it supports TransformerLens 3.x only) is imported when
a function needs it, never at import time.
"""

from __future__ import annotations

from tl_continuous.features.counting import CountFeatures, CountResiduals, count_residuals
from tl_continuous.features.lines import LinesOfThoughtFeatures
from tl_continuous.features.quality import SAEQuality
from tl_continuous.features.sae import (
    CHECKPOINT_DIR,
    encode,
    load_sae,
    random_sae_like,
    sae_hook_name,
)

__all__ = [
    "CHECKPOINT_DIR",
    "CountFeatures",
    "CountResiduals",
    "LinesOfThoughtFeatures",
    "SAEQuality",
    "count_residuals",
    "encode",
    "load_sae",
    "random_sae_like",
    "sae_hook_name",
]
