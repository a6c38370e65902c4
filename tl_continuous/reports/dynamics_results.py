"""The dynamics report's computations: collect every ensemble, fit, compare, check.

:func:`build_results` collects (resumably, into shard folders named by
:mod:`tl_continuous.reports.settings`) the pilots of a corpus and of three controls (gibberish
input, the untrained model, the model with its second half re-initialised) and returns the
numbers that :func:`tl_continuous.reports.dynamics.render_markdown` writes as
``docs/results_dynamics.md``; :func:`extrapolation_classifier_check` is the classifier check of
``tl-continuous report dynamics --classifier-check``.
"""

from __future__ import annotations

import math
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
from tl_continuous.lines_of_thought.corpus import gibberish
from tl_continuous.lines_of_thought.dynamics import ResidualStatistics, VarianceLawFit
from tl_continuous.lines_of_thought.ensemble import LinesOfThought
from tl_continuous.lines_of_thought.langevin import LangevinModel
from tl_continuous.reports.settings import default_sources, fit_range, shard_folder

__all__ = [
    "KURTOSIS_CONVENTION",
    "analyse",
    "bias_correct_kurtosis",
    "build_results",
    "collect",
    "extrapolation_classifier_check",
]

KURTOSIS_CONVENTION = (
    "bias-corrected excess kurtosis (the paper's: MATLAB kurtosis(x, 0) - 3, "
    "scipy.stats.kurtosis(x, bias=False))"
)
"""The convention of every excess kurtosis in the results (``results["kurtosis_convention"]``)."""


def _g2_to_bias_corrected(g2: float, n: int) -> float:
    """``G2 = ((n + 1) g2 + 6) (n - 1) / ((n - 2) (n - 3))`` from the biased ``g2``."""
    return ((n + 1) * g2 + 6.0) * (n - 1) / ((n - 2) * (n - 3))


def bias_correct_kurtosis(results: dict[str, Any], *, atol: float = 1e-9) -> dict[str, Any]:
    """Results written with the biased excess kurtosis, converted to the bias-corrected one.

    A one-off step for results JSON written before :data:`KURTOSIS_CONVENTION` (those have no
    ``"kurtosis_convention"`` key). The bias correction is an exact affine function of the
    biased value at fixed ``n``, and every pair's kurtosis is a mean over coordinates of the
    same ``n`` trajectories, so each stored pair value converts exactly; the ensemble summary
    (mean over the fit range) and the layer diagnostics (mean absolute value, robust
    z-scores, flags) are then recomputed from the converted pairs with the library's own code
    (:class:`~tl_continuous.lines_of_thought.controls.DynamicsSummary`'s average,
    :meth:`~tl_continuous.lines_of_thought.controls.LayerDiagnostics.from_statistics`). Before
    converting, the same recomputation from the *stored* pairs must reproduce the stored
    summary and diagnostics within ``atol``: otherwise the stored numbers do not determine
    the result and a ``ValueError`` is raised. Run it as
    ``python -m tl_continuous.reports.dynamics_results --bias-correct-kurtosis JSON``.

    Raises:
        ValueError: if ``results`` already carry a kurtosis convention, or the check fails.
    """
    import copy

    if "kurtosis_convention" in results:
        raise ValueError(
            f"results already record kurtosis_convention={results['kurtosis_convention']!r}"
        )
    out = copy.deepcopy(results)
    for e in out["ensembles"]:
        n = int(e["n"])
        fit = VarianceLawFit.from_dict(e["summary"]["fit"])
        diag = e["diag"]
        biased = _stats_from_pairs(e, n)
        mean_b, diag_b = _kurtosis_readouts(biased, fit, diag)
        if not (
            math.isclose(mean_b, e["summary"]["kurtosis"], rel_tol=0, abs_tol=atol)
            and _close(diag_b.kurtosis, diag["kurtosis"], atol)
            and _close(diag_b.score, diag["score"], atol)
        ):
            raise ValueError(
                f"the stored pairs of {e['summary']['name']!r} do not reproduce its stored "
                "kurtosis summary and diagnostics; regenerate the results instead"
            )
        e["pairs"]["kurtosis"] = [_g2_to_bias_corrected(g, n) for g in e["pairs"]["kurtosis"]]
        mean_c, diag_c = _kurtosis_readouts(_stats_from_pairs(e, n), fit, diag)
        e["summary"]["kurtosis"] = mean_c
        e["diag"] = diag_c.to_dict()
    out["kurtosis_convention"] = KURTOSIS_CONVENTION
    out["kurtosis_converted"] = (
        "stored biased values converted exactly by "
        "python -m tl_continuous.reports.dynamics_results --bias-correct-kurtosis"
    )
    return out


