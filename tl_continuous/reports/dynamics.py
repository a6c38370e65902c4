"""``tl-continuous report dynamics``: the dynamics results table.

Variance law, noise statistics, predicted-vs-true comparisons and controls::

    tl-continuous report dynamics                   # SmolLM2, default corpus
    tl-continuous report dynamics --render-only     # markdown from the JSON beside --out

It collects (resumably, into shard folders under the cache directory) the pilots of ``--n``
pseudo-sentences of the default corpus, plus ``--n-control`` trajectories for each control
(:func:`~tl_continuous.reports.dynamics_results.build_results`), then writes
``docs/results_dynamics.md`` and the numbers to a JSON file beside it. The main ensemble's
shard folder is the one ``tl-continuous report lines-of-thought`` and ``tl-continuous collect``
use (:mod:`tl_continuous.reports.settings`), so the reports share one collection. The markdown
is generated whole; analysis written by hand lives in ``docs/analysis_dynamics.md``.

Importing this module is cheap (``tl-continuous --help`` builds its options); the computation
imports torch when it runs.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from tl_continuous.reports.settings import (
    add_output_arguments,
    add_report_arguments,
    default_sources,
    shard_folder,
    shard_root,
    shard_stem,
    start_report,
    write_report,
)

__all__ = ["ANALYSIS", "add_arguments", "render_classifier_check", "render_markdown", "run"]

ANALYSIS = "analysis_dynamics.md"
"""The hand-written companion of the generated file, in the same folder."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The program's options (``--help`` lists them)."""
    add_report_arguments(
        p,
        n_help="pseudo-sentences (main ensemble)",
        more=[("--n-control", {"type": int, "default": 256, "help": "trajectories per control"})],
    )
    p.add_argument(
        "--fit-layers",
        type=int,
        nargs=2,
        default=None,
        metavar=("START", "STOP"),
        help="layer indices [start, stop) of the fit (default: the middle two thirds)",
    )
    p.add_argument("--sources", type=int, nargs="*", default=None, help="source layer indices")
    p.add_argument("--taus", type=int, nargs="*", default=[1, 10])
    p.add_argument("--k", type=int, default=10, help="top singular directions for distances")
    p.add_argument("--dt", type=float, default=0.1)
    p.add_argument("--skip-controls", action="store_true")
    p.add_argument(
        "--permutations",
        type=int,
        default=19,
        help="label permutations of the classifier null in the comparisons (0: none)",
    )
    p.add_argument(
        "--classifier-check",
        default=None,
        metavar="JSON",
        help="only collect the main ensemble, run extrapolation_classifier_check on it, print "
        "its table and write its rows to this JSON file (the report is not written)",
    )
    p.add_argument(
        "--shard-dir", default=None, help="root of the shard folders (default: in the cache)"
    )
    add_output_arguments(p, "docs/results_dynamics.md")


def render_classifier_check(rows: list[dict[str, Any]], times: list[float]) -> str:
    """Markdown table of :func:`extrapolation_classifier_check` rows."""
    lines = [
        "| t | tau | bases | n | accuracy | null (SD) | p (separation) | p (below null) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {times[r['t']]:g} | {r['tau']} | {r['bases']} | {r['n']} | {r['accuracy']:.3f} | "
            f"{r['null_accuracy']:.3f} ({r['null_sd']:.3f}) | {r['p_value']:.2g} | "
            f"{r['p_below']:.2g} |"
        )
    return "\n".join(lines)


def _f(x: float, digits: int = 3) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def _kurtosis_note(r: dict[str, Any]) -> str:
    convention = r.get("kurtosis_convention")
    if convention is None:
        return (
            "Excess kurtosis: the biased (population) estimate m4 / m2^2 - 3 (results written "
            "before the bias-corrected convention; convert with `python -m "
            "tl_continuous.reports.dynamics_results --bias-correct-kurtosis JSON` or "
            "regenerate)."
        )
    note = f"Excess kurtosis: {convention}."
    if r.get("kurtosis_converted"):
        note += (
            " The run stored the biased g2; its values were converted exactly "
            "(G2 = ((n + 1) g2 + 6)(n - 1) / ((n - 2)(n - 3)), n = the ensemble's N) by "
            "`python -m tl_continuous.reports.dynamics_results --bias-correct-kurtosis "
            "JSON`, which recomputes the summaries and flags from the converted pairs."
        )
    return note


