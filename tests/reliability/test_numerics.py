"""Numerical edge cases: durations that underflow or are huge; rank-deficient ensembles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tl_continuous import Durations, LinesOfThought, continuous, tiny_model
from tl_continuous.lines_of_thought.bases import RankDeficientWarning, TrajectoryBases
from tl_continuous.lines_of_thought.dynamics import ResidualStatistics, residuals
from tl_continuous.lines_of_thought.truncation import truncation_kl_last_layer

TOKENS = torch.tensor([[3, 1, 4, 1, 5]])


def _logits(model, values: torch.Tensor, **kw) -> torch.Tensor:
    with torch.no_grad(), continuous(model, values, **kw):
        return model(TOKENS)


# ------------------------------------------------------------------ tiny durations
@pytest.mark.parametrize(
    ("tiny", "dtype"),
    [(1e-45, torch.float32), (1e-300, torch.float64), (5e-324, torch.float64)],
    ids=["1e-45 f32 (subnormal)", "1e-300 f64", "5e-324 f64 (smallest subnormal)"],
)
@pytest.mark.parametrize("kind", ["rotary", "learned"])
def test_underflowing_duration_is_the_token_removed(kind: str, tiny: float, dtype) -> None:
    """A duration of 1e-45 weighs exp(-103) against 1: the key is as good as removed."""
    model = tiny_model(kind)  # type: ignore[arg-type]
    d = torch.ones(5, dtype=dtype)
    d[2] = tiny
    assert float(d[2]) > 0  # still a positive duration, not rounded to 0
    out = _logits(model, d)
    assert bool(torch.isfinite(out).all())
    d0 = torch.ones(5, dtype=dtype)
    d0[2] = 0.0
    removed = _logits(model, d0)
    # the token's own query sees only earlier keys and itself; compare the later tokens
    torch.testing.assert_close(out[:, 3:], removed[:, 3:], atol=1e-5, rtol=1e-5)


def _float64_copy(model, kind: str = "rotary"):
    """The same weights in a float64 model: the reference of a lower-precision run."""
    ref = tiny_model(kind, dtype=torch.float64)  # type: ignore[arg-type]
    ref.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    return ref


# bfloat16 keeps 8 significant bits (unit roundoff 2^-8 = 0.0039); the tiny model's logits
# (|logit| < 2.5, bfloat16 spacing 2^-7 there) go through two layers of such roundings:
# 0.05 absolute (measured 0.027)
BF16_ATOL = 0.05


def test_underflowing_duration_in_bfloat16() -> None:
    """1e-45 (log -103) in a bfloat16 model: the float64 run of the same weights, within a
    few bfloat16 roundings; and the removed token (duration 0) in float64 for later tokens."""
    model = tiny_model("rotary", dtype=torch.bfloat16)
    d = torch.ones(5)
    d[1] = 1e-45
    out = _logits(model, d)
    ref = _float64_copy(model)
    want = _logits(ref, d.double())
    torch.testing.assert_close(out.double(), want, atol=BF16_ATOL, rtol=0)
    d0 = d.double()
    d0[1] = 0.0
    torch.testing.assert_close(out[:, 2:].double(), _logits(ref, d0)[:, 2:], atol=BF16_ATOL, rtol=0)
    # the tolerance can fail: the same model with the token kept at duration 1
    assert (out.double() - _logits(ref, torch.ones(5, dtype=torch.float64))).abs().max() > BF16_ATOL


# ------------------------------------------------------------------ huge durations
@pytest.mark.parametrize(
    ("big", "dtype"),
    [(1e6, torch.float32), (1e30, torch.float32), (1e30, torch.float64), (1e300, torch.float64)],
)
def test_huge_durations_rotary_finite_and_scale_invariant(big: float, dtype) -> None:
    """Against a float64 run of the same weights at the positions the run used (float32
    positions of 1e30 round by ~1e23: that rounding is the documented precision, so the
    reference takes the float32 run's positions); float32 logits: 1e-4 (measured <= 5.1e-5,
    at 1e300)."""
    model = tiny_model("rotary")
    d = torch.ones(5, dtype=dtype) * big
    with torch.no_grad(), continuous(model, d):
        out, cache = model.run_with_cache(TOKENS)
    assert bool(torch.isfinite(out).all())
    used = cache["continuous.hook_positions"].double()
    ref = _float64_copy(model)
    with torch.no_grad(), continuous(ref, d.double()):
        want = ref.run_with_hooks(
            TOKENS, fwd_hooks=[("continuous.hook_positions", lambda p, hook: used.clone())]
        )
    torch.testing.assert_close(out.double(), want, atol=1e-4, rtol=0)
    assert (out - model(TOKENS)).abs().max() > 1e-3  # the positions matter: it could fail
    # attention alone: every duration times `big` is every duration times 1
    torch.testing.assert_close(
        _logits(model, d, positions=False), model(TOKENS).detach(), atol=1e-4, rtol=1e-4
    )


def test_huge_duration_among_ones_takes_all_the_attention() -> None:
    """d = (1, 1e30, 1, ...) in float32: key 1 holds all the weight; nothing overflows."""
    model = tiny_model("rotary")
    d = torch.ones(5)
    d[1] = 1e30
    with continuous(model, d, positions=False):
        _, cache = model.run_with_cache(TOKENS)
    for layer in range(model.cfg.n_layers):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0]
        assert bool(torch.isfinite(pattern).all())
        torch.testing.assert_close(pattern[:, 1:, 1], torch.ones_like(pattern[:, 1:, 1]))


def test_huge_durations_learned_table_is_a_clear_error() -> None:
    model = tiny_model("learned")
    with pytest.raises(ValueError, match=r"positions must map into the position table"):
        _logits(model, torch.full((5,), 1e6))


def test_positions_that_overflow_float32_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"overflow torch.float32.*pass float64"):
        Durations(torch.full((5,), 1e38))
    # the same values in float64 are fine
    assert bool(
        torch.isfinite(Durations(torch.full((5,), 1e38, dtype=torch.float64)).positions).all()
    )


# ------------------------------------------------------------------ rank-deficient ensembles
def _small_lot(n: int, seed: int = 0) -> tuple[object, LinesOfThought]:
    model = tiny_model("rotary", seed=seed)
    toks = torch.randint(0, 50, (n, 6), generator=torch.Generator().manual_seed(seed))
    return model, LinesOfThought.collect(model, toks, progress=False)


def test_rank_deficient_bases_warn_and_match_numpy() -> None:
    _, lot = _small_lot(10)
    assert lot.n_trajectories < lot.d_model
    with pytest.warns(RankDeficientWarning, match=r"10 trajectories < d_model=64"):
        bases = TrajectoryBases.from_ensemble(lot, realign=True)
    assert bases.U.shape == (2, 64, 10)
    for t in range(lot.n_layers):
        m = lot.trajectories[:, t].double().numpy().T  # [d_model, n]
        u_ref, s_ref, _ = np.linalg.svd(m, full_matrices=False)
        s = bases.S[t].numpy()
        np.testing.assert_allclose(np.sort(s)[::-1], s_ref, rtol=1e-10, atol=1e-10)
        u = bases.U[t].numpy()
        np.testing.assert_allclose(u.T @ u, np.eye(10), atol=1e-10)  # orthonormal
        np.testing.assert_allclose(u @ u.T, u_ref @ u_ref.T, atol=1e-8)  # same subspace
        np.testing.assert_allclose(u @ (u.T @ m), m, atol=1e-6)  # spans every pilot


def test_rank_deficient_truncation_is_exact_at_full_rank() -> None:
    model, lot = _small_lot(12)
    with pytest.warns(RankDeficientWarning):
        bases = TrajectoryBases.from_ensemble(lot)
    curve = truncation_kl_last_layer(model, lot, bases, progress=False)
    assert curve.ks.tolist()[-1] == 12  # the grid stops at the rank, not at d_model
    assert float(curve.kl_mean[-1]) < 1e-8  # the 12 directions hold every pilot
    assert bool(torch.isfinite(curve.kl_mean).all())


def test_duplicated_trajectories_zero_singular_values() -> None:
    """Rank below n (duplicates): zero singular values give zero gains, not inf/nan."""
    _, lot = _small_lot(6)
    doubled = torch.cat([lot.trajectories, lot.trajectories])  # 12 trajectories of rank 6
    lot2 = LinesOfThought(doubled, lot.layer_names)
    with pytest.warns(RankDeficientWarning):
        bases = TrajectoryBases.from_ensemble(lot2)
    assert float(bases.S.min()) < 1e-6 * float(bases.S.max())
    dx = residuals(lot2.trajectories, bases.U, bases.S, 0, 1)
    assert bool(torch.isfinite(dx).all())
    # numpy reference of the extrapolation with the same bases, zero gain on null directions
    x0, x1 = lot2.trajectories[:, 0].double().numpy(), lot2.trajectories[:, 1].double().numpy()
    u0, u1 = bases.U[0].numpy(), bases.U[1].numpy()
    s0, s1 = bases.S[0].numpy(), bases.S[1].numpy()
    keep = s0 > 1e-10 * s0.max()
    gains = np.where(keep, s1 / np.where(keep, s0, 1.0), 0.0)
    np.testing.assert_allclose(dx.numpy(), x1 - ((x0 @ u0) * gains) @ u1.T, atol=1e-8)
    stats = ResidualStatistics.from_tensors(lot2.trajectories, bases.U, bases.S, progress=False)
    assert bool(torch.isfinite(stats.variance).all())
    # the variance per coordinate of the numpy residuals (float64, unbiased), to 1e-10
    want = (x1 - ((x0 @ u0) * gains) @ u1.T).var(axis=0, ddof=1).sum() / x1.shape[1]
    np.testing.assert_allclose(stats.variance.numpy(), [want], rtol=1e-10)


def test_full_rank_ensemble_does_not_warn(recwarn) -> None:
    _, lot = _small_lot(70)
    TrajectoryBases.from_ensemble(lot)
    assert not [w for w in recwarn if issubclass(w.category, RankDeficientWarning)]
