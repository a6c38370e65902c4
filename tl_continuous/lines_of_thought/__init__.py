"""Lines of thought (ICLR 2025): residual-stream trajectory ensembles of a ``HookedTransformer``.

Modules, in the order data flows:

* :mod:`~tl_continuous.lines_of_thought.corpus`: pseudo-sentences, default corpus, gibberish.
* :mod:`~tl_continuous.lines_of_thought.ensemble`: :class:`LinesOfThought` (the ensemble).
* :mod:`~tl_continuous.lines_of_thought.collect`: lean, resumable, sharded collection.
* :mod:`~tl_continuous.lines_of_thought.launch`: collection under torchrun or a SLURM array.
* :mod:`~tl_continuous.lines_of_thought.bases`: per-layer SVD bases and their realignment.
* :mod:`~tl_continuous.lines_of_thought.truncation`: KL under truncation to top-K directions.
* :mod:`~tl_continuous.lines_of_thought.dynamics`: extrapolation residuals, the variance law.
* :mod:`~tl_continuous.lines_of_thought.langevin`: the Langevin model, simulation, moments.
* :mod:`~tl_continuous.lines_of_thought.compare`: classifier accuracy and Wasserstein distances.
* :mod:`~tl_continuous.lines_of_thought.controls`: controls and per-layer diagnostics.
* :mod:`~tl_continuous.lines_of_thought.duration_sweep`: :class:`DurationSweepLines`, the
  ensemble collected under a sweep of durations, read on the plain ensemble's bases.
* :mod:`~tl_continuous.lines_of_thought.streaming` and
  :mod:`~tl_continuous.lines_of_thought.streaming_kl`: bases, residual statistics and KL
  curves from a shard folder, one shard at a time (memory independent of N).
* :mod:`~tl_continuous.lines_of_thought.synthetic`: a known linear-Gaussian model (tests, demos).

This package never imports :mod:`tl_continuous.continuous` at import time (only
:meth:`DurationSweepLines.collect` does, when called). Submodules are imported lazily.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tl_continuous.lines_of_thought.bases import TrajectoryBases, realign_bases
    from tl_continuous.lines_of_thought.collect import (
        CorruptShardError,
        IncompleteShardsError,
        collect_shards,
        iter_shards,
        load_shards,
        verify_shards,
    )
    from tl_continuous.lines_of_thought.compare import (
        ClassifierTest,
        EnsembleComparison,
        classifier_accuracy,
        classifier_test,
        gaussian_wasserstein,
        sliced_wasserstein,
    )
    from tl_continuous.lines_of_thought.controls import (
        DynamicsSummary,
        LayerDiagnostics,
        layer_separability,
        reinitialised_model,
        untrained_model,
    )
    from tl_continuous.lines_of_thought.corpus import (
        PseudoSentences,
        default_corpus_text,
        gibberish,
        pseudo_sentences,
    )
    from tl_continuous.lines_of_thought.duration_sweep import DurationSweepLines
    from tl_continuous.lines_of_thought.dynamics import (
        ResidualStatistics,
        VarianceLawFit,
        extrapolate,
        residuals,
    )
    from tl_continuous.lines_of_thought.ensemble import LinesOfThought
    from tl_continuous.lines_of_thought.langevin import LangevinModel, orthogonal_path
    from tl_continuous.lines_of_thought.launch import (
        LaunchedCollection,
        WorkerPlace,
        collect_launched,
        worker_from_env,
    )
    from tl_continuous.lines_of_thought.streaming import (
        gram_matrices,
        streamed_bases,
        streamed_residual_statistics,
    )
    from tl_continuous.lines_of_thought.streaming_kl import (
        streamed_truncation_kl_every_layer,
        streamed_truncation_kl_last_layer,
    )
    from tl_continuous.lines_of_thought.synthetic import (
        SyntheticEnsemble,
        linear_gaussian_ensemble,
    )
    from tl_continuous.lines_of_thought.truncation import (
        TruncationCurve,
        truncation_kl_every_layer,
        truncation_kl_last_layer,
    )

_EXPORTS: dict[str, str] = {
    "TrajectoryBases": "bases",
    "realign_bases": "bases",
    "CorruptShardError": "collect",
    "IncompleteShardsError": "collect",
    "collect_shards": "collect",
    "load_shards": "collect",
    "iter_shards": "collect",
    "verify_shards": "collect",
    "LaunchedCollection": "launch",
    "WorkerPlace": "launch",
    "collect_launched": "launch",
    "worker_from_env": "launch",
    "gram_matrices": "streaming",
    "streamed_bases": "streaming",
    "streamed_residual_statistics": "streaming",
    "streamed_truncation_kl_every_layer": "streaming_kl",
    "streamed_truncation_kl_last_layer": "streaming_kl",
    "PseudoSentences": "corpus",
    "default_corpus_text": "corpus",
    "gibberish": "corpus",
    "pseudo_sentences": "corpus",
    "LinesOfThought": "ensemble",
    "ClassifierTest": "compare",
    "EnsembleComparison": "compare",
    "classifier_accuracy": "compare",
    "classifier_test": "compare",
    "gaussian_wasserstein": "compare",
    "sliced_wasserstein": "compare",
    "DynamicsSummary": "controls",
    "LayerDiagnostics": "controls",
    "layer_separability": "controls",
    "reinitialised_model": "controls",
    "untrained_model": "controls",
    "DurationSweepLines": "duration_sweep",
    "ResidualStatistics": "dynamics",
    "VarianceLawFit": "dynamics",
    "extrapolate": "dynamics",
    "residuals": "dynamics",
    "LangevinModel": "langevin",
    "orthogonal_path": "langevin",
    "SyntheticEnsemble": "synthetic",
    "linear_gaussian_ensemble": "synthetic",
    "TruncationCurve": "truncation",
    "truncation_kl_every_layer": "truncation",
    "truncation_kl_last_layer": "truncation",
}

__all__ = [
    "ClassifierTest",
    "CorruptShardError",
    "DurationSweepLines",
    "DynamicsSummary",
    "EnsembleComparison",
    "IncompleteShardsError",
    "LangevinModel",
    "LaunchedCollection",
    "LayerDiagnostics",
    "LinesOfThought",
    "PseudoSentences",
    "ResidualStatistics",
    "SyntheticEnsemble",
    "TrajectoryBases",
    "TruncationCurve",
    "VarianceLawFit",
    "WorkerPlace",
    "classifier_accuracy",
    "classifier_test",
    "collect_launched",
    "collect_shards",
    "default_corpus_text",
    "extrapolate",
    "gaussian_wasserstein",
    "gibberish",
    "gram_matrices",
    "iter_shards",
    "layer_separability",
    "linear_gaussian_ensemble",
    "load_shards",
    "orthogonal_path",
    "pseudo_sentences",
    "realign_bases",
    "reinitialised_model",
    "residuals",
    "sliced_wasserstein",
    "streamed_bases",
    "streamed_residual_statistics",
    "streamed_truncation_kl_every_layer",
    "streamed_truncation_kl_last_layer",
    "truncation_kl_every_layer",
    "truncation_kl_last_layer",
    "untrained_model",
    "verify_shards",
    "worker_from_env",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
