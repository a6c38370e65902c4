"""``tl-continuous demo``'s page: one self-contained HTML file of both papers' headline figures.

:func:`build_report` runs every piece on a model and writes ``report.html`` (plotly.js inlined
once, circuitsvis views with their bundled script, so it renders offline) and ``report.json``
(the headline numbers). Sections: the counting curve, the Boolean interpolation, attention
under durations and the durations themselves, the counting testbed's curve (optional),
lines-of-thought spectra, KL against K, the variance law with its fit, a trajectory
projection, the pilots' paths as tokens shrink (lines of thought under durations), and both
papers read in SAE features (when SAELens and the bundled SAE are installed:
:mod:`tl_continuous.reports.features`). ``quick=True`` uses small grids and a few hundred short
pseudo-sentences.
"""

from __future__ import annotations

import html
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tl_continuous._progress import progress_bar
from tl_continuous.backends.base import Model
from tl_continuous.reports.settings import fit_range, k_grid

__all__ = ["ReportSettings", "build_report", "k_grid", "render_report", "timing_table"]


@dataclass(frozen=True)
class ReportSettings:
    """Sizes of the report's computations.

    Attributes:
        count_steps: values of the duration ``c`` in the counting curve.
        boolean_steps: values of the blend weight in the Boolean interpolation.
        n_sentences: pseudo-sentences of the lines-of-thought ensemble.
        n_tokens: tokens per pseudo-sentence.
        attention_layer: layer of the attention view (clipped to the model).
        testbed_prompts: prompts per count in the counting testbed.
        max_tau: longest layer gap of the residual statistics (``None``: all).
        sweep_values: durations ``c`` of the lines-of-thought duration sweep (every token
            but the pilot at ``c``, read on the plain ensemble's bases).
        sweep_sentences: how many of the ensemble's pseudo-sentences (the first ones) the
            duration sweep re-runs per ``c`` (``None``: all). The bases and the plain
            reference come from the whole ensemble; the sweep reads the mean path and the
            spread, which a few hundred pilots already fix.
        feature_steps: values of ``c`` in the SAE-feature reading of the counting prompt.
    """

    count_steps: int = 100
    boolean_steps: int = 100
    n_sentences: int = 600
    n_tokens: int = 32
    attention_layer: int = 1
    testbed_prompts: int = 16
    max_tau: int | None = None
    sweep_values: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.1)
    sweep_sentences: int | None = 128
    feature_steps: int = 37

    @classmethod
    def preset(cls, quick: bool) -> ReportSettings:
        """The full (``quick=False``) or quick preset."""
        if quick:
            return cls(count_steps=10, boolean_steps=11, n_sentences=192, n_tokens=16,
                       testbed_prompts=4, max_tau=6, sweep_values=(1.0, 0.5, 0.1),
                       sweep_sentences=64, feature_steps=10)  # fmt: skip
        return cls()


ATTENTION_PROMPT = 'In the sentence "apple apple apple apple", how many fruits are mentioned?'


@dataclass
class _Section:
    title: str
    body: str
    note: str = ""


def _plotly(fig: Any, first: bool) -> str:
    return str(fig.to_html(full_html=False, include_plotlyjs=first, default_height="480px"))


