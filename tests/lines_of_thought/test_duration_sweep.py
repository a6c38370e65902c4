"""DurationSweepLines: against hand-made collections under continuous(), c = 1 as the plain
ensemble, save/load, bad inputs (model left as it was), the view; behaviour on SmolLM2.

The collection tests run on both backends (``make_tiny`` of ``conftest.py``):
``HookedTransformer`` and ``TransformerBridge``; argument validation and the figure, which do
not depend on the backend, run on a ``HookedTransformer``."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformer_lens.hook_points import HookPoint

import tl_continuous
from tl_continuous import lines_of_thought
from tl_continuous.continuous.durations import Durations
from tl_continuous.continuous.signal import continuous
from tl_continuous.lines_of_thought.bases import TrajectoryBases
from tl_continuous.lines_of_thought.duration_sweep import DurationSweepLines
from tl_continuous.lines_of_thought.ensemble import LinesOfThought
from tl_continuous.tiny import tiny_model

POS = 7


def _tokens(n: int = 80, pos: int = POS, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 50, (n, pos), generator=torch.Generator().manual_seed(seed))


def _plain(model: Any, tokens: torch.Tensor) -> tuple[LinesOfThought, TrajectoryBases]:
    lot = LinesOfThought.collect(model, tokens, progress=False)
    return lot, TrajectoryBases.from_ensemble(lot)


def _hooks(model: Any) -> dict[str, Any]:
    """Every PyTorch and TransformerLens hook of every module, by identity, and the hooks."""
    out: dict[str, Any] = {"hook_names": sorted(model.hook_dict), "attrs": sorted(vars(model))}
    for name, m in model.named_modules():
        torch_hooks = [tuple(d) for a, d in vars(m).items() if a.endswith("hooks")]
        lens = [id(h) for h in m.fwd_hooks + m.bwd_hooks] if isinstance(m, HookPoint) else []
        out[name] = (torch_hooks, lens)
    return out


def _project(traj: torch.Tensor, bases: TrajectoryBases, k: int) -> torch.Tensor:
    return torch.stack(
        [traj[:, t].double() @ bases.top(t, k).double() for t in range(bases.n_layers)], dim=1
    )


def test_public_names() -> None:
    assert tl_continuous.DurationSweepLines is DurationSweepLines
    assert lines_of_thought.DurationSweepLines is DurationSweepLines


def test_value_one_reproduces_the_plain_ensemble(make_tiny) -> None:
    model = make_tiny("rotary")
    tokens = _tokens()
    lot, bases = _plain(model, tokens)
    sweep = DurationSweepLines.collect(model, tokens, bases, [1.0], k=3, progress=False)
    expected = _project(lot.trajectories, bases, 3)
    torch.testing.assert_close(sweep.plain_coords, expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(sweep.coords[0], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(sweep.means[0], lot.trajectories.double().mean(0), atol=1e-5, rtol=0)
    assert sweep.distance().abs().max() < 1e-5
    torch.testing.assert_close(sweep.spread_ratio(), torch.ones(1, 2, dtype=torch.float64))
    # uncentred capture of the plain ensemble on its own bases is the bases' explained fraction
    torch.testing.assert_close(sweep.plain_captured_fraction(), bases.explained_fraction(3))
    torch.testing.assert_close(sweep.captured_fraction()[0], bases.explained_fraction(3))


@pytest.mark.parametrize(
    ("kind", "shrink", "spans"),
    [
        ("rotary", None, [(0, POS - 2)]),
        ("rotary", [(1, 3), (-3, -2)], [(1, 3), (4, 5)]),
        ("learned", [(2, 4)], [(2, 4)]),
    ],
)
def test_coords_equal_a_collection_by_hand_under_continuous(make_tiny, kind, shrink, spans) -> None:
    model = make_tiny(kind)
    tokens = _tokens()
    _, bases = _plain(model, tokens)
    values = [0.7, 0.2, 0.0]
    sweep = DurationSweepLines.collect(
        model, tokens, bases, values, shrink=shrink, k=4, batch_size=16, progress=False
    )
    assert sweep.shrink == spans
    for i, c in enumerate(values):
        with continuous(model, Durations.from_spans(POS, spans, value=c)):
            by_hand = LinesOfThought.collect(model, tokens, progress=False).trajectories
        torch.testing.assert_close(sweep.coords[i], _project(by_hand, bases, 4), atol=1e-5, rtol=0)
        x = by_hand.double()
        torch.testing.assert_close(sweep.means[i], x.mean(0), atol=1e-6, rtol=0)
        torch.testing.assert_close(
            sweep.variance[i], ((x - x.mean(0)) ** 2).sum(-1).mean(0), rtol=1e-5, atol=0
        )
    # shrinking moves the pilots: the readouts are not those of the plain ensemble
    assert (sweep.distance() > 1e-3).all()


def test_shapes_readouts_and_a_round_trip(make_tiny, tmp_path) -> None:
    model = make_tiny("rotary", n_layers=3)
    tokens = _tokens(n=80)
    sweep = DurationSweepLines.collect(
        model, tokens, None, torch.tensor([1, 0.5, 0.25]), k=2, progress=False
    )
    assert sweep.coords.shape == (3, 80, 3, 2)
    assert sweep.means.shape == (3, 3, 64) and sweep.basis.shape == (3, 64, 2)
    assert sweep.layer_names == [f"blocks.{i}.hook_resid_post" for i in range(3)]
    for readout in (sweep.distance(), sweep.captured_fraction(True), sweep.spread_ratio()):
        assert readout.shape == (3, 3) and torch.isfinite(readout).all()
    frac = torch.cat([sweep.captured_fraction(), sweep.captured_fraction(centred=True)])
    assert ((frac > 0) & (frac <= 1 + 1e-12)).all()
    torch.testing.assert_close(
        sweep.mean_coords(), torch.einsum("vld,ldk->vlk", sweep.means, sweep.basis)
    )
    assert sweep.metadata["model_config"]["d_model"] == 64
    summary = sweep.summary()
    assert [row["c"] for row in summary["per_value"]] == [1.0, 0.5, 0.25]

    back = DurationSweepLines.load(sweep.save(tmp_path / "sweep.safetensors"))
    again = DurationSweepLines.from_dict(sweep.to_dict())
    for other in (back, again):
        for name, value in sweep.to_dict().items():
            got = getattr(other, name)
            assert torch.equal(got, value) if isinstance(value, torch.Tensor) else got == value
    assert back.summary() == summary
    lot_file = LinesOfThought(torch.zeros(2, 1, 3), ["blocks.0.hook_resid_post"]).save(
        tmp_path / "lot.safetensors"
    )
    with pytest.raises(ValueError, match="is not a DurationSweepLines file"):
        DurationSweepLines.load(lot_file)
    # jaxtyping (TypeError) checks the shapes first in the test suite, __post_init__ otherwise
    with pytest.raises((ValueError, TypeError), match="plain_mean"):
        DurationSweepLines.from_dict(sweep.to_dict() | {"plain_mean": torch.zeros(2, 64)})


def test_final_norm_and_resid_mid_bases_are_read_from_their_layer_names(make_tiny) -> None:
    model = make_tiny("rotary", n_layers=3)
    tokens = _tokens()
    lot = LinesOfThought.collect(
        model, tokens, hook="resid_mid", layers=[0, 2], include_final_norm=True, progress=False
    )
    bases = TrajectoryBases.from_ensemble(lot)
    sweep = DurationSweepLines.collect(
        model, tokens, bases, [1.0, 0.5], k=2, plain=lot, progress=False
    )
    assert sweep.layer_names == lot.layer_names
    torch.testing.assert_close(
        sweep.coords[0], _project(lot.trajectories, bases, 2), atol=1e-5, rtol=0
    )


def test_float64_model(make_tiny) -> None:
    model = make_tiny("rotary", dtype=torch.float64)
    tokens = _tokens()
    _, bases = _plain(model, tokens)
    sweep = DurationSweepLines.collect(model, tokens, bases, [1.0, 0.3], progress=False)
    assert sweep.metadata["durations_dtype"] == "torch.float64"
    torch.testing.assert_close(sweep.coords[0], sweep.plain_coords, atol=1e-6, rtol=0)
    with continuous(model, Durations(torch.tensor([0.3] * (POS - 1) + [1.0], dtype=torch.float64))):
        by_hand = LinesOfThought.collect(model, tokens, progress=False).trajectories
    torch.testing.assert_close(sweep.coords[1], _project(by_hand, bases, 3), atol=1e-6, rtol=0)


def _bad_inputs() -> list[tuple[dict[str, Any], str]]:
    model3 = tiny_model("rotary", n_layers=3)
    tokens = _tokens()
    _, bases3 = _plain(model3, tokens)
    two = [f"blocks.{i}.hook_resid_post" for i in range(2)]
    narrow = TrajectoryBases(
        U=torch.linalg.qr(torch.randn(2, 32, 32, dtype=torch.float64)).Q,
        S=torch.ones(2, 32, dtype=torch.float64),
        layer_names=two,
    )
    U, S = bases3.U[:2], bases3.S[:2]
    renamed = TrajectoryBases(U=U, S=S, layer_names=[two[0], "blocks.1.hook_attn_out"])
    other = TrajectoryBases(U=U, S=S, layer_names=two, metadata={"model_name": "gpt2"})
    return [
        ({"values": []}, r"values must be a non-empty 1-D sequence"),
        ({"values": [1.0, float("nan")]}, r"values must be finite"),
        ({"values": [0.5, -0.1]}, r"values must be >= 0"),
        ({"shrink": [(0, POS)]}, r"shrink: spans must hold 0 <= first <= last < n_pos=7"),
        ({"shrink": [(3, 1)]}, r"shrink: spans must hold"),
        ({"shrink": []}, r"shrink must name at least one span"),
        ({"shrink": [(0, -1)], "values": [0.0]}, r"values: c = 0 with every token"),
        ({"k": 0}, r"k must be in \[1, bases.rank=64\]"),
        ({"k": 65}, r"k must be in \[1, bases.rank=64\]"),
        ({"batch_size": 0}, r"batch_size must be a positive integer"),
        ({"bases": bases3}, r"bases name block 2 but the model has n_layers=2"),
        ({"bases": narrow}, r"bases have d_model=32 but the model has d_model=64"),
        ({"bases": renamed}, r"bases.layer_names must be blocks"),
        ({"bases": other}, r"bases come from the model 'gpt2'"),
        ({"plain": "other tokens"}, r"plain must be the ensemble of these very token ids"),
        ({"plain": "other layers"}, r"plain reads the layers"),
        ({"tokens": torch.full((2, 70), 1)}, r"n_ctx=64"),
    ]


@pytest.mark.parametrize(("change", "message"), _bad_inputs())
def test_bad_inputs_name_the_argument_and_leave_the_model_alone(change, message) -> None:
    model = tiny_model("rotary")
    tokens = _tokens()
    _, bases = _plain(model, tokens)
    args: dict[str, Any] = {"bases": bases, "values": [1.0, 0.5]} | change
    if args.get("plain") == "other tokens":
        args["plain"] = LinesOfThought.collect(model, _tokens(seed=1), progress=False)
    elif args.get("plain") == "other layers":
        args["plain"] = LinesOfThought.collect(model, tokens, layers=[1], progress=False)
    tokens = args.pop("tokens", tokens)
    before = _hooks(model)
    with pytest.raises(ValueError, match=message):
        DurationSweepLines.collect(model, tokens, progress=False, **args)
    assert _hooks(model) == before


def test_an_error_inside_continuous_leaves_no_hooks(make_tiny, monkeypatch) -> None:
    model = make_tiny("rotary")
    tokens = _tokens()
    _, bases = _plain(model, tokens)
    before = _hooks(model)
    collect = LinesOfThought.collect.__func__  # type: ignore[attr-defined]

    def failing(cls, model, *args, **kwargs):
        if hasattr(model, "continuous"):
            raise RuntimeError("interrupted")
        return collect(cls, model, *args, **kwargs)

    monkeypatch.setattr(LinesOfThought, "collect", classmethod(failing))
    with pytest.raises(RuntimeError, match="interrupted"):
        DurationSweepLines.collect(model, tokens, bases, [0.5], progress=False)
    assert _hooks(model) == before and not hasattr(model, "continuous")


def test_figure_draws_one_path_per_value_and_the_plain_path() -> None:
    from tl_continuous.views.lines_of_thought import duration_sweep_figure

    model = tiny_model("rotary")
    sweep = DurationSweepLines.collect(model, _tokens(), None, [1.0, 0.5, 0.1], progress=False)
    fig = duration_sweep_figure(sweep, dims=(1, 2))
    names = [trace.name for trace in fig.data]
    assert names[:4] == ["c = 1", "c = 0.5", "c = 0.1", "plain"]
    plain = fig.data[3]
    torch.testing.assert_close(
        torch.tensor(plain.x, dtype=torch.float64), sweep.plain_mean_coords()[:, 1]
    )
    assert fig.data[4].marker.showscale and len(fig.data) == 8
    assert list(fig.data[-1].y) == pytest.approx(sweep.distance()[2].tolist())
    assert len(duration_sweep_figure(sweep, distance=False).data) == 5
    with pytest.raises(ValueError, match="dims must be two coordinates"):
        duration_sweep_figure(sweep, dims=(0, 3))


@pytest.mark.model
@pytest.mark.filterwarnings("ignore::tl_continuous.lines_of_thought.bases.RankDeficientWarning")
def test_smollm2_mean_pilot_moves_further_from_plain_as_tokens_shrink(smollm2) -> None:
    """Every token but the pilot at duration c: the mean pilot leaves the plain mean more as
    c goes 1 -> 0.5 -> 0.1, at every layer (measured: last layer 0, 0.15, 0.35 spreads on 32
    pseudo-sentences of 16 tokens), while the ensemble keeps about its plain spread."""
    torch.set_num_threads(1)
    chunks = lines_of_thought.pseudo_sentences(smollm2, n_tokens=16, limit=32)
    sweep = DurationSweepLines.collect(smollm2, chunks, None, [1.0, 0.5, 0.1], progress=False)
    dist = sweep.distance()
    assert dist[0].max() < 1e-4  # c = 1 is the plain model
    assert (dist[1] > dist[0]).all() and (dist[2] > dist[1]).all()
    assert 0.05 < dist[1, -1] < dist[2, -1] < 1.0
    assert ((sweep.spread_ratio() - 1).abs() < 0.25).all()
