"""A training loop SIGKILLed at an arbitrary step and restarted from its last saved state reads exactly the samples
of an uninterrupted run (ResumableSampler through StatefulDataLoader with prefetching workers, on a real map)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("torchdata.stateful_dataloader")

TRAIN = r'''
import json, os, sys, warnings
warnings.filterwarnings("ignore")
from torchdata.stateful_dataloader import StatefulDataLoader
from mmap_ninja import open_existing
from mmap_ninja.adapters.torch import ResumableSampler

data, state_path, log_path, epochs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
dataset = open_existing(data, mode="r")
sampler = ResumableSampler(dataset, rank=1, world_size=3, seed=17)
loader = StatefulDataLoader(dataset, batch_size=5, sampler=sampler, num_workers=2, prefetch_factor=2)
start_epoch, step = 0, 0
if os.path.exists(state_path):
    with open(state_path) as f:
        saved = json.load(f)
    loader.load_state_dict(saved["loader"])
    start_epoch, step = saved["epoch"], saved["step"]
log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
for epoch in range(start_epoch, epochs):
    sampler.set_epoch(epoch)
    for batch in loader:
        step += 1
        os.write(log, (json.dumps([step, batch.tolist()]) + "\n").encode())   # "trained on" this batch
        with open(state_path + ".tmp", "w") as f:                           # checkpoint, atomically
            json.dump({"loader": loader.state_dict(), "epoch": epoch, "step": step}, f)
        os.replace(state_path + ".tmp", state_path)
        print("step", step, flush=True)
print("DONE", flush=True)
'''


def train(tmp_path: Path, data: Path, name: str, kill_after: int | None) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    process = subprocess.Popen([sys.executable, "-c", TRAIN, str(data), str(tmp_path / f"{name}.state"),
                                str(tmp_path / f"{name}.log"), "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, start_new_session=True)
    assert process.stdout is not None
    for line in process.stdout:
        if kill_after is not None and line.strip() == f"step {kill_after}":
            with contextlib.suppress(ProcessLookupError):  # it may have finished meanwhile
                os.killpg(process.pid, signal.SIGKILL)  # the loop may be anywhere past this step by now
            break
    process.wait(timeout=300)
    if kill_after is None:
        assert process.returncode == 0, process.stderr.read() if process.stderr else ""


def trained(tmp_path: Path, name: str) -> list[list[int]]:
    """The batches the checkpoints account for: a batch logged after the last checkpoint is read again."""
    state = json.loads((tmp_path / f"{name}.state").read_text())
    lines = [json.loads(line) for line in (tmp_path / f"{name}.log").read_text().splitlines()]
    by_step: dict[int, list[int]] = {}
    for step, batch in lines:
        by_step[step] = batch  # a re-read step overwrites what the killed run logged past its checkpoint
    assert sorted(by_step) == list(range(1, state["step"] + 1))
    return [by_step[step] for step in sorted(by_step)]


@pytest.mark.parametrize("kills", [[3], pytest.param([1, 4, 6], marks=pytest.mark.slow)])
def test_killed_and_resumed_training_reads_what_an_uninterrupted_run_reads(tmp_path: Path, kills: list[int]) -> None:
    from mmap_ninja import np_from_ndarray

    data = tmp_path / "data"
    np_from_ndarray(data, np.arange(40, dtype=np.int64)).close()
    train(tmp_path, data, "whole", None)
    for kill_after in kills:
        train(tmp_path, data, "killed", kill_after)
    train(tmp_path, data, "killed", None)
    assert trained(tmp_path, "killed") == trained(tmp_path, "whole")
    assert len(trained(tmp_path, "whole")) == 2 * 3  # 14 indices per rank and epoch, batches of 5