def _reflection_note(r: dict[str, Any], times: list[float]) -> str:
    lang = r.get("langevin")
    if lang is None:
        return (
            "Reflected segments of the Langevin model (det(U_t^T U_{t+1}) = -1): not recorded "
            "by this run, which predates their explicit handling (the model then held the "
            "reflected direction fixed, so the drift missed the extrapolation on such a "
            "segment); regenerate with the command above."
        )
    where = ", ".join(
        f"t = {times[i]:g} -> {times[i + 1]:g} (column {k})"
        for i, k in zip(lang["reflected"], lang["reflected_columns"], strict=True)
    )
    return (
        "Reflected segments of the Langevin model (det(U_t^T U_{t+1}) = -1; the state is "
        "reflected along the least aligned column at the segment's start, so the noise-free "
        f"drift ends on the linear extrapolation): {where or 'none'}."
    )


def render_markdown(r: dict[str, Any], command: str) -> str:
    """The results table as markdown."""
    main = r["ensembles"][0]
    fit = main["summary"]["fit"]
    lo, hi = fit["layers"]
    times = main["times"]
    nulls = any(c.get("null_accuracy") is not None for c in r["comparisons"])
    with_null = " (null, p)" if nulls else ""  # runs without --permutations have no null
    lines = [
        "# Lines of thought: dynamics results",
        "",
        f"Model `{r['model']}` (L = {r['n_layers']} blocks, D = {r['d_model']}); corpus "
        f"`{r['corpus']['source']}` (sha256 `{r['corpus']['text_sha256'][:16]}...`), "
        f"{r['n']} pseudo-sentences of N_k = {r['n_tokens']} tokens (seed {r['seed']}). "
        "Trajectories: `blocks.{i}.hook_resid_post` of the last token, layer time t = i + 1 "
        "(embedding and post-final-norm residual excluded). Bases: uncentred SVD per layer, "
        "float64, greedy realignment. All fits use the natural logarithm.",
        "",
        "Reproduce (writes this file and the JSON beside it):",
        "",
        "```",
        command,
        "```",
        "",
        "## Variance law var(dx) = alpha exp(lambda (t + tau))",
        "",
        f"Least squares on ln var (variance per coordinate of the extrapolation residual) "
        f"against t + tau, over the {fit['n_points']} pairs with both ends in layers "
        f"t = {times[lo]:g}..{times[hi - 1]:g}; {100 * fit['confidence']:.0f}% intervals "
        "(OLS; the pairs share trajectories, so read them as lower bounds).",
        "",
        "| ensemble | N | alpha [CI] | ln alpha | lambda [CI] | R^2 | eta^2(t+tau) | "
        "eta^2(t) | eta^2(tau) | excess kurtosis (mid) | Gaussianity rejected (mid) | "
        "isotropy (mid) / null |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in r["ensembles"]:
        s, f = e["summary"], e["summary"]["fit"]
        a_lo, a_hi = math.exp(f["log_alpha_ci"][0]), math.exp(f["log_alpha_ci"][1])
        lines.append(
            f"| {s['name']} | {e['n']} | {_f(math.exp(f['log_alpha']))} [{_f(a_lo)}, {_f(a_hi)}] "
            f"| {_f(f['log_alpha'])} | {_f(f['lam'])} [{_f(f['lam_ci'][0])}, "
            f"{_f(f['lam_ci'][1])}] | {_f(f['r2'])} | {_f(f['eta2_sum'])} | {_f(f['eta2_t'])} "
            f"| {_f(f['eta2_tau'])} | {_f(s['kurtosis'])} | {_f(s['normal_reject'])} | "
            f"{_f(s['isotropy'])} / {_f(e['isotropy_null'])} |"
        )
    lines += [
        "",
        "eta^2(x): share of the variation of ln var explained by x alone (one-way ANOVA over "
        "the pairs in the fit range); eta^2(t+tau) near 1 with small eta^2(t), eta^2(tau) means "
        "the variance depends on t + tau alone. Gaussianity: fraction of coordinates whose "
        "D'Agostino-Pearson test rejects at 5% (about 0.05 if Gaussian). Isotropy: participation "
        "ratio of the residual covariance over D; the null is an isotropic Gaussian sample of "
        "the same size.",
        "",
        _kurtosis_note(r),
        "",
        "## Predicted vs true ensembles",
        "",
        f"Classifier: held-out accuracy (5-fold) of an L2 logistic regression on all D "
        f"coordinates, 0.5 = indistinguishable for independent samples; null = its mean over "
        "within-pair label swaps on the same folds, p = permutation p-value of a separation "
        "(an accuracy far below the null means the ensembles are not independent samples, "
        "e.g. an extrapolation through bases fitted on these pilots, and must not be read). "
        f"Distances in the top {r['k']} singular "
        "directions of the target layer; floor = the same distance between two random halves "
        "of the true ensemble; scale = root of its total variance there. `extrapolation + "
        "noise` adds isotropic Gaussian noise of the fitted variance; the Langevin simulation "
        f"is Euler-Maruyama with dt = {r['dt']} from the true pilots at layer t.",
        "",
        _reflection_note(r, times),
        "",
        f"| t | tau | predictor | accuracy{with_null} | Gaussian W2 (floor) | sliced W2 (floor) "
        "| scale |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in r["comparisons"]:
        null = (
            f" ({c['null_accuracy']:.3f}, {c['p_value']:.2g})"
            if c.get("null_accuracy") is not None
            else ""
        )
        lines.append(
            f"| {times[c['t']]:g} | {c['tau']} | {c['kind']} | {c['accuracy']:.3f}{null} | "
            f"{_f(c['gaussian_w2'])} ({_f(c['floor_gaussian_w2'])}) | {_f(c['sliced_w2'])} "
            f"({_f(c['floor_sliced_w2'])}) | {_f(c['scale'])} |"
        )
    lines += [
        "",
        "Accuracies of extrapolations through these pilots' own bases fall below 0.5 by "
        f"construction: read [{ANALYSIS}]({ANALYSIS}) before reading them.",
    ]
    if r.get("moments"):
        lines += [
            "",
            "Fokker-Planck moments (dm/dt = A m, dC/dt = A C + C A^T + D(t) I, Runge-Kutta 4) "
            "started from the mean and covariance of the true pilots at layer t, against the "
            "Euler-Maruyama simulation started from the pilots themselves, and against the true "
            f"ensemble: relative errors in the top {r['k']} directions (|dm|/|m|, "
            "|dC|_F/|C|_F).",
            "",
            "| t | tau | simulation: mean | simulation: cov | true: mean | true: cov |",
            "|---|---|---|---|---|---|",
        ]
        for m in r["moments"]:
            lines.append(
                f"| {times[m['t']]:g} | {m['tau']} | {_f(m['sim_mean'])} | {_f(m['sim_cov'])} "
                f"| {_f(m['true_mean'])} | {_f(m['true_cov'])} |"
            )
    lines += ["", "## Controls", ""]
    if len(r["ensembles"]) > 1:
        lines += [
            "Same fit range and statistics as above (first table). Step ratio: mean "
            "|x(t+1) - x(t)| over the second half of the transitions divided by the first half; "
            "spread ratio: root total variance at the last layer over the first.",
            "",
            "| ensemble | N | lambda | R^2 | excess kurtosis (mid) | step ratio | spread ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        for e in r["ensembles"]:
            s = e["summary"]
            lines.append(
                f"| {s['name']} | {e['n']} | {_f(s['fit']['lam'])} | {_f(s['fit']['r2'])} | "
                f"{_f(s['kurtosis'])} | {_f(e['step_ratio'])} | "
                f"{_f(s['spread'][-1] / s['spread'][0])} |"
            )
        sep = r.get("gibberish_separability")
        if sep:
            lines += [
                "",
                "Gibberish vs language (the model's pilots, same N per class): held-out "
                "accuracy of a linear classifier per layer t = 1..L:",
                "",
                "`" + " ".join(f"{v:.2f}" for v in sep) + "`",
                f"(min {min(sep):.3f}, median {sorted(sep)[len(sep) // 2]:.3f}).",
            ]
    else:
        lines.append("Controls were skipped (`--skip-controls`).")
    lines += [
        "",
        "## Flagged layers",
        "",
        "Per layer: mean |excess kurtosis| of the residuals arriving at it (tau = 1) and "
        "|ln var - fit| in fit residual SDs; flagged when the larger robust z-score "
        "(median/MAD across layers, MAD floored at the sampling noise) exceeds 3.5.",
        "",
        "| ensemble | flagged layers (t) | top scores (t: score) |",
        "|---|---|---|",
    ]
    for e in r["ensembles"]:
        d = e["diag"]
        flagged = ", ".join(f"{d['times'][i]:g}" for i in d["flagged"]) or "none"
        order = sorted(range(len(d["score"])), key=lambda i: -(d["score"][i] or -1e9))[:4]
        top = ", ".join(f"{d['times'][i]:g}: {d['score'][i]:.1f}" for i in order)
        lines.append(f"| {e['summary']['name']} | {flagged} | {top} |")
    lines += [
        "",
        f"Wall time: {r['timing']['total_s'] / 60:.1f} min on a shared 2-core CPU.",
        "",
        "## Analysis",
        "",
        f"Notes on this run and further checks, written by hand: [{ANALYSIS}]({ANALYSIS}).",
        "",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace, command: str) -> int:
    """Collect, analyse and write the table (``command``: the line that reproduces it)."""
    out = start_report(args, command, render_markdown)
    if out is None:
        return 0
    from tl_continuous.lines_of_thought.corpus import pseudo_sentences
    from tl_continuous.models import load_model
    from tl_continuous.reports.dynamics_results import build_results

    model = load_model(args.model, backend=args.backend)
    corpus = pseudo_sentences(
        model, path=args.corpus, n_tokens=args.n_tokens, limit=args.n, seed=args.seed
    )
    root = shard_root(args.shard_dir)
    stem = shard_stem(args.model, args.corpus, args.n_tokens)
    if args.classifier_check:
        return _classifier_check(
            model, corpus, shard_folder(root, stem, len(corpus), args.seed), args
        )
    results = build_results(
        model,
        corpus,
        model_name=args.model,
        shard_root=root,
        stem=stem,
        n_control=args.n_control,
        fit_layers=tuple(args.fit_layers) if args.fit_layers else None,
        sources=args.sources,
        taus=tuple(args.taus),
        k=args.k,
        dt=args.dt,
        skip_controls=args.skip_controls,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.no_progress,
        n_permutations=args.permutations,
    )
    write_report(out, results, render_markdown(results, command))
    return 0


def _classifier_check(model: Any, corpus: Any, folder: Path, args: argparse.Namespace) -> int:
    """``--classifier-check JSON``: collect the main ensemble, print and write the check."""
    from tl_continuous._io import write_text
    from tl_continuous.lines_of_thought.dynamics import times_from_layer_names
    from tl_continuous.reports.dynamics_results import collect, extrapolation_classifier_check

    t_start = time.perf_counter()
    lot = collect(model, corpus, folder, args.batch_size, not args.no_progress)
    L = lot.n_layers
    chosen = args.sources if args.sources is not None else default_sources(L)
    rows = extrapolation_classifier_check(
        lot,
        [t for t in chosen if 0 <= t < L - 1],
        list(args.taus),
        n_permutations=args.permutations,
        seed=args.seed,
    )
    times = times_from_layer_names(list(lot.layer_names), int(model.cfg.n_layers)).tolist()
    print(render_classifier_check(rows, times))
    check = {"n": lot.n_trajectories, "times": times, "rows": rows}
    check["total_s"] = time.perf_counter() - t_start
    write_text(args.classifier_check, json.dumps(check, indent=1))
    print(f"wrote {args.classifier_check} ({check['total_s']:.0f} s)")
    return 0
