"""Crash safety of sharded collection: SIGKILL part-way, resume, compare with an uninterrupted run.

The collection runs in a child process (a tiny random model built there from a seed, slowed
down by a sleeping hook so that the kill lands part-way). After the kill: every shard that
exists is complete and passes its checksum, a leftover temporary file is not a shard, the
folder is refused as incomplete, and resuming runs exactly the missing batches. The resumed
ensemble equals an uninterrupted run bit for bit. Then shards are damaged (bytes flipped,
file truncated): loading names the file, and a rerun recomputes just those.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from tl_continuous.lines_of_thought.collect import (
    CorruptShardError,
    IncompleteShardsError,
    _read_shard,
    load_shards,
)
from tl_continuous.lines_of_thought.ensemble import LinesOfThought

N_SEQUENCES, SEQ_LEN, BATCH = 40, 6, 2
N_BATCHES = N_SEQUENCES // BATCH
KILL_AFTER = 4  # shards on disk when the child is killed

CHILD = textwrap.dedent(
    f"""
    import json, sys, time
    import torch
    torch.set_num_threads(1)
    from tl_continuous.tiny import tiny_model
    from tl_continuous.lines_of_thought.collect import collect_shards

    folder, delay = sys.argv[1], float(sys.argv[2])
    model = tiny_model("rotary", seed=3)
    tokens = torch.randint(0, 50, ({N_SEQUENCES}, {SEQ_LEN}),
                           generator=torch.Generator().manual_seed(11))
    if delay:
        model.blocks[0].register_forward_hook(lambda *args: time.sleep(delay))
    ran = collect_shards(model, tokens, folder, batch_size={BATCH}, progress=False)
    print(json.dumps(ran))
    """
)


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run_child(script: Path, folder: Path, delay: float = 0.0) -> list[int]:
    out = subprocess.run(
        [sys.executable, str(script), str(folder), str(delay)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _shards(folder: Path) -> list[Path]:
    return sorted(folder.glob("batch-*.safetensors"))


@pytest.mark.slow
def test_sigkill_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    folder, reference_dir = tmp_path / "killed", tmp_path / "reference"

    # fault 1: SIGKILL part-way
    proc = subprocess.Popen(
        [sys.executable, str(script), str(folder), "0.3"],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while len(_shards(folder)) < KILL_AFTER and proc.poll() is None:
        assert time.monotonic() < deadline, "the child wrote no shards"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    done = _shards(folder)
    assert KILL_AFTER <= len(done) < N_BATCHES, "the kill did not land part-way"
    for path in done:  # no shard is half-written
        _read_shard(path, int(path.stem.split("-")[1]))

    # fault 2: a half-written temporary file left behind (as a kill during a write leaves)
    leftover = folder / ".batch-00019.safetensors.abc123.tmp"
    leftover.write_bytes(done[0].read_bytes()[:100])
    with pytest.raises(IncompleteShardsError, match=rf"lacks \d+ of {N_BATCHES} batches") as info:
        load_shards(folder)
    missing = info.value.missing
    assert missing == [b for b in range(N_BATCHES) if not (folder / _name(b)).is_file()]

    # resume: exactly the missing batches run
    assert _run_child(script, folder) == missing
    resumed = LinesOfThought.from_shards(folder)
    assert _run_child(script, reference_dir) == list(range(N_BATCHES))
    reference = LinesOfThought.from_shards(reference_dir)

    assert torch.equal(resumed.trajectories, reference.trajectories)
    assert torch.equal(resumed.tokens, reference.tokens)
    assert torch.equal(resumed.pilot_positions, reference.pilot_positions)
    assert resumed.layer_names == reference.layer_names
    lost = N_SEQUENCES - resumed.n_trajectories
    assert lost == 0
    assert leftover.is_file() and len(_shards(folder)) == N_BATCHES  # a temp file is no shard

    # faults 3 and 4: flipped bytes in one shard, a truncated other shard
    flipped, truncated = folder / _name(3), folder / _name(7)
    raw = bytearray(flipped.read_bytes())
    raw[len(raw) - 11] ^= 0x5A
    flipped.write_bytes(bytes(raw))
    with pytest.raises(CorruptShardError, match=r"batch-00003\.safetensors fails its SHA-256"):
        load_shards(folder)
    truncated.write_bytes(truncated.read_bytes()[:-9])
    flipped.write_bytes(bytes(raw))
    with pytest.raises(CorruptShardError, match=r"batch-0000[37]\.safetensors"):
        load_shards(folder)
    assert _run_child(script, folder) == [3, 7]
    repaired = LinesOfThought.from_shards(folder)
    assert torch.equal(repaired.trajectories, reference.trajectories)


def _name(batch: int) -> str:
    return f"batch-{batch:05d}.safetensors"
