"""Controls (untrained, re-initialised halves, separability) and per-layer diagnostics."""

from __future__ import annotations

import json

import pytest
import torch

from tl_continuous.lines_of_thought.controls import (
    DynamicsSummary,
    LayerDiagnostics,
    layer_separability,
    reinitialised_model,
    untrained_model,
)
from tl_continuous.lines_of_thought.dynamics import ResidualStatistics, VarianceLawFit
from tl_continuous.lines_of_thought.synthetic import linear_gaussian_ensemble
from tl_continuous.tiny import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind", ["rotary", "learned"])
def test_untrained_model_is_new_random_and_leaves_everything_alone(kind):
    model = tiny_model(kind, n_layers=4)
    before = _snapshot(model)
    rng = torch.get_rng_state()
    fresh = untrained_model(model, seed=7)
    assert torch.equal(torch.get_rng_state(), rng), "the global RNG must not move"
    assert fresh is not model and fresh.cfg is not model.cfg
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not torch.equal(fresh.blocks[0].attn.W_Q, model.blocks[0].attn.W_Q)
    again = untrained_model(model, seed=7)
    assert torch.equal(again.blocks[2].mlp.W_in, fresh.blocks[2].mlp.W_in)
    tokens = torch.tensor([[1, 2, 3, 4]])
    assert fresh(tokens).shape == model(tokens).shape


def test_reinitialised_model_keeps_the_first_half_and_copies_no_hooks():
    model = tiny_model("rotary", n_layers=4)
    before = _snapshot(model)
    seen = []
    model.blocks[3].hook_resid_post.add_hook(lambda x, hook: seen.append(1), is_permanent=True)
    halves = reinitialised_model(model, seed=3)
    for k, v in halves.state_dict().items():
        same = torch.equal(v, before[k])
        if k.startswith(("blocks.2.", "blocks.3.")) and k.endswith(("W_Q", "W_in", "W_O")):
            assert not same, k
        elif not k.startswith(("blocks.2.", "blocks.3.")):
            assert same, k
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    halves(torch.tensor([[1, 2, 3]]))
    assert seen == [], "the user's hooks must not be copied"
    model(torch.tensor([[1, 2, 3]]))
    assert seen == [1]
    with pytest.raises(ValueError, match="from_layer"):
        reinitialised_model(model, from_layer=9)


def test_layer_separability_sees_where_ensembles_part():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(600, 4, 6, generator=g, dtype=torch.float64)
    b = torch.randn(600, 4, 6, generator=g, dtype=torch.float64)
    b[:, 2:, 0] += 4.0
    acc = layer_separability(a, b, progress=False)
    assert acc.shape == (4,)
    assert float(acc[:2].sub(0.5).abs().max()) < 0.07
    assert float(acc[2:].min()) > 0.95


def test_dynamics_summary_round_trip_and_steps():
    ens = linear_gaussian_ensemble(n=300, n_layers=6, d_model=10, rank=4, seed=1)
    stats = ResidualStatistics.from_tensors(ens.trajectories, ens.U, ens.S, progress=False)
    summary = DynamicsSummary.from_statistics("synthetic", ens.trajectories, stats, layers=(1, 6))
    assert summary.fit.layers == (1, 6)
    assert len(summary.step) == 5 and len(summary.norm) == 6
    step0 = float((ens.trajectories[:, 1] - ens.trajectories[:, 0]).norm(dim=-1).mean())
    assert summary.step[0] == pytest.approx(step0)
    back = DynamicsSummary.from_dict(json.loads(json.dumps(summary.to_dict())))
    assert back.fit.lam == summary.fit.lam and back.step == summary.step
    assert summary.step_ratio > 0


def test_diagnostics_flag_a_normalised_last_layer():
    # a last "layer" read after a normalisation breaks the linear-Gaussian model
    ens = linear_gaussian_ensemble(n=500, n_layers=10, d_model=12, rank=4, seed=2)
    traj = ens.trajectories.clone()
    last = traj[:, -2]
    traj[:, -1] = last / last.norm(dim=-1, keepdim=True) * 12**0.5
    stats = ResidualStatistics.from_tensors(traj, ens.U, ens.S, progress=False)
    fit = VarianceLawFit.from_statistics(stats, layers=(0, 9))
    diag = LayerDiagnostics.from_statistics(stats, fit)
    assert diag.flagged == [9]
    assert len(diag.score) == 10
    assert LayerDiagnostics.from_dict(json.loads(json.dumps(diag.to_dict()))) == diag
    with pytest.raises(ValueError, match="max_tau"):
        LayerDiagnostics.from_statistics(stats, fit, max_tau=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_controls_keep_the_model_dtype(dtype):
    model = tiny_model("rotary", n_layers=2, dtype=dtype)
    for control in (untrained_model(model, seed=1), reinitialised_model(model, seed=1)):
        assert control.W_E.dtype == dtype
        assert control.blocks[1].attn.W_Q.dtype == dtype
        assert control(torch.tensor([[1, 2, 3]])).isfinite().all()


def test_untrained_model_initialises_even_when_the_config_says_not_to():
    # checkpoint-loaded models (load_model) carry cfg.init_weights = False
    model = tiny_model("rotary", n_layers=2)
    model.cfg.init_weights = False
    fresh = untrained_model(model, seed=2)
    assert model.cfg.init_weights is False
    for name, p in fresh.named_parameters():
        assert bool(p.isfinite().all()), name
    assert float(fresh.blocks[1].attn.W_Q.detach().std()) > 0
    assert float(fresh.W_E.detach().std()) > 0
    halves = reinitialised_model(model, seed=2)
    assert float(halves.blocks[1].mlp.W_in.detach().std()) > 0
    assert bool(halves(torch.tensor([[1, 2, 3]])).isfinite().all())
