"""Collection under launchers: worker places from the environment, torchrun, SLURM arrays.

The torchrun tests start ``python -m torch.distributed.run --standalone --nproc_per_node=2``
over ``torchrun_worker.py`` (a tiny model built from a fixed seed in every process, on the
CPU, gloo) and compare the merged folder, tensor by tensor and bit for bit, with a
single-process collection of the same token ids.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import tl_continuous
from tl_continuous.lines_of_thought.collect import (
    COMPLETE,
    batch_owner,
    collect_trajectories,
    load_shards,
)
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


# ------------------------------------------------------------------ torchrun: the waits
def test_torchrun_waits_are_bounded_and_name_what_is_missing(tmp_path: Path) -> None:
    """The waits of two ranks, run in turn in this process with a short ``barrier_timeout``."""
    model, tokens = torchrun_worker.inputs()
    folder = tmp_path / "shards"
    kw = {"batch_size": torchrun_worker.BATCH_SIZE, "progress": False}
    kw["barrier_timeout"] = datetime.timedelta(seconds=0.2)
    rank0, rank1 = ({"RANK": str(r), "WORLD_SIZE": "2"} for r in (0, 1))
    missing = r"4 of 8 batches are still missing \(1, 3, 5, 7; rank\(s\) 1\)"
    with pytest.raises(TimeoutError, match=rf"rank 0 of 2 waited 0:00:00.200000 .*{missing}"):
        collect_launched(model, tokens, folder, environ=rank0, **kw)
    assert not (folder / COMPLETE).exists()
    with pytest.raises(TimeoutError, match=r"rank 1 of 2 waited .* for rank 0 to verify"):
        collect_launched(model, tokens, folder, environ=rank1, **kw)  # all there, unverified
    done0 = collect_launched(model, tokens, folder, environ=rank0, **kw)
    done1 = collect_launched(model, tokens, folder, environ=rank1, **kw)
    assert (done0.ran, done1.ran, done1.verified) == ([], [], None)  # resumed: nothing rerun
    assert done0.verified is not None and done0.present == done1.present == 8
    _assert_bit_equal(folder)


def test_barrier_timeout_must_be_positive(tmp_path: Path) -> None:
    model, tokens = torchrun_worker.inputs()
    zero = datetime.timedelta(0)
    with pytest.raises(ValueError, match=r"barrier_timeout must be a positive datetime.timedelta"):
        collect_launched(model, tokens, tmp_path / "s", environ={}, barrier_timeout=zero)
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------ torchrun: launches
# Each launch runs ``python -m torch.distributed.run --standalone --nproc_per_node=2`` over
# torchrun_worker.py in a session of its own. torchrun starts every worker in a session of its
# own too, so killing the launcher's group does not reach them: the cleanup also kills any
# process whose command line holds the test's tmp_path, and each test asserts there is none
# left once a launch has ended.
LAUNCH_TIMEOUT = 240  # seconds for one launch, restarts included


def _marker(tmp_path: Path) -> str:
    """What the command lines of a test's launcher and workers hold (its folders' parent)."""
    return f"{tmp_path}{os.sep}"


def _processes_of(marker: str) -> list[int]:
    """Live processes (zombies excluded) whose command line holds ``marker``, this one aside."""
    if not Path("/proc").is_dir():
        ps = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True)
        rows = (line.split(None, 2) for line in ps.stdout.splitlines())
        return [int(r[0]) for r in rows if len(r) == 3 and marker in r[2] and "Z" not in r[1]]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to read
            if marker.encode() in (entry / "cmdline").read_bytes():  # empty for a zombie
                found.append(int(entry.name))
    return found


def _kill_launch(proc: subprocess.Popen[str], marker: str) -> str:
    """End a launch whatever its state; return what it printed."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # torchrun stops its workers on SIGTERM
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    for pid in _processes_of(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return proc.communicate()[0]  # returns once no worker holds the pipe


Start = Callable[..., "subprocess.Popen[str]"]


@pytest.fixture
def torchrun(tmp_path: Path) -> Iterator[Start]:
    """``start(logs, *faults, max_restarts=0)``: a torchrun launch over the worker, writing into
    ``tmp_path / "shards"``; every launch is ended at teardown, leftovers included."""
    started: list[subprocess.Popen[str]] = []
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU, whatever the machine has

    def start(logs: Path, *faults: str, max_restarts: int = 0) -> subprocess.Popen[str]:
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            f"--max-restarts={max_restarts}", str(WORKER), str(tmp_path / "shards"), str(logs),
            *[f"--fault={f}" for f in faults],
        ]  # fmt: skip
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
        started.append(proc)
        return proc

    yield start
    for proc in started:
        _kill_launch(proc, _marker(tmp_path))


