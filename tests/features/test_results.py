"""The result types of the SAE-feature readings: shape checks, save/load round trips, files of
another kind refused."""

from __future__ import annotations

import pytest
import torch

from tl_continuous._io import FormatError
from tl_continuous.features.counting import CountFeatures
from tl_continuous.features.lines import LinesOfThoughtFeatures
from tl_continuous.features.quality import SAEQuality

NAMES = [f"blocks.{i}.hook_resid_post" for i in range(3)]

pytestmark = pytest.mark.usefixtures("one_thread")


def count_features(**changes) -> CountFeatures:
    gen = torch.Generator().manual_seed(0)
    values = {
        "values": torch.linspace(0.1, 1.0, 4, dtype=torch.float64),
        "last": torch.rand(4, 16, generator=gen),
        "span_mean": torch.rand(4, 16, generator=gen),
        "counts": torch.tensor([1, 2, 3]),
        "count_last": torch.rand(3, 16, generator=gen),
        "residual_nearest": torch.tensor([1, 2, 3, 3]),
        "label": "trained",
        "hook_name": NAMES[1],
        "word": "apple",
        "n": 4,
        "token_span": (5, 8),
        "metadata": {"prompt": "p"},
    }
    return CountFeatures(**(values | changes))


def lines_features(**changes) -> LinesOfThoughtFeatures:
    gen = torch.Generator().manual_seed(0)
    values = {
        "acts": torch.rand(10, 16, generator=gen),
        "layer_names": NAMES,
        "sae_layer": 1,
        "explained_variance": torch.tensor([0.1, 0.8, 0.3], dtype=torch.float64),
        "l0": torch.tensor([3.0, 4.0, 5.0], dtype=torch.float64),
        "tracked": torch.tensor([3, 1]),
        "tracked_mean": torch.rand(3, 2, generator=gen),
        "alignment": torch.rand(3, 2, 16, generator=gen),
        "ks": torch.tensor([1, 2, 8]),
        "kept": torch.tensor([0.2, 0.5, 1.0], dtype=torch.float64),
        "label": "trained",
        "hook_name": NAMES[1],
        "metadata": {"n_trajectories": 10},
    }
    return LinesOfThoughtFeatures(**(values | changes))


def quality(**changes) -> SAEQuality:
    values = {
        "explained_variance": 0.81,
        "l0": 32.0,
        "dead": 12,
        "d_sae": 2048,
        "n_tokens": 1000,
        "mse": 1.5,
        "label": "trained",
        "hook_name": NAMES[1],
        "ce_clean": 3.0,
        "ce_sae": 3.5,
        "ce_zero": 13.0,
    }
    return SAEQuality(**(values | changes))


def test_round_trips(tmp_path) -> None:
    c = count_features()
    back = CountFeatures.load(c.save(tmp_path / "c.safetensors"))
    for name in ("values", "last", "span_mean", "counts", "count_last", "residual_nearest"):
        assert torch.equal(getattr(back, name), getattr(c, name)), name
    assert (back.label, back.word, back.n, back.token_span) == ("trained", "apple", 4, (5, 8))
    assert back.summary() == c.summary()
    x = lines_features()
    again = LinesOfThoughtFeatures.load(x.save(tmp_path / "x.safetensors"))
    assert torch.equal(again.alignment, x.alignment) and again.layer_names == NAMES
    assert again.summary() == x.summary()
    q = quality()
    assert SAEQuality.load(q.save(tmp_path / "q.json")) == q
    assert q.loss_recovered == pytest.approx(0.95)
    assert CountFeatures.from_dict(c.to_dict()).token_span == (5, 8)


def test_files_of_another_kind_are_refused(tmp_path) -> None:
    path = count_features().save(tmp_path / "c.safetensors")
    with pytest.raises(FormatError, match="not a LinesOfThoughtFeatures file"):
        LinesOfThoughtFeatures.load(path)
    qpath = quality().save(tmp_path / "q.json")
    qpath.write_text(qpath.read_text().replace('"l0": 32.0', '"l0": -1'))
    with pytest.raises(FormatError, match="damaged SAEQuality"):
        SAEQuality.load(qpath)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"span_mean": torch.zeros(3, 16)}, "span_mean"),
        ({"counts": torch.tensor([1.0, 2.0, 3.0])}, "counts"),
        ({"last": torch.zeros(4)}, "last"),
    ],
)
def test_count_features_check_shapes(changes, message) -> None:
    # jaxtyping (TypeError) checks the shapes first in the test suite, __post_init__ otherwise
    with pytest.raises((ValueError, TypeError), match=message):
        count_features(**changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"alignment": torch.zeros(3, 2, 15)}, "alignment"),
        ({"sae_layer": 0}, "not the SAE's hook"),
        ({"kept": torch.zeros(2)}, "kept"),
        ({"tracked_mean": torch.zeros(2, 2)}, "tracked_mean"),
    ],
)
def test_lines_features_check_shapes(changes, message) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        lines_features(**changes)


def test_readouts_of_hand_made_results() -> None:
    c = count_features(
        last=torch.tensor([[0.0, 1.0], [0.0, 2.0], [1.0, 3.0], [0.0, 4.0]]),
        span_mean=torch.zeros(4, 2),
        count_last=torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]]),
    )
    assert c.variation().tolist() == [2.0, 3.0]
    assert c.top_varying(2).tolist() == [1, 0]
    assert c.count_tracking().tolist() == [1]  # feature 0 is never active at a plain count
    assert c.count_correlation()[1] == pytest.approx(1.0)
    assert c.nearest_count().tolist() == [1, 2, 3, 3]
    assert c.c_correlation("span").tolist() == [0.0, 0.0]  # constant: no correlation
    with pytest.raises(ValueError, match="where"):
        c.variation("middle")
    x = lines_features()
    best, which = x.max_alignment()
    assert best.shape == (3, 2) and torch.equal(which, x.alignment.abs().argmax(dim=-1))


def test_quality_checks() -> None:
    with pytest.raises(ValueError, match="dead"):
        quality(dead=4000)
    with pytest.raises(ValueError, match="finite"):
        quality(explained_variance=float("nan"))
    assert quality(ce_zero=None).loss_recovered is None
