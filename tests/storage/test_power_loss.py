"""Power loss: what survives when the machine (not just the process) goes down.

A crash of the operating system drops every write that was not fsynced. We simulate it: a child process
records, through a wrapped ``os.fsync``, the size of every file at each fsync, the header text each
directory fsync made durable and every header it published; it is SIGKILLed at a random instant; then the
directory is rolled back to a state the disk could hold after a power cut, and the map is checked.

``durable=True`` (verified here): every extend that returned survives. Each column file is cut back to
any size between its last fsynced size and its current size (always including the worst case, exactly
the fsynced size), and ``header.json`` is either the last header made durable by a directory fsync or a
newer one whose contents had been fsynced before the rename (the rename itself may or may not have
reached the disk). In every such state the map opens, holds every sample of every returned extend byte
for byte plus at most the batch in flight, and a writer's transaction cuts the tail and extends it. If the
state is inside the build, the map is marked unfinished: a plain open raises ``UnfinishedMapError``,
``allow_unfinished=True`` reads every batch the build committed, and re-running the build replaces it.

``durable=False`` (the default) guarantees safety against a *process* crash (``test_crash.py``): the
kernel keeps every write in the page cache, so a killed process loses nothing that was committed. Against
an OS crash it promises less, and this is what is verified: if the disk ends up holding any header that
was once published (possibly older than the last commit: recent commits may be lost) together with column
files cut at any size, the reader either opens exactly the samples that header committed, byte for byte,
or refuses with a ``CorruptMapError`` that names the truncated file; it never returns a sample shorter
or longer than committed. A header published inside a build (``from_*``) is marked unfinished: a plain open
refuses it with ``UnfinishedMapError``, and ``allow_unfinished=True`` gives the same guarantee. Not verified,
and not detectable without checksums: a file system that persists a file's new size but not its data
would show such samples as zeros. Use ``durable=True`` when commits must outlive a power cut.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import crash_torture as ct
import pytest

import mmap_ninja
from mmap_ninja import CorruptMapError, UnfinishedMapError
from mmap_ninja.storage.format import dtype_from_json


def _records(path: Path) -> list[dict[str, Any]]:
    """The child's fsync log. A last line without its newline is the record the SIGKILL cut short (a large write
    to a file can stop partway when a fatal signal arrives): dropped. It was written after its fsync returned but
    before the operation did, so the model then claims less was synced, which only the batch in flight may lose."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    if lines[-1]:  # no newline after it: cut short
        lines.pop()
    return [json.loads(line) for line in lines if line]


def _run(kind: str, tmp_path: Path, seed: int, durable: bool,
         after_commits: int = 0) -> tuple[ct.Events, list[dict[str, Any]]]:
    extra = ["--record-fsync", str(tmp_path / "fsyncs")] + (["--durable"] if durable else [])
    events = ct.kill_child_at_random("build", kind, tmp_path, seed, extra, max_delay=0.5, after_commits=after_commits)
    return events, _records(tmp_path / "fsyncs")


def _roll_back(src: Path, dst: Path, records: list[dict[str, Any]], rng: random.Random, *, worst: bool) -> None:
    """Copy the map in ``src`` to ``dst`` as a power cut could leave it (durable=True model)."""
    shutil.copytree(src, dst)
    synced_size, synced_headers, durable_header = {}, set(), None
    for r in records:
        if "file" in r:
            synced_size[Path(r["file"]).name] = r["size"]
            if "content" in r:
                synced_headers.add(r["content"])
        elif "dir" in r:
            durable_header = r["header"]
            # the protocol: a header reaches the directory only after its own contents were synced
            assert durable_header in synced_headers
    current = (dst / "header.json").read_text() if (dst / "header.json").exists() else None
    choices = [durable_header]
    if current is not None and current in synced_headers and not worst:
        choices.append(current)
    header = rng.choice(choices)
    (dst / "header.json.tmp").unlink(missing_ok=True)
    if header is None:
        (dst / "header.json").unlink(missing_ok=True)
    else:
        (dst / "header.json").write_text(header)
    for f in dst.glob("*.bin"):
        size = f.stat().st_size
        low = synced_size.get(f.name, 0)
        assert low <= size
        with open(f, "r+b") as fh:
            fh.truncate(low if worst else rng.randint(low, size))


