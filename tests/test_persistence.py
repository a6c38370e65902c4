"""One persistence convention for every result type (and the ``_io`` helpers behind it).

Every result type has ``save(path) -> Path`` and ``load(path)``: tensors in safetensors, the
rest in JSON, a ``"<kind>/<version>"`` tag checked on load, atomic writes. For each type: a
round trip gives back equal fields; a file of another type, a damaged file and a file of
another version are refused with :class:`FormatError`; a failing save leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from safetensors import safe_open
from torch import Tensor

from tl_continuous import _io
from tl_continuous._io import FormatError
from tl_continuous.experiments import results
from tl_continuous.experiments.results import Sweep, SweepSet
from tl_continuous.lines_of_thought import (
    bases,
    compare,
    controls,
    duration_sweep,
    dynamics,
    ensemble,
    langevin,
    truncation,
)
from tl_continuous.lines_of_thought.bases import TrajectoryBases
from tl_continuous.lines_of_thought.compare import EnsembleComparison
from tl_continuous.lines_of_thought.controls import DynamicsSummary, LayerDiagnostics
from tl_continuous.lines_of_thought.duration_sweep import DurationSweepLines
from tl_continuous.lines_of_thought.dynamics import ResidualStatistics, VarianceLawFit
from tl_continuous.lines_of_thought.ensemble import LinesOfThought
from tl_continuous.lines_of_thought.langevin import LangevinModel
from tl_continuous.lines_of_thought.synthetic import linear_gaussian_ensemble
from tl_continuous.lines_of_thought.truncation import TruncationCurve, truncation_kl_last_layer
from tl_continuous.models import default_backend
from tl_continuous.testbed import experiment
from tl_continuous.testbed.experiment import CountingContinuityResult
from tl_continuous.tiny import tiny_bridge, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------ instances
@cache
def _model() -> Any:
    # the formats do not depend on the backend; TransformerLens 4 has only TransformerBridge
    if default_backend() == "bridge":
        return tiny_bridge("rotary", n_layers=2)
    return tiny_model("rotary", n_layers=2)


@cache
def _tokens() -> Tensor:
    return torch.randint(0, 50, (70, 5), generator=torch.Generator().manual_seed(0))


@cache
def _lines() -> LinesOfThought:
    lot = LinesOfThought.collect(_model(), _tokens(), progress=False)
    lot.metadata["note"] = ["a", 1, None, 2.5]
    return lot


@cache
def _bases() -> TrajectoryBases:
    return TrajectoryBases.from_ensemble(_lines())


@cache
def _synthetic() -> Any:
    return linear_gaussian_ensemble(n=60, n_layers=5, d_model=6, rank=3, seed=1)


@cache
def _statistics() -> ResidualStatistics:
    ens = _synthetic()
    return ResidualStatistics.from_tensors(ens.trajectories, ens.U, ens.S, progress=False)


@cache
def _fit() -> VarianceLawFit:
    return VarianceLawFit.from_statistics(_statistics())


def _langevin() -> LangevinModel:
    ens = _synthetic()
    return LangevinModel.from_fit(ens.U, ens.S, _fit())


def _truncation() -> TruncationCurve:
    curve = truncation_kl_last_layer(_model(), _lines(), _bases(), ks=[2, 8], progress=False)
    curve.metadata["model"] = "tiny"
    return curve


def _duration_sweep() -> DurationSweepLines:
    return DurationSweepLines.collect(
        _model(), _tokens(), _bases(), torch.tensor([1.0, 0.5]), k=2, progress=False
    )


def _comparison() -> EnsembleComparison:
    ens = _synthetic()
    return EnsembleComparison.from_tensors(
        ens.trajectories[:30, 2], ens.trajectories[30:, 2], n_permutations=3
    )


def _summary() -> DynamicsSummary:
    return DynamicsSummary.from_statistics("synthetic", _synthetic().trajectories, _statistics())


def _diagnostics() -> LayerDiagnostics:
    return LayerDiagnostics.from_statistics(_statistics(), _fit())


def _sweep(seed: int = 0) -> Sweep:
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(4, 10, generator=g, dtype=torch.float64).softmax(-1)
    return Sweep(
        experiment="counting",
        model_name="m",
        prompt="a a a",
        knob="c",
        grid=torch.linspace(0.1, 1.0, 4, dtype=torch.float64),
        labels=tuple(str(d) for d in range(10)),
        probs={"exact": probs, "contains": probs.flip(-1)},
        expected=3,
        span=(1, 4),
        distance=torch.rand(4, generator=g, dtype=torch.float64),
        meta={"word": "a", "items": [1, 2]},
    )


def _sweep_set() -> SweepSet:
    return SweepSet("counting", [_sweep(0), _sweep(1)], meta={"grid": 4})


def _counting() -> CountingContinuityResult:
    g = torch.Generator().manual_seed(0)
    return CountingContinuityResult(
        ns=[1, 2],
        cs=[0.5, 1.5],
        variants=["full", "fillers"],
        probs=torch.rand(2, 2, 2, 10, generator=g).softmax(-1),
        expected_std=torch.rand(2, 2, 2, generator=g),
        count_mass=torch.rand(2, 2, 2, generator=g),
        uneven_n=[1, 2],
        uneven_sum=torch.tensor([0.7, 2.1]),
        uneven_expected=torch.tensor([0.8, 1.9]),
        even_expected=torch.tensor([0.9, 2.0]),
        n_prompts=3,
        seed=4,
    )


@dataclass(frozen=True)
class Kind:
    """A result type, a factory of a small instance, its format tag and its container."""

    cls: type
    make: Callable[[], Any]
    tag: str
    tensors: bool

    def __str__(self) -> str:
        return self.cls.__name__


KINDS = [
    Kind(LinesOfThought, _lines, ensemble.FORMAT, True),
    Kind(TrajectoryBases, _bases, bases.FORMAT, True),
    Kind(DurationSweepLines, _duration_sweep, duration_sweep.FORMAT, True),
    Kind(LangevinModel, _langevin, langevin.FORMAT, True),
    Kind(TruncationCurve, _truncation, truncation.FORMAT, True),
    Kind(ResidualStatistics, _statistics, dynamics.STATISTICS_FORMAT, True),
    Kind(VarianceLawFit, _fit, dynamics.FIT_FORMAT, False),
    Kind(EnsembleComparison, _comparison, compare.FORMAT, False),
    Kind(DynamicsSummary, _summary, controls.SUMMARY_FORMAT, False),
    Kind(LayerDiagnostics, _diagnostics, controls.DIAGNOSTICS_FORMAT, False),
    Kind(Sweep, _sweep, results.SWEEP_FORMAT, False),
    Kind(SweepSet, _sweep_set, results.SWEEP_SET_FORMAT, False),
    Kind(CountingContinuityResult, _counting, experiment.FORMAT, False),
]
BY_NAME = {str(k): k for k in KINDS}
each_kind = pytest.mark.parametrize("kind", KINDS, ids=str)


def _suffix(kind: Kind) -> str:
    return ".safetensors" if kind.tensors else ".json"


def _saved(kind: Kind, folder: Path, name: str = "result") -> Path:
    return kind.make().save(folder / f"{name}{_suffix(kind)}")


# ------------------------------------------------------------------------------ equality
def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Recursive equality: same types, tensors equal in dtype, shape and values (NaN = NaN)."""
    if isinstance(a, float) and isinstance(b, float):  # numpy's float64 is a float too
        assert a == b or (math.isnan(a) and math.isnan(b)), f"{where}: {a!r} != {b!r}"
        return
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape}"
        assert torch.equal(a.isnan(), b.isnan()) if a.is_floating_point() else True, where
        keep = ~a.isnan() if a.is_floating_point() else torch.ones_like(a, dtype=torch.bool)
        assert torch.equal(a[keep], b[keep]), f"{where}: values differ"
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            if f.init:
                assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), f"{where}: lengths {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_assert_same_can_fail() -> None:
    s = _sweep()
    other = dataclasses.replace(s, distance=s.distance.float())
    with pytest.raises(AssertionError, match="distance"):
        assert_same(s, other)
    other = dataclasses.replace(s, meta={"word": "a", "items": (1, 2)})
    with pytest.raises(AssertionError, match="meta"):
        assert_same(s, other)
    with pytest.raises(AssertionError, match="kl_mean"):
        c = _truncation()
        assert_same(c, dataclasses.replace(c, kl_mean=c.kl_mean + 1e-12))


