"""The count / experiment subcommands and the demo's --quick flag."""

from __future__ import annotations

import json

import pytest

from tl_continuous.cli import build_parser, main
from tl_continuous.experiments.results import Sweep, SweepSet
from tl_continuous.views import export
from tl_continuous.views.export import png_export_available


def test_parser_accepts_the_documented_commands(capsys):
    p = build_parser()
    args = p.parse_args(["count", "--word", "dog", "--n", "3", "--steps", "10", "--out", "x"])
    assert (args.word, args.n, args.steps, str(args.out)) == ("dog", 3, 10, "x")
    args = p.parse_args(["experiment", "boolean", "--steps", "5", "--threads", "1"])
    assert (args.name, args.steps, args.threads) == ("boolean", 5, 1)
    assert p.parse_args(["demo", "--quick"]).quick
    with pytest.raises(SystemExit, match="2"):
        p.parse_args(["experiment", "nonsense"])
    assert "invalid choice: 'nonsense'" in capsys.readouterr().err


@pytest.mark.model
def test_count_writes_json_and_html(tmp_path, capsys):
    assert (
        main(
            [
                "count",
                "--word",
                "dog",
                "--n",
                "3",
                "--steps",
                "3",
                "--out",
                str(tmp_path),
                "--no-progress",
                *(["--png"] if png_export_available() else []),
            ]
        )
        == 0
    )
    sweep = Sweep.load(tmp_path / "count_dog_3.json")
    assert sweep.expected == 3 and sweep.grid.numel() == 3
    assert (tmp_path / "count_dog_3.html").stat().st_size > 10_000
    if png_export_available():
        assert (tmp_path / "count_dog_3.png").read_bytes()[:4] == b"\x89PNG"
    assert "3-point counting sweep" in capsys.readouterr().out


@pytest.mark.model
def test_experiment_translation_writes_results(tmp_path, capsys):
    assert (
        main(["experiment", "translation", "--steps", "2", "--out", str(tmp_path), "--no-progress"])
        == 0
    )
    sweep = Sweep.load(tmp_path / "translation.json")
    assert sweep.grid.tolist() == [0.0, 1.0]
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index("{") : printed.rindex("}") + 1])["max_distance"] < 1e-3


@pytest.mark.model
@pytest.mark.slow
def test_demo_quick_on_the_bridge(tmp_path):
    """The same files on a ``TransformerBridge`` (tests/test_report.py checks them for the
    default ``HookedTransformer``, from the run that writes the report)."""
    argv = ["demo", "--quick", "--no-report", "--backend", "bridge", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert Sweep.load(tmp_path / "count_apple_4.json").grid.numel() == 10
    assert len(SweepSet.load(tmp_path / "boolean_AND_OR.json")) == 4


def test_png_without_a_renderer_fails_before_loading_the_model(tmp_path, monkeypatch, capsys):
    import tl_continuous.models

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before --png was checked")

    monkeypatch.setattr(tl_continuous.models, "load_model", no_load)
    monkeypatch.setattr(export, "_missing", lambda: "kaleido is not installed")
    with pytest.raises(SystemExit, match="2") as exit_info:
        main(["count", "--png", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--png: cannot export a PNG: kaleido is not installed" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.model
def test_experiment_boolean_says_which_pairs_were_not_blended(tmp_path, capsys):
    argv = ["experiment", "boolean", "--steps", "3", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    result = SweepSet.load(tmp_path / "boolean.json")
    printed = capsys.readouterr().out
    skipped = result.meta["skipped"]
    assert skipped, "on SmolLM2 NAND and XOR are two tokens, AND/OR/NOR one"
    assert printed.count("not blended:") == len(skipped)
    assert all(s["reason"] in printed for s in skipped)