def _finish(proc: subprocess.Popen[str], marker: str, timeout: float = LAUNCH_TIMEOUT) -> str:
    """Wait for a launch; on time out kill it (leftovers included) and fail with its output."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        output = _kill_launch(proc, marker)
        pytest.fail(f"the launch ran past {timeout} s and was killed:\n{output[-6000:]}")


def _events(logs: Path) -> list[tuple[int, int, str]]:
    """``(attempt, rank, what)`` for each line of the worker's events.txt."""
    path = logs / "events.txt"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [(int(a), int(r), what) for a, r, what in (line.split(" ", 2) for line in lines)]


def _writes(*logs: Path) -> list[int]:
    """The batches written, in the order of the launches' logs."""
    return [int(what.split()[1]) for log in logs for _, _, what in _events(log) if "wrote" in what]


def _records(logs: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(logs.glob("rank*.json"))}


def _assert_written_once_by_owner(*logs: Path) -> None:
    """Every batch written exactly once, by its own rank: a finished shard is never redone."""
    assert sorted(_writes(*logs)) == list(range(torchrun_worker.N_BATCHES))
    for log in logs:
        for _, rank, what in _events(log):
            if "wrote" in what:
                assert batch_owner(int(what.split()[1]), 2) == rank


@pytest.mark.slow
def test_torchrun_restarts_resume_whatever_the_order(tmp_path: Path, torchrun: Start) -> None:
    """One launch, five attempts, one way of dying each (``--max-restarts=4``).

    0. both ranks are killed, each after its first shard;
    1. rank 1 is killed once rank 0 has finished and waits for it (the order in which the
       restarted gloo group of the former barrier could not connect, or hung);
    2. rank 0 is killed while it verifies the folder;
    3. rank 0 is killed after rank 1 has verified-and-left with exit code 0;
    4. nothing: both ranks skip every batch, rank 0 verifies again.

    These torchrun tests ran 20 times in a row on the 2-core test machine, then 20 times more
    while a second pytest process loaded its cores, with this loop (from the repository)::

        for i in $(seq 20); do
            nice python -m pytest -q -p no:cacheprovider \\
                tests/lines_of_thought/test_launch.py -k torchrun
            echo "$i rc=$? left=$(pgrep -fc lines_of_thought/torchrun_[w]orker)"
        done
        # the load, in a second shell, for as long as the loop runs:
        while :; do nice python -m pytest -q -p no:cacheprovider \\
            tests/lines_of_thought/test_shards.py tests/lines_of_thought/test_streaming.py; done
    """
    logs, marker = tmp_path / "logs", _marker(tmp_path)
    faults = ("0@0:first-shard", "1@0:first-shard", "1@1:peers-done", "0@2:verify", "0@3:exit")
    proc = torchrun(logs, *faults, max_restarts=4)
    output = _finish(proc, marker)
    assert proc.returncode == 0, output[-6000:]
    assert _processes_of(marker) == []  # torchrun's workers are all gone
    _assert_written_once_by_owner(logs)
    assert {attempt for attempt, _, what in _events(logs) if "wrote" in what} <= {0, 1, 2}
    records = _records(logs)  # attempts 0-2 died before logging, 3 logged before dying
    assert set(records) == {f"rank{r}-restart{a}" for r in (0, 1) for a in (3, 4)}
    assert records["rank0-restart3"]["verified"] is not None
    r0, r1 = records["rank0-restart4"], records["rank1-restart4"]
    assert (r0["ran"], r1["ran"]) == ([], [])
    assert r0["verified"] is not None and r1["verified"] is None  # rank 0 verifies
    assert (r0["launcher"], r0["local_rank"], r1["local_rank"]) == ("torchrun", 0, 1)
    assert output.count("stopped by SIGTERM") >= 2  # rank 0 in attempt 1, rank 1 in 2
    _assert_bit_equal(folder=tmp_path / "shards")