# ------------------------------------------------------------------------------ round trips
@each_kind
def test_round_trip(kind: Kind, tmp_path: Path) -> None:
    original = kind.make()
    path = original.save(tmp_path / "sub" / f"r{_suffix(kind)}")
    assert isinstance(path, Path) and path == tmp_path / "sub" / f"r{_suffix(kind)}"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left
    back = kind.cls.load(path)
    assert type(back) is kind.cls
    assert_same(original, back, kind.cls.__name__)
    assert kind.cls.load(str(path)) is not None  # a str path works too


@each_kind
def test_file_is_tagged_with_the_module_format(kind: Kind, tmp_path: Path) -> None:
    path = _saved(kind, tmp_path)
    assert _tag(path, kind) == _io.format_tag(kind.tag, 1)
    assert kind.tag.startswith("tl_continuous.")


def test_format_tags_are_distinct() -> None:
    tags = [k.tag for k in KINDS]
    assert len(set(tags)) == len(tags)


# ------------------------------------------------------------------------------ refusals
def _tag(path: Path, kind: Kind) -> str:
    if kind.tensors:
        with safe_open(str(path), framework="pt") as f:
            return str((f.metadata() or {})["format"])
    return str(json.loads(path.read_text())["format"])


def _retag(path: Path, kind: Kind, tag: str) -> None:
    """Rewrite the file at ``path`` with another format tag, the contents unchanged."""
    if kind.tensors:
        with safe_open(str(path), framework="pt") as f:
            header = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        safetensors.torch.save_file(tensors, str(path), metadata=header | {"format": tag})
    else:
        content = json.loads(path.read_text())
        path.write_text(json.dumps(content | {"format": tag}))