@pytest.mark.parametrize("kind", ct.KINDS)
def test_durable_commits_survive_a_power_cut(tmp_path: Path, kind: str) -> None:
    rng = random.Random(kind)
    outcomes = []
    for t in range(4):
        work = tmp_path / str(t)
        work.mkdir()
        # Odd trials are killed only after a commit returned (a state, not a delay: on a loaded machine a durable
        # commit's fsyncs may take longer than any delay), so that some kill lands after commits; even ones at
        # any instant from the start, creation included.
        events, records = _run(kind, work, rng.randrange(1 << 30), durable=True, after_commits=t % 2)
        committed, _ = ct.expected_state(events)
        if not (work / "map").exists():  # killed before it created the directory
            assert committed is None
            continue
        for worst in (True, False):
            dst = work / ("worst" if worst else "random")
            _roll_back(work / "map", dst, records, rng, worst=worst)
            trial = ct.Trial(kind, "build")
            ct.check_after_crash(trial, kind, "build", dst, events)
            assert trial.consistent and not trial.lost, trial.detail
            outcomes.append(committed)
    # the kills landed after some commits had returned, or the test would prove nothing
    assert any(c for c in outcomes)


def _itemsize(column: dict) -> int:
    return int(dtype_from_json(column["dtype"]).itemsize)


@pytest.mark.parametrize("kind", ct.KINDS)
def test_default_mode_after_an_os_crash_loses_recent_commits_but_never_reads_wrong_bytes(tmp_path: Path,
                                                                                          kind: str) -> None:
    rng = random.Random(kind + "!")
    opened = refused = building = 0
    for t in range(2):
        work = tmp_path / str(t)
        work.mkdir()
        # The second trial is killed after a commit returned (a state, not a delay), so that some published header
        # names samples, whatever the machine's load; the first at any instant from the start.
        _events, records = _run(kind, work, rng.randrange(1 << 30), durable=False, after_commits=t)
        assert not any("file" in r or "dir" in r for r in records), "durable=False must not fsync"
        published = [r["published"] for r in records if "published" in r]
        if not published:
            continue
        for k in range(8):
            dst = work / f"state{k}"
            shutil.copytree(work / "map", dst)
            (dst / "header.json.tmp").unlink(missing_ok=True)
            in_build = [h for h in published if json.loads(h).get("building")]
            # Three states are chosen, not drawn, so that every outcome is checked on every run: a header of the
            # build over whole files (opened, only with allow_unfinished), the header naming the most items over
            # emptied files (refused as truncated); the other states are drawn at random.
            if k == 0:
                header = rng.choice(in_build or published)  # every run has one in a build
            elif k == 1:
                header = max(published, key=lambda h: sum(c["length"] for c in json.loads(h)["columns"].values()))
            else:
                header = rng.choice(published)
            (dst / "header.json").write_text(header)
            columns = json.loads(header)["columns"]
            for f in dst.glob("*.bin"):
                size = f.stat().st_size
                kept = size if k == 0 else 0 if k == 1 else rng.randint(0, size) if rng.random() < 0.5 else size
                with open(f, "r+b") as fh:
                    fh.truncate(kept)
            if json.loads(header).get("building"):  # published by the build: only an explicit opt-in reads it
                with pytest.raises(UnfinishedMapError, match="allow_unfinished=True"):
                    ct.CLASSES[kind](dst, mode="r")
                building += 1
            short = sorted(f.name for f in dst.glob("*.bin")
                           if f.stat().st_size < columns[f.stem]["length"] * _itemsize(columns[f.stem]))
            if short:
                with pytest.raises(CorruptMapError, match="truncated") as info:
                    ct.CLASSES[kind](dst, mode="r", allow_unfinished=True)
                assert any(name in str(info.value) for name in short)
                refused += 1
            else:
                length = columns["offsets"]["length"] - 1 if kind != "numpy" else \
                    columns["data"]["length"] // 48
                with mmap_ninja.open_existing(dst, mode="r", allow_unfinished=True) as m:
                    ct.verify(kind, m, length)
                opened += 1
    assert opened and refused and building


def test_the_fsync_log_drops_only_a_last_record_the_kill_cut_short(tmp_path: Path) -> None:
    log = tmp_path / "fsyncs"
    log.write_text('{"file": "a", "size": 1}\n{"dir": "d", "header": "h"}\n{"file": "b", "si')
    assert _records(log) == [{"file": "a", "size": 1}, {"dir": "d", "header": "h"}]
    log.write_text('{"file": "a", "size": 1}\n')
    assert _records(log) == [{"file": "a", "size": 1}]