def _wait_for_events(proc: subprocess.Popen[str], logs: Path, wanted: set[str]) -> None:
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    while not wanted <= {f"{r} {what}" for _, r, what in _events(logs)}:
        assert proc.poll() is None, f"the launch ended first:\n{proc.communicate()[0][-6000:]}"
        assert time.monotonic() < deadline, f"no {wanted} after {LAUNCH_TIMEOUT} s"
        time.sleep(0.1)


@pytest.mark.slow
def test_failed_torchrun_launches_leave_no_process_and_a_resumable_folder(
    tmp_path: Path, torchrun: Start
) -> None:
    """Three launches into one folder: restarts exhausted, launcher killed, then resumed."""
    folder, marker = tmp_path / "shards", _marker(tmp_path)
    # 1. rank 1 dies once rank 0 waits for it, and no restart is left: rank 0 is stopped
    logs1 = tmp_path / "logs1"
    proc = torchrun(logs1, "1@0:peers-done", max_restarts=0)
    output = _finish(proc, marker)
    assert proc.returncode != 0
    assert sorted(_writes(logs1)) == [0, 1, 2, 4, 6]
    assert _processes_of(marker) == []
    assert "rank 0 of 2 stopped by SIGTERM (torchrun attempt 1 of 1)" in output
    assert f"shard(s) in {folder} are kept; no restart is left (--max-restarts)" in output
    assert not (folder / COMPLETE).exists()
    # 2. the launcher itself is killed (SIGKILL) while rank 1 hangs and rank 0 waits for it
    logs2 = tmp_path / "logs2"
    proc = torchrun(logs2, "1@0:hang", max_restarts=0)
    _wait_for_events(proc, logs2, {"0 waiting", "1 wrote 3"})
    os.kill(proc.pid, signal.SIGKILL)
    output = _finish(proc, marker, timeout=30)  # the workers hold its output pipe till they end
    assert _processes_of(marker) == []
    assert output.count(f"its launcher (pid {proc.pid}) is gone; stopping") == 2
    assert _writes(logs2) == [3]
    assert not (folder / COMPLETE).exists()
    # 3. the same command again resumes: only the missing batches are computed
    logs3 = tmp_path / "logs3"
    proc = torchrun(logs3)
    output = _finish(proc, marker)
    assert proc.returncode == 0, output[-6000:]
    assert _processes_of(marker) == []
    assert _writes(logs3) == [5, 7]
    _assert_written_once_by_owner(logs1, logs2, logs3)
    r0, r1 = _records(logs3)["rank0-restart0"], _records(logs3)["rank1-restart0"]
    assert (r0["ran"], r1["ran"]) == ([], [5, 7])
    assert (r0["worker"], r1["worker"], r0["n_workers"]) == (0, 1, 2)
    assert r0["verified"] is not None and r1["verified"] is None  # rank 0 verifies, once
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


def test_collect_command_passes_its_barrier_timeout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tl_continuous.cli import build_parser, main
    from tl_continuous.lines_of_thought import launch
    from tl_continuous.reports.settings import collect_worker_shards

    for bad in ("0", "-5", "inf", "soon"):
        with pytest.raises(SystemExit) as stop:
            main(["collect", "--barrier-timeout", bad])
        assert stop.value.code == 2
        expected = f"argument --barrier-timeout: must be a positive number of seconds (got '{bad}')"
        assert expected in capsys.readouterr().err
    seen: dict[str, Any] = {}
    monkeypatch.setattr(launch, "collect_launched", lambda *a, **kw: seen.update(kw))
    for argv, seconds in ((["collect"], 24 * 3600), (["collect", "--barrier-timeout", "90"], 90)):
        collect_worker_shards(None, None, "shards", build_parser().parse_args(argv))
        assert seen["barrier_timeout"] == datetime.timedelta(seconds=seconds)
