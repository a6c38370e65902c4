"""The dynamics report runs end to end on a tiny model (the SmolLM2 run writes docs/)."""

from __future__ import annotations

import json

import pytest
import torch

from tl_continuous.lines_of_thought.corpus import gibberish
from tl_continuous.reports.dynamics import render_markdown
from tl_continuous.reports.dynamics_results import build_results
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
    # a rerun reads the shards instead of collecting again
    again = build_results(model, corpus, taus=(1,), dt=0.5, skip_controls=True, **same)
    assert again["ensembles"][0]["summary"] == results["ensembles"][0]["summary"]
