"""Reproduce the dynamics results table (variance law, noise statistics, comparisons, controls).

Run from a checkout::

    python -m tl_continuous.lines_of_thought.dynamics_report            # SmolLM2, default corpus

It collects (resumably, into shard folders under the cache directory) the pilots of
``--n`` pseudo-sentences of the default corpus, plus ``--n-control`` trajectories for each
control (gibberish input, the untrained model, the model with its second half re-initialised),
then writes ``docs/results_dynamics.md`` and the numbers to a JSON file beside it. The main
ensemble's shard folder is the one :mod:`tl_continuous.lines_of_thought.report` uses, so the two
reports share one collection.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from tl_continuous.lines_of_thought.bases import TrajectoryBases
from tl_continuous.lines_of_thought.collect import collect_shards
from tl_continuous.lines_of_thought.compare import EnsembleComparison, classifier_test
from tl_continuous.lines_of_thought.controls import (
    DynamicsSummary,
    LayerDiagnostics,
    layer_separability,
    reinitialised_model,
    untrained_model,
)
from tl_continuous.lines_of_thought.corpus import gibberish, pseudo_sentences
from tl_continuous.lines_of_thought.dynamics import (
    ResidualStatistics,
    VarianceLawFit,
    times_from_layer_names,
)
from tl_continuous.lines_of_thought.ensemble import LinesOfThought
from tl_continuous.lines_of_thought.langevin import LangevinModel

__all__ = [
    "analyse",
    "build_parser",
    "build_results",
    "extrapolation_classifier_check",
    "main",
    "render_markdown",
]


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (``--help`` lists them)."""
    p = argparse.ArgumentParser(prog="python -m tl_continuous.lines_of_thought.dynamics_report")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--corpus", default=None, help="a text file (default: pydoc_data.topics)")
    p.add_argument("--n", type=int, default=2000, help="pseudo-sentences (main ensemble)")
    p.add_argument("--n-control", type=int, default=256, help="trajectories per control")
    p.add_argument("--n-tokens", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
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
    p.add_argument("--shard-dir", default=None, help="root of the shard folders")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--out", default="docs/results_dynamics.md")
    p.add_argument("--no-progress", action="store_true")
    return p


def _collect(model: Any, tokens: Any, folder: Path, batch_size: int, progress: bool) -> Any:
    collect_shards(model, tokens, folder, batch_size=batch_size, progress=progress)
    return LinesOfThought.from_shards(folder)


def analyse(
    lot: LinesOfThought,
    n_blocks: int,
    *,
    name: str,
    fit_layers: tuple[int, int],
    progress: bool = True,
) -> dict[str, Any]:
    """Bases, residual statistics, fit, summary and diagnostics of one ensemble."""
    bases = TrajectoryBases.from_ensemble(lot)
    times = times_from_layer_names(list(lot.layer_names), n_blocks)
    stats = ResidualStatistics.from_tensors(
        lot.trajectories, bases.U, bases.S, times=times, progress=progress
    )
    summary = DynamicsSummary.from_statistics(name, lot.trajectories, stats, layers=fit_layers)
    diag = LayerDiagnostics.from_statistics(stats, summary.fit)
    return {"bases": bases, "stats": stats, "summary": summary, "diag": diag, "times": times}


def _compare_predictions(
    lot: LinesOfThought,
    bases: TrajectoryBases,
    fit: VarianceLawFit,
    times: torch.Tensor,
    sources: list[int],
    taus: list[int],
    k: int,
    dt: float,
    progress: bool,
    n_permutations: int = 0,
) -> list[dict[str, Any]]:
    from tl_continuous.lines_of_thought.dynamics import extrapolate

    x = lot.trajectories.to(torch.float64)
    # a shrinking law (lam < 0) has no diffusion: simulate the drift alone then
    noisy_law = fit.lam > 0
    langevin = LangevinModel.from_tensors(
        bases.U, bases.S, alpha=fit.alpha if noisy_law else 0.0, lam=fit.lam, times=times
    )
    gen = torch.Generator().manual_seed(0)
    rows = []
    for t in sources:
        horizon = max(tau for tau in taus if t + tau < lot.n_layers)
        sim = langevin.simulate(x[:, t], start=t, horizon=horizon, dt=dt, seed=t, progress=progress)
        for tau in taus:
            if t + tau >= lot.n_layers:
                continue
            true = x[:, t + tau]
            basis = bases.U[t + tau][:, :k]
            det = extrapolate(x[:, t], bases.U[t], bases.S[t], bases.U[t + tau], bases.S[t + tau])
            sd = math.sqrt(float(fit.predict(float(times[t + tau]))))
            noisy = det + sd * torch.randn(det.shape, generator=gen, dtype=torch.float64)
            for kind, pred in (("extrapolation", det), ("extrapolation + noise", noisy)):
                cmp = EnsembleComparison.from_tensors(
                    pred, true, basis=basis, n_permutations=n_permutations
                )
                rows.append({"t": t, "tau": tau, "kind": kind, **cmp.to_dict()})
            cmp = EnsembleComparison.from_tensors(
                sim[:, tau], true, basis=basis, n_permutations=n_permutations
            )
            kind = "Langevin simulation" if noisy_law else "Langevin drift only (lambda <= 0)"
            rows.append({"t": t, "tau": tau, "kind": kind, **cmp.to_dict()})
    return rows


def extrapolation_classifier_check(
    lot: LinesOfThought,
    sources: list[int],
    taus: list[int],
    *,
    n_permutations: int = 19,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Classifier test of the noise-free extrapolation against the true pilots, with the
    bases fitted on the compared pilots or on other pilots.

    The pilots are split in two random halves A and B. Rows ``"in-sample (all)"``: bases of
    the whole ensemble, all pilots compared (the setting of the predicted-vs-true table);
    ``"in-sample (B)"``: bases of B, B compared; ``"held-out bases (A -> B)"``: bases of A, B
    compared. In-sample bases match the two ensembles' full-sample means by construction,
    which drives the held-out accuracy below 0.5 (see :func:`~tl_continuous.lines_of_thought.
    compare.classifier_accuracy`); bases from A cannot do that for B.
    """
    from tl_continuous.lines_of_thought.dynamics import extrapolate

    x = lot.trajectories.to(torch.float64)
    n = lot.n_trajectories
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    part_a, part_b = perm[: n // 2], perm[n // 2 : 2 * (n // 2)]
    bases_all = TrajectoryBases.from_ensemble(lot)
    bases_a = TrajectoryBases.from_ensemble(lot.subset(part_a))
    bases_b = TrajectoryBases.from_ensemble(lot.subset(part_b))
    settings = (
        ("in-sample (all)", bases_all, torch.arange(n)),
        ("in-sample (B)", bases_b, part_b),
        ("held-out bases (A -> B)", bases_a, part_b),
    )
    rows = []
    for t in sources:
        for tau in taus:
            if t + tau >= lot.n_layers:
                continue
            for name, bases, rows_used in settings:
                pred = extrapolate(
                    x[rows_used, t], bases.U[t], bases.S[t], bases.U[t + tau], bases.S[t + tau]
                )
                test = classifier_test(
                    pred, x[rows_used, t + tau], seed=seed, n_permutations=n_permutations
                )
                rows.append(
                    {"t": t, "tau": tau, "bases": name, "n": len(rows_used), **asdict(test)}
                )
    return rows


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


def _moment_check(
    lot: LinesOfThought,
    langevin: LangevinModel,
    basis_of: Any,
    t: int,
    horizon: int,
    k: int,
    dt: float,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Fokker-Planck moments from the pilots' mean and covariance at ``t`` against the
    simulated and the true ensembles (relative errors in the top-``k`` directions).

    The moment equations hold for any initial distribution under a linear drift and additive
    noise, so the simulation started from the true pilots must match them up to sampling
    and discretisation error.
    """
    x = lot.trajectories.to(torch.float64)
    horizon = min(horizon, lot.n_layers - 1 - t)
    means, covs = langevin.moments(
        x[:, t].mean(0), torch.cov(x[:, t].T), start=t, horizon=horizon, dt=dt
    )
    sim = langevin.simulate(x[:, t], start=t, horizon=horizon, dt=dt, seed=seed)
    rows = []
    for h in range(1, horizon + 1):
        b = basis_of(t + h)[:, :k]
        m_ode, c_ode = means[h] @ b, b.T @ covs[h] @ b

        def err(
            pts: torch.Tensor,
            b: torch.Tensor = b,
            m_ode: torch.Tensor = m_ode,
            c_ode: torch.Tensor = c_ode,
        ) -> tuple[float, float]:
            p = pts @ b
            dm = float((p.mean(0) - m_ode).norm() / m_ode.norm())
            dc = float((torch.cov(p.T) - c_ode).norm() / c_ode.norm())
            return dm, dc

        sm, sc = err(sim[:, h])
        tm, tc = err(x[:, t + h])
        rows.append(
            {"t": t, "tau": h, "sim_mean": sm, "sim_cov": sc, "true_mean": tm, "true_cov": tc}
        )
    return rows


def _f(x: float, digits: int = 3) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def render_markdown(r: dict[str, Any], command: str) -> str:
    """The results table as markdown."""
    main = r["ensembles"][0]
    fit = main["summary"]["fit"]
    lo, hi = fit["layers"]
    times = main["times"]
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
        "| t | tau | predictor | accuracy (null, p) | Gaussian W2 (floor) | sliced W2 (floor) "
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
    ]
    return "\n".join(lines)


def build_results(
    model: Any,
    corpus: Any,
    *,
    model_name: str,
    shard_root: Path,
    stem: str,
    n_control: int = 256,
    fit_layers: tuple[int, int] | None = None,
    sources: list[int] | None = None,
    taus: tuple[int, ...] = (1, 10),
    k: int = 10,
    dt: float = 0.1,
    skip_controls: bool = False,
    moment_horizon: int = 3,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    n_permutations: int = 0,
) -> dict[str, Any]:
    """Collect every ensemble (resumably, into ``shard_root``) and compute the results
    (``n_permutations``: classifier null of the predicted-vs-true comparisons, 0 for none)."""
    t_start = time.perf_counter()
    n_blocks = int(model.cfg.n_layers)
    n = len(corpus)
    n_c = min(n_control, n)
    n_tokens = int(corpus.tokens.shape[1])
    ensembles: list[tuple[str, Any]] = []
    if not skip_controls:
        control_tokens = corpus.tokens[:n_c]
        gib = gibberish(model, n_c, n_tokens=n_tokens, seed=seed)
        ensembles.append(
            (
                "gibberish",
                _collect(
                    model, gib, shard_root / f"{stem}-gibberish-{n_c}-s{seed}", batch_size, progress
                ),
            )
        )
        fresh = untrained_model(model, seed=seed)
        ensembles.append(
            (
                "untrained",
                _collect(
                    fresh,
                    control_tokens,
                    shard_root / f"{stem}-untrained-{n_c}-s{seed}",
                    batch_size,
                    progress,
                ),
            )
        )
        del fresh
        halves = reinitialised_model(model, seed=seed)
        ensembles.append(
            (
                "second half re-initialised",
                _collect(
                    halves,
                    control_tokens,
                    shard_root / f"{stem}-reinit-half-{n_c}-s{seed}",
                    batch_size,
                    progress,
                ),
            )
        )
        del halves
    lot = _collect(model, corpus, shard_root / f"{stem}-{n}-s{seed}", batch_size, progress)
    ensembles.insert(0, (f"{model_name} (language)", lot))

    L = lot.n_layers
    fit_range = fit_layers if fit_layers is not None else (L // 6, L - L // 6)
    results: dict[str, Any] = {
        "model": model_name,
        "n_layers": n_blocks,
        "d_model": lot.d_model,
        "n": lot.n_trajectories,
        "n_tokens": n_tokens,
        "seed": seed,
        "corpus": corpus.metadata(),
        "k": k,
        "dt": dt,
        "ensembles": [],
    }
    main_analysis: dict[str, Any] = {}
    for name, ens in ensembles:
        if not bool(ens.trajectories.isfinite().all()):
            raise ValueError(f"the {name} ensemble holds non-finite values")
        a = analyse(ens, n_blocks, name=name, fit_layers=fit_range, progress=progress)
        if not main_analysis:
            main_analysis = a
        stats = a["stats"]
        results["ensembles"].append(
            {
                "n": ens.n_trajectories,
                "times": a["times"].tolist(),
                "summary": a["summary"].to_dict(),
                "diag": a["diag"].to_dict(),
                "step_ratio": a["summary"].step_ratio,
                "isotropy_null": stats.isotropy_null,
                "pairs": {
                    key: getattr(stats, key).tolist()
                    for key in (
                        "t",
                        "tau",
                        "variance",
                        "kurtosis",
                        "mean_norm",
                        "isotropy",
                        "cross_correlation",
                        "normal_reject",
                    )
                },
            }
        )
    results["gibberish_separability"] = (
        None
        if skip_controls
        else layer_separability(
            lot.trajectories[:n_c], ensembles[1][1].trajectories, progress=progress
        ).tolist()
    )
    chosen = sources if sources is not None else [L // 3, L // 2 - 3]
    results["comparisons"] = _compare_predictions(
        lot,
        main_analysis["bases"],
        main_analysis["summary"].fit,
        main_analysis["times"],
        [t for t in chosen if 0 <= t < L - 1],
        list(taus),
        k,
        dt,
        progress,
        n_permutations,
    )
    fit = main_analysis["summary"].fit
    bases = main_analysis["bases"]
    langevin = LangevinModel.from_tensors(
        bases.U,
        bases.S,
        alpha=fit.alpha if fit.lam > 0 else 0.0,
        lam=fit.lam,
        times=main_analysis["times"],
    )
    results["moments"] = _moment_check(
        lot, langevin, lambda i: bases.U[i], chosen[0], moment_horizon, k, dt
    )
    results["timing"] = {"total_s": time.perf_counter() - t_start}
    return results


def main(argv: list[str] | None = None) -> int:
    """Collect (resumably), analyse, write the table; returns a process exit code."""
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from tl_continuous.models import cache_root, load_model

    model = load_model(args.model)
    corpus = pseudo_sentences(
        model, path=args.corpus, n_tokens=args.n_tokens, limit=args.n, seed=args.seed
    )
    tag = "pydoc" if args.corpus is None else Path(args.corpus).stem
    shard_root = Path(args.shard_dir) if args.shard_dir else cache_root() / "lot-shards"
    stem = f"{args.model}-{tag}-n{args.n_tokens}"
    if args.classifier_check:
        t_start = time.perf_counter()
        progress = not args.no_progress
        folder = shard_root / f"{stem}-{len(corpus)}-s{args.seed}"
        lot = _collect(model, corpus, folder, args.batch_size, progress)
        L = lot.n_layers
        chosen = args.sources if args.sources is not None else [L // 3, L // 2 - 3]
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
        Path(args.classifier_check).write_text(json.dumps(check, indent=1))
        print(f"wrote {args.classifier_check} ({check['total_s']:.0f} s)")
        return 0
    results = build_results(
        model,
        corpus,
        model_name=args.model,
        shard_root=shard_root,
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
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    given = sys.argv[1:] if argv is None else argv
    command = "python -m tl_continuous.lines_of_thought.dynamics_report " + " ".join(given)
    out.write_text(render_markdown(results, command.strip()))
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