@each_kind
@pytest.mark.parametrize("other_container", ["safetensors", "json"])
def test_a_file_of_another_type_is_refused(
    kind: Kind, other_container: str, tmp_path: Path
) -> None:
    others = [k for k in KINDS if k is not kind and k.tensors == (other_container == "safetensors")]
    other = others[KINDS.index(kind) % len(others)]
    path = _saved(other, tmp_path, "other")
    with pytest.raises(FormatError, match=rf"{path}.*\b{kind.cls.__name__}\b"):
        kind.cls.load(path)


@each_kind
def test_another_version_is_refused(kind: Kind, tmp_path: Path) -> None:
    path = _saved(kind, tmp_path)
    _retag(path, kind, _io.format_tag(kind.tag, 2))
    with pytest.raises(FormatError, match=rf"{path} holds version 2 of {kind.cls.__name__}"):
        kind.cls.load(path)
    _retag(path, kind, _io.format_tag(kind.tag, 1))
    assert_same(kind.make(), kind.cls.load(path))  # the retagging itself changed nothing


@each_kind
@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_a_truncated_file_is_refused(kind: Kind, keep: float, tmp_path: Path) -> None:
    path = _saved(kind, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(FormatError, match=rf"{path}.*{kind.cls.__name__}"):
        kind.cls.load(path)


@each_kind
def test_a_tagged_file_with_missing_contents_is_refused(kind: Kind, tmp_path: Path) -> None:
    path = tmp_path / f"empty{_suffix(kind)}"
    if kind.tensors:
        _io.save_tensors(path, kind.tag, 1, {"unrelated": torch.zeros(1)}, {})
    else:
        _io.save_json(path, kind.tag, 1, {})
    with pytest.raises(FormatError, match=rf"{path} holds a damaged {kind.cls.__name__}"):
        kind.cls.load(path)


@each_kind
def test_a_missing_file_is_a_file_not_found_error(kind: Kind, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        kind.cls.load(tmp_path / f"nothing{_suffix(kind)}")


def test_plain_json_written_before_the_tag_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps(_sweep().to_dict()))
    with pytest.raises(FormatError, match=r"old.json is not a tl-continuous result.*Sweep"):
        Sweep.load(path)


# ------------------------------------------------------------------------------ failing saves
@each_kind
def test_save_under_a_file_writes_nothing(kind: Kind, tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("x")
    with pytest.raises(OSError, match="blocker"):
        kind.make().save(tmp_path / "blocker" / f"r{_suffix(kind)}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]
    assert (tmp_path / "blocker").read_text() == "x"


@each_kind
@pytest.mark.parametrize("where", ["writer", "rename"])
def test_a_failing_save_leaves_the_folder_as_it_was(
    kind: Kind, where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = kind.make()
    target = tmp_path / f"r{_suffix(kind)}"
    target.write_bytes(b"previous contents")

    def half_then_fail(path: Any, *args: Any, **kwargs: Any) -> None:
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    def half_then_fail_tensors(tensors: Any, filename: str, **kwargs: Any) -> None:
        half_then_fail(filename)

    def no_rename(*args: Any, **kwargs: Any) -> None:
        raise OSError("rename failed")

    if where == "rename":
        monkeypatch.setattr(os, "replace", no_rename)
    elif kind.tensors:
        monkeypatch.setattr(safetensors.torch, "save_file", half_then_fail_tensors)
    else:
        monkeypatch.setattr(pathlib.Path, "write_text", half_then_fail)
    with pytest.raises(OSError, match=r"disk full|rename failed"):
        result.save(target)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
    assert target.read_bytes() == b"previous contents"


# ------------------------------------------------------------------------------ _io itself
def test_format_tag_and_json_safe() -> None:
    assert _io.format_tag("a.b", 3) == "a.b/3"
    assert _io.json_safe({1: (2, None), "x": [1.5, True], "t": torch.float32}) == {
        "1": [2, None],
        "x": [1.5, True],
        "t": "torch.float32",
    }


def test_atomic_write_creates_parents_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = _io.write_text(tmp_path / "a" / "b" / "f.txt", "hello")
    assert path.read_text() == "hello"
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert (path.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)


def test_atomic_write_failure_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("old")

    def fail(tmp: Path) -> None:
        tmp.write_text("new but broken")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _io.atomic_write(path, fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    with pytest.raises(IsADirectoryError, match="folder"):
        _io.write_text(tmp_path, "x")


def test_json_round_trip_and_tag_checks(tmp_path: Path) -> None:
    path = _io.save_json(tmp_path / "x.json", "demo", 1, {"a": [1, 2.5, None]})
    assert json.loads(path.read_text()) == {"format": "demo/1", "data": {"a": [1, 2.5, None]}}
    assert _io.load_json(path, "demo", 1) == {"a": [1, 2.5, None]}
    with pytest.raises(FormatError, match=r"holds version 1 of Demo \(demo\).*reads version 2"):
        _io.load_json(path, "demo", 2, "Demo")
    with pytest.raises(FormatError, match=r"is not a Other file \(its format is 'demo/1'\)"):
        _io.load_json(path, "other", 1, "Other")
    path.write_text("[1, 2]")
    with pytest.raises(FormatError, match="no format tag"):
        _io.load_json(path, "demo", 1)
    path.write_bytes(b"\xff\xfe not text")
    with pytest.raises(FormatError, match="not a readable JSON file"):
        _io.load_json(path, "demo", 1)
    with pytest.raises(FileNotFoundError, match=r"missing.json does not exist"):
        _io.load_json(tmp_path / "missing.json", "demo", 1)


def test_tensors_round_trip_and_tag_checks(tmp_path: Path) -> None:
    x = torch.arange(12, dtype=torch.int16).reshape(3, 4).T  # not contiguous
    y = torch.randn(2, dtype=torch.float64)
    fields = {"name": "n", "shape": (1, 2), "nested": {"k": [None, 1.5]}}
    path = _io.save_tensors(tmp_path / "t.safetensors", "demo", 1, {"x": x, "y": y}, fields)
    back_fields, back = _io.load_tensors(path, "demo", 1)
    assert back_fields == {"name": "n", "shape": [1, 2], "nested": {"k": [None, 1.5]}}
    assert back["x"].dtype == torch.int16 and torch.equal(back["x"], x)
    assert torch.equal(back["y"], y)
    with pytest.raises(FormatError, match="holds version 1 of Demo"):
        _io.load_tensors(path, "demo", 7, "Demo")
    with pytest.raises(FormatError, match="is not a Other file"):
        _io.load_tensors(path, "other", 1, "Other")
    json_file = _io.save_json(tmp_path / "j.json", "demo", 1, {})
    with pytest.raises(FormatError, match=r"not a readable safetensors file.*expected a Demo"):
        _io.load_tensors(json_file, "demo", 1, "Demo")


def test_reading_turns_content_errors_into_format_errors() -> None:
    damaged = r"path p.bin holds a damaged Thing \(KeyError: 'a'\)"
    with pytest.raises(FormatError, match=damaged), _io.reading("p.bin", "Thing"):
        {}["a"]
    with pytest.raises(FormatError, match="ValueError: bad shape"), _io.reading("p", "Thing"):
        raise ValueError("bad shape")
    # not a content error: passes through unchanged
    with pytest.raises(RuntimeError, match=r"^other$"), _io.reading("p", "Thing"):
        raise RuntimeError("other")
    assert issubclass(FormatError, ValueError)