def render_report(sections: list[tuple[str, str, str]], title: str) -> str:
    """Assemble ``(title, html body, note)`` sections into one HTML page."""
    parts = [
        "<!DOCTYPE html>",
        "<html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
        "section{margin:2em 0}p.note{color:#555}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for i, (name, body, note) in enumerate(sections):
        parts.append(f"<section id='section-{i}'><h2>{html.escape(name)}</h2>")
        if note:
            parts.append(f"<p class='note'>{html.escape(note)}</p>")
        parts.append(body)
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def timing_table(seconds: dict[str, float]) -> str:
    """A plain-text table of seconds per section, with the total.

    >>> print(timing_table({"counting": 5.0, "lines_of_thought": 20.25}))
    section               seconds
    counting                  5.0
    lines_of_thought         20.2
    total                    25.2
    """
    width = max([20, *(len(name) for name in seconds)])
    rows = [f"{'section':{width}s} {'seconds':>8s}"]
    rows += [f"{name:{width}s} {value:8.1f}" for name, value in seconds.items()]
    rows.append(f"{'total':{width}s} {sum(seconds.values()):8.1f}")
    return "\n".join(rows)


def _step(progress: bool, total: int) -> Any:
    return progress_bar(total=total, desc="report", enabled=progress)


def build_report(
    model: Model,
    out: str | os.PathLike[str],
    *,
    quick: bool = False,
    settings: ReportSettings | None = None,
    testbed: bool = True,
    counting_sweep: Any | None = None,
    boolean_sweeps: Any | None = None,
    features: bool | None = None,
    progress: bool = True,
) -> Path:
    """Run the report's computations on ``model`` and write ``out/report.html`` + ``.json``.

    Args:
        model: a ``HookedTransformer`` or ``TransformerBridge`` with a tokenizer (the bundled
            SmolLM2 for the main job).
        out: output folder.
        quick: use :meth:`ReportSettings.preset` ``(quick=True)`` unless ``settings`` is given.
        settings: explicit sizes.
        testbed: include the counting testbed's curve (its own tiny trained model).
        counting_sweep: a counting :class:`~tl_continuous.experiments.results.Sweep` already
            computed (four apples), drawn instead of recomputing it.
        boolean_sweeps: an AND → OR :func:`boolean_interpolation` result already computed.
        features: include the SAE-feature section (the bundled SAE reads SmolLM2 only);
            ``None``: when SAELens and the bundled SAE are installed and the model is the
            one the SAE was trained on.
        progress: tqdm bars (one over the sections, and the computations' own).

    Returns:
        The path of ``report.html``.
    """
    from tl_continuous.continuous.durations import Durations
    from tl_continuous.experiments import boolean_interpolation, count_curve
    from tl_continuous.experiments.span_sweep import default_grid
    from tl_continuous.lines_of_thought.bases import TrajectoryBases
    from tl_continuous.lines_of_thought.corpus import pseudo_sentences
    from tl_continuous.lines_of_thought.duration_sweep import DurationSweepLines
    from tl_continuous.lines_of_thought.dynamics import ResidualStatistics, VarianceLawFit
    from tl_continuous.lines_of_thought.ensemble import LinesOfThought
    from tl_continuous.lines_of_thought.truncation import truncation_kl_last_layer
    from tl_continuous.views.attention import duration_attention_view, durations_view
    from tl_continuous.views.experiments import boolean_figure, sweep_figure
    from tl_continuous.views.html import inline_views
    from tl_continuous.views.lines_of_thought import (
        duration_sweep_figure,
        kl_figure,
        spectra_figure,
        trajectory_figure,
    )
    from tl_continuous.views.lines_of_thought_dynamics import variance_law_figure

    if model.tokenizer is None:
        raise ValueError("model must have a tokenizer (the report runs text prompts)")
    if features is None:
        from tl_continuous.reports.features import features_available

        features = features_available() and model.cfg.model_name == "smollm2-135m"
    s = settings or ReportSettings.preset(quick)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    sections: list[_Section] = []
    numbers: dict[str, Any] = {"model": model.cfg.model_name, "settings": asdict(s)}
    seconds: dict[str, float] = {}
    sub = progress and not quick
    plotted = [False]

    def fig_html(fig: Any) -> str:
        body = _plotly(fig, not plotted[0])
        plotted[0] = True
        return body

    def timed(name: str, fn: Callable[[], None]) -> None:
        t0 = time.perf_counter()
        fn()
        seconds[name] = round(time.perf_counter() - t0, 2)
        bar.update(1)
        bar.set_postfix_str(name)

    bar = _step(progress, 6 + int(testbed) + int(features))

    def counting() -> None:
        sweep = counting_sweep or count_curve(
            model, "apple", 4, default_grid(s.count_steps), progress=sub
        )
        numbers["counting"] = sweep.summary("exact")
        sections.append(
            _Section(
                "Counting under shrinking durations",
                fig_html(sweep_figure(sweep, "exact")),
                "Four repetitions of 'apple', each at duration c; the model's answer digit.",
            )
        )

    def booleans() -> None:
        lambdas = torch.linspace(0.0, 1.0, s.boolean_steps)
        result = boolean_sweeps or boolean_interpolation(model, "AND", "OR", lambdas, progress=sub)
        numbers["boolean"] = result.interpolation_summary()
        sections.append(
            _Section(
                "Boolean interpolation AND → OR",
                fig_html(boolean_figure(result)),
                "Embeddings of the operator word blended with weight λ.",
            )
        )

    def attention() -> None:
        d = Durations.from_word(model, ATTENTION_PROMPT, "apple", value=0.5)
        layer = min(s.attention_layer, model.cfg.n_layers - 1)
        text = [str(t) for t in model.to_str_tokens(ATTENTION_PROMPT)]
        attn = duration_attention_view(model, ATTENTION_PROMPT, d, layer=layer)
        # the circuitsvis bundle (~1.3 MB) is inlined once, in the first view's section
        attn_html, durations_html = inline_views([attn, durations_view(text, d)])
        sections.append(
            _Section(
                f"Attention of layer {layer} with the apples at duration 0.5",
                attn_html,
                "Labels show each token with its duration (token·duration).",
            )
        )
        sections.append(_Section("Durations of the prompt", durations_html, ""))

    def testbed_curve() -> None:
        from tl_continuous.backends import backend_name
        from tl_continuous.models import load_model
        from tl_continuous.testbed.experiment import CountingContinuityResult
        from tl_continuous.views.testbed import expected_count_figure

        # the testbed on the same backend as the report's model
        testbed_model = load_model("counting-testbed", backend=backend_name(model))
        result = CountingContinuityResult.from_model(
            testbed_model,
            ns=(1, 2, 3, 4, 5),
            variants=("full",),
            n_prompts=s.testbed_prompts,
            uneven_trials=8,
            progress=sub,
        )
        numbers["testbed"] = {"mae": result.mae("full")}
        sections.append(
            _Section(
                "Counting testbed (a tiny model trained to count durations)",
                fig_html(expected_count_figure(result)),
                "For comparison with the pretrained model's counting curve above.",
            )
        )

    state: dict[str, Any] = {}

    def lines() -> None:
        corpus = pseudo_sentences(model, n_tokens=s.n_tokens, limit=s.n_sentences, seed=0)
        lot = LinesOfThought.collect(model, corpus, progress=sub)
        bases = TrajectoryBases.from_ensemble(lot, realign=True)
        curve = truncation_kl_last_layer(model, lot, bases, k_grid(bases.rank), progress=sub)
        state.update(lot=lot, bases=bases, corpus=corpus)
        numbers["lines_of_thought"] = {
            "n_trajectories": lot.n_trajectories,
            "n_tokens": s.n_tokens,
            "kl_knee_k": curve.knee_k,
            "kl_baseline": curve.baseline,
        }
        sections.append(
            _Section(
                "Lines of thought: singular spectra per layer",
                fig_html(spectra_figure(bases)),
                f"{lot.n_trajectories} pseudo-sentences of {s.n_tokens} tokens; the pilot is "
                "the last token; uncentred SVD per layer.",
            )
        )
        sections.append(
            _Section(
                "KL against K (last layer truncated)",
                fig_html(kl_figure([curve])),
                "",
            )
        )
        sections.append(
            _Section(
                "A trajectory projection",
                fig_html(trajectory_figure(lot.trajectories, bases, n_lines=20)),
                "Twenty lines of thought through the layers, on the last layer's u1, u2.",
            )
        )

    def variance() -> None:
        lot, bases = state["lot"], state["bases"]
        stats = ResidualStatistics.from_lines(
            lot, bases, n_blocks=model.cfg.n_layers, max_tau=s.max_tau, progress=sub
        )
        n = stats.n_layers
        fit = VarianceLawFit.from_statistics(stats, layers=fit_range(n))
        numbers["variance_law"] = fit.to_dict()
        sections.append(
            _Section(
                "Variance law of the extrapolation residuals",
                fig_html(variance_law_figure(stats, fit)),
                f"ln var = ln α + λ (t + τ): λ = {fit.lam:.3f}, R² = {fit.r2:.3f}.",
            )
        )

    def shrinking() -> None:
        lot, bases = state["lot"], state["bases"]
        n = lot.n_trajectories if s.sweep_sentences is None else s.sweep_sentences
        plain = lot.subset(slice(0, n))  # the plain ensemble's own first n pilots
        assert plain.tokens is not None
        sweep = DurationSweepLines.collect(
            model, plain.tokens, bases, list(s.sweep_values), plain=plain, progress=sub
        )
        distance = sweep.distance()
        numbers["duration_sweep"] = {
            "n_sentences": plain.n_trajectories,
            "values": sweep.values.tolist(),
            "last_layer_distance": distance[:, -1].tolist(),
        }
        sections.append(
            _Section(
                "Lines of thought as tokens shrink",
                fig_html(duration_sweep_figure(sweep)),
                f"The first {plain.n_trajectories} pseudo-sentences with every token but the "
                "pilot at duration c, on the plain ensemble's bases: the mean pilot path per c "
                "(left) and its distance from the plain mean in units of the plain spread "
                "(right).",
            )
        )

    timed("counting", counting)
    timed("boolean", booleans)
    timed("attention", attention)
    if testbed:
        timed("testbed", testbed_curve)
    timed("lines_of_thought", lines)
    timed("variance_law", variance)

    def sae_features() -> None:
        from tl_continuous.reports.features import compute_readings, section

        steps = torch.linspace(0.1, 1.0, s.feature_steps).tolist()
        readings = compute_readings(model, state["lot"], state["bases"], values=steps)
        numbers["features"] = readings.numbers()
        sections.append(_Section(*section(readings, fig_html)))

    timed("duration_sweep", shrinking)
    if features:
        timed("features", sae_features)
    bar.close()
    numbers["seconds"] = seconds

    order = [
        "Counting under",
        "Counting testbed",
        "Boolean",
        "Attention",
        "Durations",
        "Lines of thought: singular",
        "KL",
        "Variance",
        "A trajectory",
        "Lines of thought as tokens shrink",
        "SAE features",
    ]
    sections.sort(key=lambda sec: next(i for i, p in enumerate(order) if sec.title.startswith(p)))
    title = f"tl-continuous report: {model.cfg.model_name}" + (" (quick)" if quick else "")
    page = render_report([(x.title, x.body, x.note) for x in sections], title)
    path = folder / "report.html"
    path.write_text(page, encoding="utf-8")
    (folder / "report.json").write_text(json.dumps(numbers, indent=1, default=float))
    return path
