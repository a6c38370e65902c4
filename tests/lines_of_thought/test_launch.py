"""Collection under launchers: worker places from the environment, torchrun, SLURM arrays.

The torchrun tests start ``python -m torch.distributed.run --standalone --nproc_per_node=2``
over ``torchrun_worker.py`` (a tiny model built from a fixed seed in every process, on the
CPU, gloo) and compare the merged folder, tensor by tensor and bit for bit, with a
single-process collection of the same token ids.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tl_continuous
from tl_continuous.lines_of_thought.collect import COMPLETE, collect_trajectories, load_shards
from tl_continuous.lines_of_thought.launch import (
    WorkerPlace,
    collect_launched,
    worker_device,
    worker_from_env,
)

from . import torchrun_worker

WORKER = Path(torchrun_worker.__file__)
REPO = Path(tl_continuous.__file__).resolve().parents[1]


# ------------------------------------------------------------------ worker places
@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, WorkerPlace(0, 1, "single")),
        ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, WorkerPlace(3, 4, "torchrun", 1)),
        ({"RANK": "0", "WORLD_SIZE": "1"}, WorkerPlace(0, 1, "torchrun")),
        ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "5"}, WorkerPlace(2, 5, "slurm")),
        (  # --array=1-5: ids start at SLURM_ARRAY_TASK_MIN
            {
                "SLURM_ARRAY_TASK_ID": "1",
                "SLURM_ARRAY_TASK_COUNT": "5",
                "SLURM_ARRAY_TASK_MIN": "1",
            },
            WorkerPlace(0, 5, "slurm"),
        ),
        (  # --array=10-16:3 -> ids 10, 13, 16
            {
                "SLURM_ARRAY_TASK_ID": "16",
                "SLURM_ARRAY_TASK_COUNT": "3",
                "SLURM_ARRAY_TASK_MIN": "10",
                "SLURM_ARRAY_TASK_STEP": "3",
            },
            WorkerPlace(2, 3, "slurm"),
        ),
        ({"SLURM_JOB_ID": "77", "SLURM_PROCID": "0"}, WorkerPlace(0, 1, "single")),  # no array
    ],
    ids=["none", "torchrun", "torchrun-1", "slurm", "slurm-min", "slurm-step", "slurm-no-array"],
)
def test_worker_from_env(environ: dict[str, str], expected: WorkerPlace) -> None:
    assert worker_from_env(environ=environ) == expected


def test_explicit_values_override_the_environment() -> None:
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}
    assert worker_from_env(0, 3, environ=env) == WorkerPlace(0, 3, "explicit")
    assert worker_from_env(worker=0, environ=env) == WorkerPlace(0, 2, "explicit")
    assert worker_from_env(n_workers=5, environ=env) == WorkerPlace(1, 5, "explicit")
    both = {**env, "SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2"}
    assert worker_from_env(1, 2, environ=both) == WorkerPlace(1, 2, "explicit")


@pytest.mark.parametrize(
    ("kwargs", "environ", "message"),
    [
        ({}, {"RANK": "x", "WORLD_SIZE": "2"}, r"RANK must be an integer \(got 'x'\)"),
        ({}, {"RANK": "2", "WORLD_SIZE": "2"}, r"RANK must be in \[0, WORLD_SIZE=2\) \(got 2\)"),
        ({}, {"RANK": "0", "WORLD_SIZE": "0"}, r"WORLD_SIZE must be an integer >= 1 \(got 0\)"),
        ({}, {"RANK": "-1", "WORLD_SIZE": "2"}, r"RANK must be an integer >= 0 \(got -1\)"),
        (
            {},
            {"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "3"},
            r"SLURM_ARRAY_TASK_ID=9 is not one of the 3 tasks",
        ),
        (
            {},
            {
                "SLURM_ARRAY_TASK_ID": "0",
                "SLURM_ARRAY_TASK_COUNT": "3",
                "SLURM_ARRAY_TASK_MIN": "1",
            },
            r"SLURM_ARRAY_TASK_ID=0 is not one of the 3 tasks SLURM_ARRAY_TASK_MIN=1",
        ),
        (
            {},
            {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "two"},
            r"SLURM_ARRAY_TASK_COUNT must be an integer \(got 'two'\)",
        ),
        (
            {},
            {
                "RANK": "0",
                "WORLD_SIZE": "2",
                "SLURM_ARRAY_TASK_ID": "0",
                "SLURM_ARRAY_TASK_COUNT": "2",
            },
            r"both torchrun .* and a SLURM array .* give worker and n_workers",
        ),
        ({"worker": 2, "n_workers": 2}, {}, r"worker must be in \[0, n_workers=2\) \(got 2\)"),
        ({"worker": 0, "n_workers": 0}, {}, r"n_workers must be a positive integer \(got 0\)"),
        ({"worker": 3}, {"RANK": "0", "WORLD_SIZE": "2"}, r"worker must be in \[0, n_workers=2\)"),
    ],
)
def test_bad_worker_places_are_named(
    kwargs: dict[str, object], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        worker_from_env(**kwargs, environ=environ)  # type: ignore[arg-type]


def test_worker_device() -> None:
    assert worker_device(WorkerPlace(3, 4, "torchrun", 1), cuda=True) == "cuda:1"
    assert worker_device(WorkerPlace(3, 4, "torchrun", 1), cuda=False) == "cpu"
    assert worker_device(WorkerPlace(0, 2, "slurm"), cuda=True) == "cuda"
    assert worker_device(WorkerPlace(0, 2, "slurm"), cuda=False) == "cpu"


def test_bad_place_leaves_no_folder(tmp_path: Path) -> None:
    model, tokens = torchrun_worker.inputs()
    with pytest.raises(ValueError, match=r"RANK must be in \[0, WORLD_SIZE=2\)"):
        collect_launched(model, tokens, tmp_path / "s", environ={"RANK": "5", "WORLD_SIZE": "2"})
    assert not (tmp_path / "s").exists()
    assert not model.hook_dict["blocks.0.hook_resid_post"].fwd_hooks


# ------------------------------------------------------------------ SLURM arrays
def _reference() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    model, tokens = torchrun_worker.inputs()
    before = torch.get_num_threads()
    try:
        got = collect_trajectories(
            model, tokens, batch_size=torchrun_worker.BATCH_SIZE, progress=False
        )
    finally:
        torch.set_num_threads(before)
    return got.trajectories, got.tokens, got.pilot_positions


def _assert_bit_equal(folder: Path) -> None:
    merged = load_shards(folder)
    trajectories, tokens, pilots = _reference()
    assert merged.trajectories.shape == trajectories.shape  # none lost, none duplicated
    assert torch.equal(merged.tokens, tokens)
    assert torch.equal(merged.pilot_positions, pilots)
    assert torch.equal(merged.trajectories, trajectories)  # bit for bit
    complete = json.loads((folder / COMPLETE).read_text())
    assert complete["n_sequences"] == torchrun_worker.N_SEQUENCES


def test_slurm_array_tasks_share_the_folder(tmp_path: Path) -> None:
    """Three array tasks (``--array=4-6``) in turn: the last one verifies and marks the folder."""
    model, tokens = torchrun_worker.inputs()
    folder = tmp_path / "shards"
    done = []
    for task in (5, 4, 6):
        env = {
            "SLURM_ARRAY_TASK_ID": str(task),
            "SLURM_ARRAY_TASK_COUNT": "3",
            "SLURM_ARRAY_TASK_MIN": "4",
        }
        done.append(
            collect_launched(model, tokens, folder, environ=env, batch_size=3, progress=False)
        )
        assert (folder / COMPLETE).exists() == (len(done) == 3)
    assert [d.ran for d in done] == [[1, 4, 7], [0, 3, 6], [2, 5]]
    assert [d.verified is not None for d in done] == [False, False, True]
    _assert_bit_equal(folder)


# ------------------------------------------------------------------ torchrun
def _torchrun(tmp_path: Path, *extra: str) -> tuple[Path, dict[str, dict[str, object]]]:
    folder, logs = tmp_path / "shards", tmp_path / "logs"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU, gloo, whatever the machine has
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        *[e for e in extra if e.startswith("--max")],
        str(WORKER), str(folder), str(logs), *[e for e in extra if not e.startswith("--max")],
    ]  # fmt: skip
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    records = {p.stem: json.loads(p.read_text()) for p in sorted(logs.glob("*.json"))}
    return folder, records


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process(tmp_path: Path) -> None:
    folder, records = _torchrun(tmp_path)
    assert set(records) == {"rank0-restart0", "rank1-restart0"}
    r0, r1 = records["rank0-restart0"], records["rank1-restart0"]
    assert (r0["worker"], r1["worker"], r0["n_workers"]) == (0, 1, 2)
    assert (r0["launcher"], r0["local_rank"], r1["local_rank"]) == ("torchrun", 0, 1)
    assert r0["ran"] == [0, 2, 4, 6] and r1["ran"] == [1, 3, 5, 7]
    assert r0["verified"] is not None and r1["verified"] is None  # rank 0 verifies, once
    _assert_bit_equal(folder)


@pytest.mark.slow
def test_torchrun_killed_rank_restarts_and_resumes(tmp_path: Path) -> None:
    folder, records = _torchrun(tmp_path, "--max-restarts=1", "--kill-rank", "1")
    # the first attempt of rank 1 died (no log) after writing batch 1; torchrun restarted both
    assert "rank1-restart0" not in records
    r0, r1 = records["rank0-restart1"], records["rank1-restart1"]
    assert r1["ran"] == [3, 5, 7]  # resumed: batch 1 was not recomputed
    assert set(r0["ran"]) <= {0, 2, 4, 6}
    assert r0["verified"] is not None
    _assert_bit_equal(folder)


# ------------------------------------------------------------------ the command
@pytest.mark.model
def test_collect_command_takes_its_place_from_a_slurm_array(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tl_continuous.cli import main

    text = tmp_path / "t.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    out = tmp_path / "shards"
    argv = ["collect", "--text", str(text), "--n-sentences", "6", "--n-tokens", "8"]
    argv += ["--batch-size", "2", "--out", str(out), "--no-progress"]
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "worker 1 of 2 (slurm, cpu): wrote 1 batch(es)" in printed
    assert "1 of 3 batches present (other workers' batches missing)" in printed
    assert not (out / COMPLETE).exists()
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")  # the flags win over the environment
    assert main([*argv, "--worker", "0", "--n-workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert "worker 0 of 2 (explicit, cpu): wrote 2 batch(es)" in printed
    assert "verified 6 trajectories x 30 layers x 576 in 3 shards" in printed
    assert (out / COMPLETE).is_file()
    assert main(argv) == 2  # task 7 of 2: named, nothing written
    assert "SLURM_ARRAY_TASK_ID=7 is not one of the 2 tasks" in capsys.readouterr().err
