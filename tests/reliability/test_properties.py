"""Property tests (hypothesis) of the duration invariances on random tiny models and durations.

* all-ones identity: durations of 1 leave the model unchanged (any kind, any start for rotary);
* duplication: one attention-only layer without positions, a token of integer duration k gives
  the same output as the token written k times, and duration 0 as the token removed;
* scaling: multiplying every duration by s leaves every attention pattern unchanged when
  positions do not move (positions=False, or a model without positional information).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tl_continuous import Durations, continuous, tiny_model

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True)
seeds = st.integers(0, 2**16)
lengths = st.integers(2, 8)


def _tokens(seed: int, batch: int, length: int) -> torch.Tensor:
    return torch.randint(0, 50, (batch, length), generator=torch.Generator().manual_seed(seed))


def _patterns(model, tokens: torch.Tensor) -> list[torch.Tensor]:
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    return [cache[f"blocks.{i}.attn.hook_pattern"] for i in range(model.cfg.n_layers)]


@SETTINGS
@given(
    kind=st.sampled_from(["rotary", "rotary-partial", "learned"]),
    seed=seeds,
    batch=st.integers(1, 3),
    length=lengths,
    shift=st.floats(-50, 50),
)
def test_all_ones_is_the_identity(kind: str, seed: int, batch: int, length: int, shift: float):
    model = tiny_model(kind, seed=seed % 7)  # type: ignore[arg-type]
    tokens = _tokens(seed, batch, length)
    start = shift if kind != "learned" else 0.0  # rotary is shift-invariant; tables are not
    with torch.no_grad():
        plain = model(tokens)
        with continuous(model, Durations.ones(1, length, start=start)):
            cont = model(tokens)
    torch.testing.assert_close(cont, plain, atol=2e-4, rtol=1e-4)


@SETTINGS
@given(seed=seeds, length=lengths, data=st.data())
def test_integer_duration_equals_repetition(seed: int, length: int, data: st.DataObject):
    model = tiny_model("nopos", n_layers=1, attn_only=True, seed=seed % 5)
    tokens = _tokens(seed, 1, length)
    j = data.draw(st.integers(0, length - 2), label="token")  # not the last (the readout)
    k = data.draw(st.integers(0, 3), label="repetitions")
    if j == 0 and k == 0:
        k = 2  # the first token cannot vanish: the query of position 0 would see nothing
    d = torch.ones(length)
    d[j] = float(k)
    repeated = torch.cat([tokens[:, :j], tokens[:, j : j + 1].repeat(1, k), tokens[:, j + 1 :]], 1)
    with torch.no_grad():
        with continuous(model, d):
            cont = model(tokens)
        plain = model(repeated)
    # every position after the duplicated token corresponds one to one
    after = length - j - 1
    torch.testing.assert_close(cont[:, -after:], plain[:, -after:], atol=1e-4, rtol=1e-4)


@SETTINGS
@given(
    seed=seeds,
    length=lengths,
    scale=st.floats(1e-3, 1e3),
    data=st.data(),
)
def test_scaling_leaves_attention_patterns_unchanged(
    seed: int, length: int, scale: float, data: st.DataObject
):
    values = data.draw(
        st.lists(st.floats(0.05, 20.0), min_size=length, max_size=length), label="durations"
    )
    d = torch.tensor(values, dtype=torch.float64)
    tokens = _tokens(seed, 2, length)
    model = tiny_model("rotary", seed=seed % 5)
    with torch.no_grad():
        with continuous(model, d, positions=False):
            before = _patterns(model, tokens)
        with continuous(model, d * scale, positions=False):
            after = _patterns(model, tokens)
    for a, b in zip(after, before, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@SETTINGS
@given(seed=seeds, length=lengths, scale=st.floats(0.01, 4.0))
def test_scaling_without_positional_information(seed: int, length: int, scale: float):
    """With an all-zero position table, real positions (inside the table) change nothing."""
    model = tiny_model("nopos", n_layers=2, seed=seed % 5)
    d = torch.rand(length, generator=torch.Generator().manual_seed(seed)) + 0.1
    tokens = _tokens(seed, 1, length)
    with torch.no_grad():
        with continuous(model, d):
            before = _patterns(model, tokens)
        with continuous(model, d * scale):
            after = _patterns(model, tokens)
    for a, b in zip(after, before, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_the_duplication_property_can_fail() -> None:
    """With positions the equivalence does not hold: the property test has teeth."""
    model = tiny_model("learned", n_layers=1, attn_only=True)
    tokens = _tokens(0, 1, 5)
    d = torch.ones(5)
    d[1] = 2.0
    repeated = torch.cat([tokens[:, :2], tokens[:, 1:2], tokens[:, 2:]], 1)
    with torch.no_grad(), continuous(model, d, positions=False):
        cont = model(tokens)
    plain = model(repeated)
    with pytest.raises(AssertionError, match="Tensor-likes are not close"):
        torch.testing.assert_close(cont[:, -3:], plain[:, -3:], atol=1e-4, rtol=1e-4)
