"""``tl-continuous report features``: both papers read in SAE features, trained SAE against its
random control; and the report page's section of the same readings.

::

    tl-continuous report features                   # SmolLM2, the bundled SAE, 600 x 50 tokens
    tl-continuous report features --backend bridge  # the same on a TransformerBridge
    tl-continuous report features --render-only     # markdown from the JSON

The readings (:func:`compute_readings`): the SAE's quality as recorded when it was trained
(``training.json`` beside the bundled weights,
:func:`~tl_continuous.features.train.read_record`), the counting prompt's features along the
duration sweep (:class:`~tl_continuous.features.counting.CountFeatures`) and the ensemble's
pilots in features (:class:`~tl_continuous.features.lines.LinesOfThoughtFeatures`), each for
the trained SAE and for the same architecture at its random initialisation. The results table
goes to ``docs/results_features.md`` and its numbers to the JSON beside it. Needs SAELens.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tl_continuous.reports.settings import add_backend_argument, start_report, write_report

if TYPE_CHECKING:
    from tl_continuous.features.counting import CountFeatures
    from tl_continuous.features.lines import LinesOfThoughtFeatures
    from tl_continuous.features.quality import SAEQuality

__all__ = [
    "ANALYSIS",
    "SECTION_TITLE",
    "FeatureReadings",
    "add_arguments",
    "compute_readings",
    "features_available",
    "render_markdown",
    "run",
    "section",
]

ANALYSIS = "guide_features.md"
"""The hand-written companion of the generated file, in the same folder."""

SECTION_TITLE = "SAE features (SAELens): both papers read in features"
CONTROL_LABEL = "random init (seed 0)"


def features_available() -> bool:
    """Whether SAELens is installed and the bundled SAE is there (the report's default)."""
    import importlib.util

    from tl_continuous.features.sae import CHECKPOINT_DIR

    return (
        importlib.util.find_spec("sae_lens") is not None
        and (CHECKPOINT_DIR / "sae_weights.safetensors").is_file()
    )


@dataclass
class FeatureReadings:
    """The readings of one SAE and its control, in the same order in every list.

    Attributes:
        qualities: held-out quality of each SAE (may be empty when not recorded).
        counts: the counting prompt's features for each SAE.
        lines: the ensemble's pilots in each SAE's features.
        sae: the trained SAE's architecture, size and hook (JSON-safe).
    """

    qualities: list[SAEQuality]
    counts: list[CountFeatures]
    lines: list[LinesOfThoughtFeatures]
    sae: dict[str, Any] = field(default_factory=dict)

    def numbers(self) -> dict[str, Any]:
        """Every reading's summary, JSON-safe."""
        return {
            "sae": dict(self.sae),
            "quality": [q.summary() for q in self.qualities],
            "counting": [c.summary() for c in self.counts],
            "lines": [x.summary() for x in self.lines],
        }


def compute_readings(
    model: Any,
    lot: Any,
    bases: Any,
    *,
    sae: Any | None = None,
    qualities: Sequence[SAEQuality] | None = None,
    values: Sequence[float] | None = None,
    counts: Sequence[int] = (1, 2, 3, 4, 5, 6),
    word: str = "apple",
    n: int = 4,
    seed: int = 0,
) -> FeatureReadings:
    """The SAE's and its control's readings of the counting sweep and of an ensemble.

    Args:
        model: the model the SAE reads, with a tokenizer (either backend).
        lot: an ensemble of this model reading the SAE's hook (every block's ``resid_post``).
        bases: its bases.
        sae: the SAE (default: the bundled one, :func:`~tl_continuous.features.sae.load_sae`).
        qualities: its held-out quality and its control's (default: the bundled SAE's
            ``training.json``; none for another SAE).
        values: durations ``c`` of the repetitions (default ``linspace(0.1, 1, 37)``).
        counts: plain repetition counts.
        word, n: the counting prompt.
        seed: the control's initialisation seed.

    Raises:
        ValueError: the SAE was trained on another model (``cfg.metadata.model_name``) or
            reads vectors of another size than the model's ``d_model``.
    """
    from tl_continuous.features.counting import CountFeatures, count_residuals
    from tl_continuous.features.lines import LinesOfThoughtFeatures
    from tl_continuous.features.quality import SAEQuality
    from tl_continuous.features.sae import (
        CHECKPOINT_DIR,
        load_sae,
        random_sae_like,
        sae_hook_name,
    )
    from tl_continuous.features.train import read_record

    bundled = sae is None
    sae = load_sae() if sae is None else sae
    trained_on = getattr(sae.cfg.metadata, "model_name", None)
    if trained_on is not None and trained_on != model.cfg.model_name:
        raise ValueError(
            f"sae was trained on {trained_on!r}, not on the model given ({model.cfg.model_name!r})"
        )
    if int(sae.cfg.d_in) != int(model.cfg.d_model):
        raise ValueError(
            f"sae reads d_in={sae.cfg.d_in}, the model has d_model={model.cfg.d_model}"
        )
    if qualities is None:
        recorded = read_record(CHECKPOINT_DIR)["quality"] if bundled else []
        keep = {f.name for f in fields(SAEQuality)}
        qualities = [
            SAEQuality.from_dict({k: v for k, v in q.items() if k in keep}) for q in recorded
        ]
    control = random_sae_like(sae, seed=seed)
    labels = ("trained", f"random init (seed {seed})")
    residuals = count_residuals(
        model, sae_hook_name(sae), word=word, n=n, values=values, counts=counts
    )
    return FeatureReadings(
        sae={
            "architecture": str(sae.cfg.architecture()),
            "d_sae": int(sae.cfg.d_sae),
            "k": int(getattr(sae.cfg, "k", 0)),
            "hook_name": sae_hook_name(sae),
        },
        qualities=list(qualities),
        counts=[
            CountFeatures.from_residuals(residuals, s, label=label)
            for s, label in zip((sae, control), labels, strict=True)
        ],
        lines=[
            LinesOfThoughtFeatures.from_ensemble(lot, bases, s, label=label)
            for s, label in zip((sae, control), labels, strict=True)
        ],
    )


def section(readings: FeatureReadings, fig_html: Callable[[Any], str]) -> tuple[str, str, str]:
    """The report's section: ``(title, html body, note)``; ``fig_html`` turns a plotly
    figure into HTML (the report inlines plotly.js once)."""
    from tl_continuous.views.features import (
        count_features_figure,
        lines_features_figure,
        nearest_count_figure,
        quality_figure,
        tracked_features_figure,
    )

    parts = []
    if readings.qualities:
        parts.append(fig_html(quality_figure(readings.qualities)))
    parts += [
        fig_html(count_features_figure(readings.counts)),
        fig_html(nearest_count_figure(readings.counts)),
        fig_html(lines_features_figure(readings.lines)),
        fig_html(tracked_features_figure(readings.lines[0])),
    ]
    trained = readings.counts[0]
    lines = readings.lines[0]
    facts = (
        f"{len(trained.count_tracking())} of the trained SAE's features track the plain count "
        f"(|r| ≥ 0.9), against {len(readings.counts[-1].count_tracking())} of the control's. "
    )
    quality = (
        "Quality: held-out chunks of the default corpus, recorded by `tl-continuous train-sae`. "
        if readings.qualities
        else ""
    )
    note = (
        f"A {readings.sae.get('architecture', '')} SAE (SAELens) on {lines.hook_name}, beside "
        f"the same architecture at its random initialisation. {quality}Counting: the "
        "repetitions at duration c, features read at the last token. Lines of thought: the SAE "
        "applied at its own layer, and (outside its training distribution) at the others. " + facts
    )
    body = "\n".join(f"<div>{p}</div>" for p in parts)
    return SECTION_TITLE, body, note


# ------------------------------------------------------------------------------ program
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The program's options (``--help`` lists them)."""
    add_backend_argument(p)
    p.add_argument("--sae", default=None, help="an SAE folder (default: the bundled one)")
    p.add_argument("--n", type=int, default=600, help="pseudo-sentences of the ensemble")
    p.add_argument("--n-tokens", type=int, default=50)
    p.add_argument("--seed", type=int, default=0, help="corpus sample and control seed")
    p.add_argument("--steps", type=int, default=37, help="values of c in linspace(0.1, 1)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--out", default="docs/results_features.md")
    p.add_argument(
        "--render-only",
        action="store_true",
        help="only rewrite the markdown from the JSON beside --out (no model, no computation)",
    )
    p.add_argument("--no-progress", action="store_true")


def _f(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _runs(values: list[float], nearest: list[int]) -> str:
    """``c in [a, b]: m`` for each run of equal nearest counts."""
    out, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or nearest[i] != nearest[start]:
            out.append(f"{values[start]:.2f}–{values[i - 1]:.2f}: {nearest[start]}")
            start = i
    return "; ".join(out)


def render_markdown(results: dict[str, Any], command: str) -> str:
    """The results table as markdown."""
    r = results
    q = r["quality"]
    lines = [
        "# SAE features: results",
        "",
        f"Model `{r['model']}` ({r['backend']}), SAE `{r['sae']['architecture']}` with "
        f"{r['sae']['d_sae']} features (k = {r['sae']['k']}) on `{r['sae']['hook_name']}`, "
        f"beside the same architecture at its random initialisation (seed {r['seed']}). "
        f"Ensemble: {r['n_trajectories']} pseudo-sentences of {r['n_tokens']} tokens of the "
        "default corpus. Counting prompt: four repetitions of 'apple' at duration c, "
        f"{r['steps']} values of c in [0.1, 1]; plain counts 1..6.",
        "",
        "Reproduce:",
        "",
        "```",
        command,
        "```",
        "",
        "## Quality (held-out activations, recorded by `tl-continuous train-sae`)",
        "",
        "| | " + " | ".join(x["label"] for x in q) + " |",
        "|---|" + "---|" * len(q),
        "| explained variance | " + " | ".join(_f(x["explained_variance"]) for x in q) + " |",
        "| L0 | " + " | ".join(f"{x['l0']:.1f}" for x in q) + " |",
        "| dead features | "
        + " | ".join(f"{x['dead']} of {x['d_sae']} ({100 * x['dead_fraction']:.1f}%)" for x in q)
        + " |",
        "| held-out tokens | " + " | ".join(str(x["n_tokens"]) for x in q) + " |",
        "| next-token loss: clean / SAE / zeroed | "
        + " | ".join(f"{_f(x['ce_clean'])} / {_f(x['ce_sae'])} / {_f(x['ce_zero'])}" for x in q)
        + " |",
        "| loss recovered | " + " | ".join(_f(x["loss_recovered"]) for x in q) + " |",
        "",
        "## Counting: the features that change most along c (last token)",
        "",
    ]
    for c in r["counting"]:
        lines += [
            f"### {c['label']}",
            "",
            f"Features active at the last token for some c: {c['active_features_last']}; "
            f"tracking the plain count (|r| ≥ 0.9, active at some count): "
            f"{len(c['count_tracking'])}; of the top {len(c['top_varying'])} along c, "
            f"{c['top_varying_tracking_count']} track the count.",
            "",
            "| feature | total variation | r with c | r with count | act at c = 0.1 | act at "
            "c = 1 | tracks count |",
            "|---|---|---|---|---|---|---|",
        ]
        for f in c["top_varying"]:
            lines.append(
                f"| {f['feature']} | {_f(f['variation'], 2)} | {_f(f['corr_c'], 2)} | "
                f"{_f(f['corr_count'], 2)} | {_f(f['act_c_min'], 2)} | {_f(f['act_c_max'], 2)} | "
                f"{'yes' if f['tracks_count'] else 'no'} |"
            )
        lines.append("")
    values = r["values"]
    residual = _runs(values, r["counting"][0]["residual_nearest_count"])
    lines += [
        "### Nearest plain count along c",
        "",
        "For each c, the plain count whose last-token reading is nearest (Euclidean).",
        "",
        "| reading | c range: nearest count |",
        "|---|---|",
        f"| residual stream (no SAE) | {residual} |",
    ]
    for c in r["counting"]:
        lines.append(f"| {c['label']} features | {_runs(values, c['nearest_count'])} |")
    lines += ["", "## Lines of thought in features", ""]
    head = r["lines"][0]
    t_star = head["sae_layer_index"]
    lines += [
        f"The SAE reads layer t = {t_star + 1}. Explained variance of the pilots per layer "
        "(in distribution at t = " + str(t_star + 1) + " only):",
        "",
        "| t | " + " | ".join(x["label"] for x in r["lines"]) + " |",
        "|---|" + "---|" * len(r["lines"]),
    ]
    for t in range(len(head["explained_variance"])):
        row = " | ".join(_f(x["explained_variance"][t]) for x in r["lines"])
        lines.append(f"| {t + 1} | {row} |")
    lines += [
        "",
        "Best |cos| of the SAE layer's top bases directions with a decoder direction:",
        "",
        "| direction | "
        + " | ".join(f"{x['label']} (feature, abs cos)" for x in r["lines"])
        + " |",
        "|---|" + "---|" * len(r["lines"]),
    ]
    for i in range(len(head["top_directions_at_sae_layer"])):
        cells = []
        for x in r["lines"]:
            d = x["top_directions_at_sae_layer"][i]
            cells.append(f"{d['feature']}, {d['abs_cos']:.3f}")
        lines.append(f"| u{i + 1} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Share of a pilot's active features that stay active when the pilot is truncated to "
        "its layer's top K directions:",
        "",
        "| K | " + " | ".join(x["label"] for x in r["lines"]) + " |",
        "|---|" + "---|" * len(r["lines"]),
    ]
    for k in head["kept"]:
        lines.append(f"| {k} | " + " | ".join(_f(x["kept"][k]) for x in r["lines"]) + " |")
    lines += [
        "",
        f"Timing: {r['timing']['ensemble_s']:.0f} s for the ensemble, "
        f"{r['timing']['features_s']:.0f} s for the feature readings.",
        "",
        f"What these numbers mean, and what they do not: [the SAE features guide]({ANALYSIS}).",
        "",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace, command: str) -> int:
    """Compute and write the table (``command``: the line that reproduces it)."""
    out = start_report(args, command, render_markdown)
    if out is None:
        return 0
    import torch

    from tl_continuous.features.sae import load_sae
    from tl_continuous.lines_of_thought.bases import TrajectoryBases
    from tl_continuous.lines_of_thought.corpus import pseudo_sentences
    from tl_continuous.lines_of_thought.ensemble import LinesOfThought
    from tl_continuous.models import load_model

    model = load_model("smollm2-135m", backend=args.backend)
    sae = None if args.sae is None else load_sae(args.sae)
    t0 = time.perf_counter()
    corpus = pseudo_sentences(model, n_tokens=args.n_tokens, limit=args.n, seed=args.seed)
    lot = LinesOfThought.collect(model, corpus, progress=not args.no_progress)
    bases = TrajectoryBases.from_ensemble(lot, realign=True)
    t1 = time.perf_counter()
    readings = compute_readings(
        model,
        lot,
        bases,
        sae=sae,
        values=torch.linspace(0.1, 1.0, args.steps).tolist(),
        seed=args.seed,
    )
    t2 = time.perf_counter()
    results = {
        "model": str(model.cfg.model_name),
        "backend": type(model).__name__,
        "seed": args.seed,
        "n_trajectories": lot.n_trajectories,
        "n_tokens": args.n_tokens,
        "steps": args.steps,
        "values": readings.counts[0].values.tolist(),
        **readings.numbers(),
        "timing": {"ensemble_s": t1 - t0, "features_s": t2 - t1},
    }
    write_report(Path(out), results, render_markdown(results, command))
    for c in readings.counts:
        print(f"{c.label}: {len(c.count_tracking())} count-tracking features")
    return 0