def _close(a: list[float], b: list[float], atol: float) -> bool:
    return len(a) == len(b) and all(
        (math.isnan(x) and math.isnan(y)) or abs(x - y) <= atol for x, y in zip(a, b, strict=True)
    )


def _stats_from_pairs(e: dict[str, Any], n: int) -> ResidualStatistics:
    """The per-pair statistics a results JSON keeps, as :class:`ResidualStatistics`
    (``coord_variance`` and ``normal_pvalue``, which it does not keep, are placeholders)."""
    pairs = e["pairs"]
    p = len(pairs["t"])
    col: dict[str, Any] = {
        k: torch.tensor(pairs[k], dtype=torch.float64)
        for k in ResidualStatistics._PER_PAIR
        if k in pairs
    }
    return ResidualStatistics(
        t=torch.tensor(pairs["t"], dtype=torch.long),
        tau=torch.tensor(pairs["tau"], dtype=torch.long),
        times=torch.tensor(e["times"], dtype=torch.float64),
        n_samples=n,
        coord_variance=torch.zeros(p, 1, dtype=torch.float64),
        normal_pvalue=torch.full((p,), math.nan, dtype=torch.float64),
        **col,
    )


def _kurtosis_readouts(
    stats: ResidualStatistics, fit: VarianceLawFit, diag: dict[str, Any]
) -> tuple[float, LayerDiagnostics]:
    lo, hi = fit.layers
    inside = stats.select((stats.t >= lo) & (stats.t + stats.tau < hi))
    layer_diag = LayerDiagnostics.from_statistics(
        stats, fit, max_tau=int(diag["max_tau"]), threshold=float(diag["threshold"])
    )
    return float(inside.kurtosis.mean()), layer_diag


def collect(model: Any, tokens: Any, folder: Path, batch_size: int, progress: bool) -> Any:
    """Collect ``tokens`` into ``folder`` (resumably) and return the merged ensemble."""
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
    stats = ResidualStatistics.from_lines(lot, bases, n_blocks=n_blocks, progress=progress)
    times = stats.times
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
                collect(
                    model,
                    gib,
                    shard_folder(shard_root, stem, n_c, seed, "gibberish"),
                    batch_size,
                    progress,
                ),
            )
        )
        fresh = untrained_model(model, seed=seed)
        ensembles.append(
            (
                "untrained",
                collect(
                    fresh,
                    control_tokens,
                    shard_folder(shard_root, stem, n_c, seed, "untrained"),
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
                collect(
                    halves,
                    control_tokens,
                    shard_folder(shard_root, stem, n_c, seed, "reinit-half"),
                    batch_size,
                    progress,
                ),
            )
        )
        del halves
    lot = collect(model, corpus, shard_folder(shard_root, stem, n, seed), batch_size, progress)
    ensembles.insert(0, (f"{model_name} (language)", lot))

    L = lot.n_layers
    layers = fit_layers if fit_layers is not None else fit_range(L)
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
        "kurtosis_convention": KURTOSIS_CONVENTION,
        "ensembles": [],
    }
    main_analysis: dict[str, Any] = {}
    for name, ens in ensembles:
        if not bool(ens.trajectories.isfinite().all()):
            raise ValueError(f"the {name} ensemble holds non-finite values")
        a = analyse(ens, n_blocks, name=name, fit_layers=layers, progress=progress)
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
    chosen = sources if sources is not None else default_sources(L)
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
    results["langevin"] = {
        "reflected": langevin.reflected,
        "reflected_times": [float(main_analysis["times"][i]) for i in langevin.reflected],
        "reflected_columns": [langevin.reflected_columns[i] for i in langevin.reflected],
    }
    results["moments"] = _moment_check(
        lot, langevin, lambda i: bases.U[i], chosen[0], moment_horizon, k, dt
    )
    results["timing"] = {"total_s": time.perf_counter() - t_start}
    return results


def _main(argv: list[str] | None = None) -> int:
    """``python -m tl_continuous.reports.dynamics_results --bias-correct-kurtosis JSON``."""
    import argparse
    import json

    from tl_continuous._io import write_text

    p = argparse.ArgumentParser(description=bias_correct_kurtosis.__doc__)
    p.add_argument("--bias-correct-kurtosis", metavar="JSON", required=True)
    args = p.parse_args(argv)
    path = Path(args.bias_correct_kurtosis)
    results = bias_correct_kurtosis(json.loads(path.read_text()))
    write_text(path, json.dumps(results, indent=1))
    print(f"wrote {path} (kurtosis: {KURTOSIS_CONVENTION})")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
