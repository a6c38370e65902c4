"""The dynamics report runs end to end on a tiny model (the SmolLM2 run writes docs/)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tl_continuous.lines_of_thought.corpus import gibberish
from tl_continuous.reports.dynamics import render_markdown
from tl_continuous.reports.dynamics_results import KURTOSIS_CONVENTION, build_results
from tl_continuous.tiny import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_report_on_a_tiny_model(tmp_path):
    model = tiny_model("rotary", n_layers=6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    corpus = gibberish(model, 48, n_tokens=8, seed=1)
    # the same shard location and sizes for both runs, so that the rerun can find the shards
    same = dict(
        model_name="tiny",
        shard_root=tmp_path,
        stem="tiny",
        n_control=24,
        k=4,
        batch_size=16,
        progress=False,
    )
    results = build_results(model, corpus, taus=(1, 3), dt=0.25, **same)
    assert [e["summary"]["name"] for e in results["ensembles"]] == [
        "tiny (language)",
        "gibberish",
        "untrained",
        "second half re-initialised",
    ]
    assert len(results["gibberish_separability"]) == 6
    kinds = {(c["t"], c["tau"], c["kind"].split(" ")[0]) for c in results["comparisons"]}
    assert (2, 1, "extrapolation") in kinds and (2, 3, "Langevin") in kinds
    assert [m["tau"] for m in results["moments"]] == [1, 2, 3]
    text = render_markdown(json.loads(json.dumps(results)), "python -m x")
    assert "## Variance law" in text and "| tiny (language) | 48 |" in text
    assert "Fokker-Planck moments" in text
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    # numbers against a direct computation from the collected pilots
    from scipy import stats as sps

    from tl_continuous.lines_of_thought.bases import TrajectoryBases
    from tl_continuous.lines_of_thought.dynamics import residuals
    from tl_continuous.lines_of_thought.ensemble import LinesOfThought
    from tl_continuous.lines_of_thought.langevin import LangevinModel
    from tl_continuous.reports.settings import shard_folder

    main = results["ensembles"][0]
    lot = LinesOfThought.from_shards(shard_folder(tmp_path, "tiny", 48, 0))
    bases = TrajectoryBases.from_ensemble(lot)
    j = 7
    t, tau = main["pairs"]["t"][j], main["pairs"]["tau"][j]
    dx = residuals(lot.trajectories, bases.U, bases.S, t, tau).numpy()
    variance = float(np.var(dx, axis=0, ddof=1).mean())
    assert main["pairs"]["variance"][j] == pytest.approx(variance, rel=1e-10)
    kurt = float(np.mean(sps.kurtosis(dx, axis=0, bias=False)))
    assert main["pairs"]["kurtosis"][j] == pytest.approx(kurt, rel=1e-9, abs=1e-12)
    assert results["kurtosis_convention"] == KURTOSIS_CONVENTION
    assert main["times"] == [float(i) for i in range(1, 7)]
    lang = LangevinModel.from_tensors(bases.U, bases.S, alpha=0.0, lam=0.0)
    assert results["langevin"]["reflected"] == lang.reflected
    assert "Reflected segments of the Langevin model" in text
    # a rerun reads the shards instead of collecting again
    again = build_results(model, corpus, taus=(1,), dt=0.5, skip_controls=True, **same)
    assert again["ensembles"][0]["summary"] == results["ensembles"][0]["summary"]


def test_bias_correct_kurtosis_converts_exactly(tmp_path, monkeypatch):
    """Results computed with the biased kurtosis, converted, equal those computed with the
    bias-corrected one; converted twice is refused."""
    from tl_continuous.lines_of_thought import dynamics
    from tl_continuous.lines_of_thought.corpus import gibberish as gib
    from tl_continuous.lines_of_thought.ensemble import LinesOfThought
    from tl_continuous.reports.dynamics_results import analyse, bias_correct_kurtosis
    from tl_continuous.reports.settings import shard_folder

    model = tiny_model("rotary", n_layers=6)
    corpus = gib(model, 40, n_tokens=8, seed=2)
    build_results(
        model,
        corpus,
        model_name="tiny",
        shard_root=tmp_path,
        stem="tiny",
        k=4,
        taus=(1,),
        skip_controls=True,
        batch_size=20,
        progress=False,
    )
    lot = LinesOfThought.from_shards(shard_folder(tmp_path, "tiny", 40, 0))

    def entry(a):
        s = a["stats"]
        keys = ("t", "tau", "variance", "kurtosis", "mean_norm", "isotropy")
        pairs = {k: getattr(s, k).tolist() for k in (*keys, "cross_correlation", "normal_reject")}
        return {
            "n": lot.n_trajectories,
            "times": a["times"].tolist(),
            "summary": a["summary"].to_dict(),
            "diag": a["diag"].to_dict(),
            "pairs": pairs,
        }

    corrected = entry(analyse(lot, 6, name="x", fit_layers=(1, 5), progress=False))

    def biased(x):
        c = x - x.mean(0)
        return (c**4).mean(0) / (c**2).mean(0) ** 2 - 3.0

    monkeypatch.setattr(dynamics, "excess_kurtosis", biased)
    old = entry(analyse(lot, 6, name="x", fit_layers=(1, 5), progress=False))
    assert old["summary"]["kurtosis"] != pytest.approx(corrected["summary"]["kurtosis"])
    new = bias_correct_kurtosis({"ensembles": [old]})
    got = new["ensembles"][0]
    assert got["pairs"]["kurtosis"] == pytest.approx(corrected["pairs"]["kurtosis"], abs=1e-10)
    assert got["summary"]["kurtosis"] == pytest.approx(corrected["summary"]["kurtosis"], abs=1e-10)
    assert got["diag"]["score"] == pytest.approx(corrected["diag"]["score"], abs=1e-9)
    assert got["diag"]["flagged"] == corrected["diag"]["flagged"]
    with pytest.raises(ValueError, match="already record kurtosis_convention"):
        bias_correct_kurtosis(new)
    old["summary"]["kurtosis"] += 0.5  # stored numbers the pairs do not reproduce
    with pytest.raises(ValueError, match="do not reproduce"):
        bias_correct_kurtosis({"ensembles": [old]})
