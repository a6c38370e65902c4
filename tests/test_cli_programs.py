"""The programs behind ``tl-continuous report``, ``collect`` and ``train-testbed``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tl_continuous.cli import build_parser, command_line, main
from tl_continuous.reports import dynamics, features, lines_of_thought

DOCS = Path(__file__).parents[1] / "docs"


@pytest.mark.parametrize(
    ("program", "stem", "command"),
    [
        (lines_of_thought, "results_lines_of_thought", "report lines-of-thought --threads 1"),
        (dynamics, "results_dynamics", "report dynamics --threads 1"),
        (features, "results_features", "report features"),
    ],
    ids=["lines-of-thought", "dynamics", "features"],
)
def test_results_files_are_generated_whole(program, stem, command) -> None:
    """The committed markdown is exactly what its generator writes from the JSON beside it
    (so a rerun wipes nothing), and links the hand-written analysis."""
    results = json.loads((DOCS / f"{stem}.json").read_text())
    expected = program.render_markdown(results, command_line(command.split()))
    assert (DOCS / f"{stem}.md").read_text() == expected, (
        f"docs/{stem}.md differs from its generator's output: move hand-written text to "
        f"docs/{program.ANALYSIS}, then run `tl-continuous {command} --render-only`"
    )
    assert (DOCS / program.ANALYSIS).is_file() and f"]({program.ANALYSIS})" in expected


def test_render_only_rewrites_the_markdown_from_the_json(tmp_path, capsys) -> None:
    out = tmp_path / "results.md"
    shutil.copy(DOCS / "results_dynamics.json", out.with_suffix(".json"))
    argv = ["report", "dynamics", "--out", str(out), "--render-only"]
    assert main(argv) == 0
    text = out.read_text()
    assert f"tl-continuous report dynamics --out {out}\n" in text
    assert "--render-only" not in text and "wrote" in capsys.readouterr().out


def test_every_program_parses(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for argv in (
        ["report", "lines-of-thought", "--n", "8", "--worker", "1", "--n-workers", "2"],
        ["report", "dynamics", "--fit-layers", "2", "8", "--skip-controls"],
        ["report", "testbed", "--n-prompts", "2"],
        ["collect", "--text", "a.txt", "--n", "4", "--hook", "resid_pre"],
        ["train-testbed", "--steps", "2"],
        ["report", "features", "--n", "8", "--backend", "bridge"],
        ["train-sae", "--steps", "2", "--limit", "4"],
    ):
        args = parser.parse_args(argv)
        assert args.program
    with pytest.raises(SystemExit, match="2"):
        parser.parse_args(["collect", "--hook", "attn"])
    assert "invalid choice: 'attn'" in capsys.readouterr().err


def test_train_testbed_writes_a_checkpoint(tmp_path, capsys) -> None:
    out = tmp_path / "ckpt"
    argv = ["train-testbed", "--steps", "2", "--batch-size", "8", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "config.json", "training.json"}
    assert json.loads((out / "training.json").read_text())["steps"] == 2
    assert f"wrote {out}" in capsys.readouterr().out


@pytest.mark.model
def test_collect_writes_resumable_shards(tmp_path, capsys) -> None:
    text = tmp_path / "t.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    argv = ["collect", "--text", str(text), "--n", "6", "--n-tokens", "8", "--batch-size", "2"]
    argv += ["--out", str(tmp_path / "shards"), "--no-progress"]
    assert main([*argv, "--worker", "1", "--n-workers", "2"]) == 0
    assert "wrote 1 batch(es)" in capsys.readouterr().out
    assert main(argv) == 0  # resumes: only the batches of worker 0 are left
    printed = capsys.readouterr().out
    assert "wrote 2 batch(es)" in printed and "3 of 3 batches present" in printed
