"""Out-of-core analysis of a shard folder equals the in-memory analysis of the same ensemble.

A float64 tiny model (3 blocks, d_model 16, the final norm read too) and 150 sequences in
shards of 32 (five shards, the last one short): bases, residual statistics and both KL
readings are computed from the folder one shard at a time and from the merged ensemble, and
agree to 1e-9 relative (subspaces compared as projectors, singular vectors up to sign).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as sps

from tl_continuous.lines_of_thought.bases import RankDeficientWarning, TrajectoryBases
from tl_continuous.lines_of_thought.collect import IncompleteShardsError, collect_shards
from tl_continuous.lines_of_thought.dynamics import ResidualStatistics, VarianceLawFit
from tl_continuous.lines_of_thought.ensemble import LinesOfThought
from tl_continuous.lines_of_thought.streaming import (
    _Moments,
    _normaltest_pvalues,
    gram_matrices,
    streamed_bases,
    streamed_residual_statistics,
)
from tl_continuous.lines_of_thought.streaming_kl import (
    streamed_truncation_kl_every_layer,
    streamed_truncation_kl_last_layer,
)
from tl_continuous.lines_of_thought.truncation import (
    truncation_kl_every_layer,
    truncation_kl_last_layer,
)
from tl_continuous.tiny import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

RTOL = 1e-9
N, SHARD = 150, 32


def _model():
    return tiny_model(
        "rotary", n_layers=3, dtype=torch.float64, d_model=16, d_head=4, n_heads=4,
        d_mlp=32, rotary_dim=4, n_key_value_heads=2,
    )  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, LinesOfThought]:
    torch.set_num_threads(1)
    model = _model()
    tokens = torch.randint(0, 50, (N, 6), generator=torch.Generator().manual_seed(0))
    path = tmp_path_factory.mktemp("shards")
    collect_shards(model, tokens, path, batch_size=SHARD, include_final_norm=True, progress=False)
    return model, path, LinesOfThought.from_shards(path)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    both_nan = a.isnan() & b.isnan()
    diff = torch.where(both_nan, 0.0, (a - b).abs() / a.abs().clamp_min(1e-300))
    return float(diff.max())


def _projector(U: torch.Tensor) -> torch.Tensor:
    return U @ U.mT


@pytest.mark.parametrize("realign", [True, False])
def test_streamed_bases_equal_the_in_memory_svd(folder, realign: bool) -> None:
    _, path, lot = folder
    assert lot.n_trajectories == N > SHARD  # more than one shard batch
    mem = TrajectoryBases.from_ensemble(lot, realign=realign)
    got = streamed_bases(path, realign=realign, progress=False)
    assert got.layer_names == mem.layer_names and got.n_trajectories == N
    assert got.realigned == realign and got.U.dtype == torch.float64
    assert got.U.shape == mem.U.shape == (4, 16, 16)
    assert _rel(mem.S, got.S) < RTOL
    assert torch.equal(mem.order, got.order)
    for k in range(1, mem.rank + 1):  # every top-k subspace, as a projector
        for t in range(mem.n_layers):
            err = (_projector(mem.top(t, k)) - _projector(got.top(t, k))).abs().max()
            assert float(err) < RTOL
    overlap = (mem.U * got.U).sum(dim=1).abs()  # column by column, up to sign
    assert float((overlap - 1).abs().max()) < RTOL


def test_streamed_bases_options(folder) -> None:
    _, path, lot = folder
    mem = TrajectoryBases.from_ensemble(lot, rank=5, dtype=torch.float32)
    got = streamed_bases(path, rank=5, dtype=torch.float32, progress=False)
    assert got.U.shape == (4, 16, 5) and got.S.dtype == torch.float32
    assert float(((mem.S - got.S).abs() / mem.S).max()) < 1e-5  # float32 results
    with pytest.raises(ValueError, match=r"rank must be in \[1, min\(n_traj, d_model\) = 16\]"):
        streamed_bases(path, rank=17, progress=False)
    with pytest.raises(ValueError, match=r"dtype must be torch\.float64 or torch\.float32"):
        streamed_bases(path, dtype=torch.float16, progress=False)


def test_gram_matrices_are_the_uncentred_second_moments(folder) -> None:
    _, path, lot = folder
    gram, n = gram_matrices(path, progress=False)
    x = lot.trajectories.double()
    assert n == N
    assert _rel(torch.einsum("nld,nle->lde", x, x), gram) < 1e-12


def test_streamed_residual_statistics_equal_the_in_memory_ones(folder) -> None:
    _, path, lot = folder
    bases = TrajectoryBases.from_ensemble(lot)
    mem = ResidualStatistics.from_lines(lot, bases, progress=False)
    got = streamed_residual_statistics(path, streamed_bases(path, progress=False), progress=False)
    assert torch.equal(mem.t, got.t) and torch.equal(mem.tau, got.tau)
    assert torch.equal(mem.times, got.times) and got.n_samples == mem.n_samples == N
    assert len(mem.t) == 6
    for name in (*ResidualStatistics._PER_PAIR, "coord_variance"):
        assert _rel(getattr(mem, name), getattr(got, name)) < RTOL, name
    assert not got.kurtosis.isnan().any() and not got.normal_pvalue.isnan().any()
    # the fits take it unchanged
    fit_mem, fit_got = (VarianceLawFit.from_statistics(s) for s in (mem, got))
    assert abs(fit_mem.lam - fit_got.lam) <= RTOL * abs(fit_mem.lam)


def test_streamed_residual_statistics_options(folder) -> None:
    _, path, lot = folder
    bases = TrajectoryBases.from_ensemble(lot)
    kw = {"max_tau": 2, "layers": (1, 4), "level": 0.1}
    mem = ResidualStatistics.from_lines(lot, bases, progress=False, **kw)
    got = streamed_residual_statistics(path, bases, pairs_per_pass=2, progress=False, **kw)
    assert mem.t.tolist() == got.t.tolist() == [1, 1, 2]
    for name in ResidualStatistics._PER_PAIR:
        assert _rel(getattr(mem, name), getattr(got, name)) < RTOL, name
    times = torch.tensor([0.0, 2, 4, 6], dtype=torch.float64)
    assert torch.equal(streamed_residual_statistics(path, bases, times=times,
                                                    progress=False).times, times)  # fmt: skip
    with pytest.raises(ValueError, match=r"pairs_per_pass must be a positive integer or None"):
        streamed_residual_statistics(path, bases, pairs_per_pass=0, progress=False)
    with pytest.raises(ValueError, match=r"times must have shape \(4,\)"):
        streamed_residual_statistics(path, bases, times=torch.zeros(3), progress=False)
    other = TrajectoryBases(bases.U, bases.S, [f"x{i}" for i in range(4)])
    with pytest.raises(ValueError, match="bases were not built from this shard folder's layers"):
        streamed_residual_statistics(path, other, progress=False)


@pytest.mark.parametrize("method", ["kv_cache", "naive"])
def test_streamed_every_layer_kl_equals_the_in_memory_curve(folder, method: str) -> None:
    model, path, lot = folder
    bases = TrajectoryBases.from_ensemble(lot)
    ks = [1, 2, 4, 8, 12, 16]
    mem = truncation_kl_every_layer(model, lot, bases, ks, method=method, progress=False)
    streamed = streamed_bases(path, progress=False)
    got = streamed_truncation_kl_every_layer(
        model, path, streamed, ks, method=method, batch_size=20, progress=False
    )
    _assert_same_curve(mem, got)


def test_streamed_last_layer_kl_equals_the_in_memory_curve(folder) -> None:
    model, path, lot = folder
    bases = TrajectoryBases.from_ensemble(lot)
    mem = truncation_kl_last_layer(model, lot, bases, progress=False)
    got = streamed_truncation_kl_last_layer(model, path, streamed_bases(path, progress=False),
                                            batch_size=7, progress=False)  # fmt: skip
    _assert_same_curve(mem, got)
    with pytest.raises(ValueError, match=r"ks must lie in \[1, rank=16\]"):
        streamed_truncation_kl_last_layer(model, path, bases, [0, 4], progress=False)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        streamed_truncation_kl_last_layer(model, path, bases, batch_size=0, progress=False)
    wrong = tiny_model("rotary", n_layers=3)  # d_model 64
    with pytest.raises(ValueError, match="lot was not collected from this model"):
        streamed_truncation_kl_last_layer(wrong, path, bases, progress=False)


def _assert_same_curve(mem, got) -> None:
    assert got.reading == mem.reading and got.metadata == mem.metadata
    assert torch.equal(got.ks, mem.ks) and got.n_trajectories == N and got.d_model == 16
    # relative 1e-9, except at the full rank where the KL is float64 rounding (~1e-17)
    for name in ("kl_mean", "kl_median"):
        a, b = getattr(mem, name), getattr(got, name)
        assert torch.allclose(a, b, rtol=RTOL, atol=1e-13), name
        assert float(a[:-1].min()) > 1e-6  # the relative check above is meaningful there
    assert abs(got.baseline - mem.baseline) <= RTOL * mem.baseline
    assert got.knee_k == mem.knee_k


# ------------------------------------------------------------------ the maths
def test_moments_merge_exactly_over_uneven_batches() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 61, 5, generator=gen, dtype=torch.float64).exp() + 10.0  # skewed, offset
    merged = None
    for lo, hi in ((0, 1), (1, 18), (18, 19), (19, 61)):
        part = _Moments.of(x[:, lo:hi])
        merged = part if merged is None else merged.merge(part)
    whole = _Moments.of(x)
    assert merged is not None and merged.n == 61
    for name in ("mean", "m2", "m3", "m4", "co"):
        assert _rel(getattr(whole, name), getattr(merged, name)) < 1e-10, name


def test_normaltest_from_moments_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    for n, sample in ((25, rng.standard_normal((25, 6))), (400, rng.standard_t(3, (400, 6)))):
        c = sample - sample.mean(0)
        m2, m3, m4 = ((c**k).mean(0) for k in (2, 3, 4))
        got = _normaltest_pvalues(m3 / m2**1.5, m4 / m2**2, n)
        np.testing.assert_allclose(got, sps.normaltest(sample, axis=0).pvalue, rtol=1e-10)


# ------------------------------------------------------------------ bad folders
def test_incomplete_or_small_folders_are_named(tmp_path: Path) -> None:
    model = _model()
    tokens = torch.randint(0, 50, (9, 4), generator=torch.Generator().manual_seed(0))
    collect_shards(model, tokens, tmp_path / "half", worker=0, n_workers=2, batch_size=3,
                   progress=False)  # fmt: skip
    with pytest.raises(IncompleteShardsError, match=r"lacks 1 of 3 batches: 1"):
        streamed_bases(tmp_path / "half", progress=False)
    with pytest.raises(FileNotFoundError, match="is not a shard folder"):
        streamed_bases(tmp_path, progress=False)
    collect_shards(model, tokens[:1], tmp_path / "one", progress=False)
    with pytest.raises(ValueError, match=r"at least 2 trajectories to span bases \(got 1\)"):
        streamed_bases(tmp_path / "one", progress=False)
    collect_shards(model, tokens, tmp_path / "nine", batch_size=4, progress=False)
    with pytest.warns(RankDeficientWarning, match="9 trajectories < d_model=16"):
        few = streamed_bases(tmp_path / "nine", progress=False)
    assert few.rank == 9 and not math.isnan(float(few.S.sum()))


# ------------------------------------------------------------------ both backends
def test_streamed_analysis_runs_on_both_backends(make_tiny, tmp_path: Path) -> None:
    """On a float32 tiny model of each backend: the streamed path gives the in-memory numbers
    (to float32 rounding of the model's forward passes, whose batches differ)."""
    model = make_tiny("rotary", n_layers=2)
    tokens = torch.randint(0, 50, (90, 5), generator=torch.Generator().manual_seed(2))
    collect_shards(model, tokens, tmp_path, batch_size=20, progress=False)
    lot = LinesOfThought.from_shards(tmp_path)
    mem_bases, got_bases = (
        TrajectoryBases.from_ensemble(lot),
        streamed_bases(tmp_path, progress=False),
    )
    assert _rel(mem_bases.S, got_bases.S) < RTOL
    mem = ResidualStatistics.from_lines(lot, mem_bases, progress=False)
    got = streamed_residual_statistics(tmp_path, got_bases, progress=False)
    assert _rel(mem.variance, got.variance) < 1e-7 and _rel(mem.kurtosis, got.kurtosis) < 1e-6
    ks = [4, 16, 64]
    for mem_fn, got_fn in (
        (truncation_kl_last_layer, streamed_truncation_kl_last_layer),
        (truncation_kl_every_layer, streamed_truncation_kl_every_layer),
    ):
        a = mem_fn(model, lot, mem_bases, ks, progress=False)
        b = got_fn(model, tmp_path, got_bases, ks, progress=False)
        assert torch.allclose(a.kl_mean[:-1], b.kl_mean[:-1], rtol=1e-4), mem_fn.__name__
        assert abs(a.baseline - b.baseline) <= 1e-4 * a.baseline
