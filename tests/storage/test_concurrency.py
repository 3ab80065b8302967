"""Concurrency: writers and readers in many processes and handles, with a lock per write transaction."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path
from typing import Any

import concurrency_stress as cs
import crash_torture as ct
import numpy as np
import pytest

from mmap_ninja import MapLockedError, NumpyMmap, RaggedMmap, StringsMmap
from mmap_ninja.kinds.maps import MapBase

CLASSES = [StringsMmap, RaggedMmap, NumpyMmap]


def _assert_clean(stats: dict[str, Any], readers: int) -> None:
    assert stats["failed_opens"] == 0, stats["errors"]
    assert stats["wrong"] == 0, stats["errors"]
    assert stats["exit_codes"] == [0] * (len(stats["exit_codes"]))
    # every reader's last refresh, after the writers finished, saw everything they committed
    assert stats["reader_final_lengths"] == [stats["final_length"]] * readers
    assert stats["growing_refreshes"] > 0  # readers really ran while the writers were writing
    assert stats["checked"] > 0
    assert cs.ok(stats)


@pytest.mark.parametrize("kind", ct.KINDS)
def test_readers_never_see_a_torn_sample(tmp_path: Path, kind: str) -> None:
    stats = cs.run(kind, seconds=2, readers=8, workdir=tmp_path)
    _assert_clean(stats, 8)
    assert stats["checked"] > stats["final_length"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ct.KINDS)
def test_readers_never_see_a_torn_sample_long(tmp_path: Path, kind: str) -> None:
    _assert_clean(cs.run(kind, seconds=30, readers=8, workdir=tmp_path), 8)


def _assert_appenders_clean(stats: dict[str, Any], appenders: int, readers: int) -> None:
    _assert_clean(stats, readers)
    assert (stats["lost"], stats["duplicated"], stats["torn"], stats["unexpected"], stats["out_of_order"]) == \
        (0, 0, 0, 0, 0), stats["errors"]
    assert stats["batches"] >= appenders  # every appender committed


@pytest.mark.parametrize("kind", ct.KINDS)
def test_concurrent_appenders_and_readers_lose_nothing(tmp_path: Path, kind: str) -> None:
    _assert_appenders_clean(cs.run_appenders(kind, seconds=2, appenders=4, readers=4, workdir=tmp_path), 4, 4)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ct.KINDS)
def test_concurrent_appenders_and_readers_lose_nothing_long(tmp_path: Path, kind: str) -> None:
    _assert_appenders_clean(cs.run_appenders(kind, seconds=30, appenders=4, readers=8, workdir=tmp_path), 4, 8)


@pytest.mark.parametrize("kind", ct.KINDS)
def test_killing_one_of_three_appenders_loses_nothing(kind: str) -> None:
    results = ct.run_many([kind], 3, seed=5, scenarios=("appenders",))
    assert all(t.consistent and not t.lost and not t.failed_reopen for t in results), [t.detail for t in results]
    assert all(t.batches > 0 for t in results)


@pytest.mark.parametrize("kind", ct.KINDS)
def test_the_reader_check_reports_a_partial_batch(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "m"
    with ct.CLASSES[kind](path) as m:
        m.extend(ct.tagged_batch(kind, 0, 0, 3))
        m.extend(ct.tagged_batch(kind, 0, 1, 4)[:2])  # as a reader would see a torn commit
    stats: dict[str, Any] = {"checked": 0, "wrong": 0, "errors": []}
    check = cs._Checker(kind, True, stats)
    with ct.CLASSES[kind](path, mode="r") as m:
        for i in range(3):
            check.sample(m, i)
        assert stats["wrong"] == 0, stats["errors"]
        check.snapshot_end(m)
        assert stats["wrong"] == 1 and "ends inside a batch" in stats["errors"][0]
        check.sample(m, 3)
        assert stats["wrong"] == 2 and "not whole" in stats["errors"][1]


def _sample(cls: type[MapBase], k: int) -> Any:
    return f"s{k}" if cls is StringsMmap else np.array([k, k + 1])


def _plain(sample: Any) -> Any:
    return sample if isinstance(sample, str) else sample.tolist()


def _build(cls: type[MapBase], path: Path) -> None:
    cls.from_generator(path, [_sample(cls, 0)], batch_size=1).close()


def _as_list(m: MapBase) -> list[Any]:
    return [_plain(s) for s in m]


@pytest.mark.parametrize("cls", CLASSES)
def test_two_handles_in_one_process_append_in_turn(tmp_path: Path, cls: type[MapBase]) -> None:
    path = tmp_path / "m"
    _build(cls, path)
    first, second = cls(path), cls(path)
    first.append(_sample(cls, 10))
    second.append(_sample(cls, 20))  # catches up with the first handle's commit, writes after it
    first.append(_sample(cls, 30))
    want = [_plain(_sample(cls, k)) for k in (0, 10, 20, 30)]
    assert _as_list(first) == want  # a write's catch-up also advanced the first handle's snapshot
    second.refresh()
    assert _as_list(second) == want
    first.close()
    second.close()


@pytest.mark.parametrize("cls", CLASSES)
def test_a_transaction_makes_another_handles_write_wait_then_time_out(tmp_path: Path, cls: type[MapBase]) -> None:
    path = tmp_path / "m"
    _build(cls, path)
    holder, other = cls(path), cls(path, lock_timeout=0.2)
    with holder.transaction():
        holder.append(_sample(cls, 1))
        t0 = time.monotonic()
        with pytest.raises(MapLockedError, match="locked by another writer"):
            other.append(_sample(cls, 2))
        assert time.monotonic() - t0 >= 0.2
        assert len(cls(path, mode="r")) == 1  # nothing of the open transaction is visible yet
    other.append(_sample(cls, 2))  # the lock is free again; nothing of the refused write was kept
    with cls(path, mode="r") as m:
        assert _as_list(m) == [_plain(_sample(cls, k)) for k in (0, 1, 2)]
    holder.close()
    other.close()


def _hold_a_transaction(path: str, locked: Any, go: Any) -> None:
    with StringsMmap(path) as m, m.transaction():
        m.append("from the first writer")
        locked.set()
        go.wait(600)  # bounds a hang only: the parent's refused write must come while this holds the lock


def test_a_write_waits_for_another_processs_transaction_or_times_out(tmp_path: Path) -> None:
    path = tmp_path / "m"
    StringsMmap.from_strings(path, ["x"]).close()
    ctx = mp.get_context("spawn")
    locked, go = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_a_transaction, args=(str(path), locked, go))
    p.start()
    try:
        assert locked.wait(600)  # a spawned interpreter may take minutes to start on a loaded machine
        with StringsMmap(path, lock_timeout=0.2) as second:  # opening takes no lock
            assert list(second) == ["x"]
            with pytest.raises(MapLockedError, match="locked by another writer"):
                second.append("refused")
            assert list(StringsMmap(path, mode="r")) == ["x"]  # readers take no lock, see no open transaction
        with StringsMmap(path, lock_timeout=60) as second:
            go.set()
            second.append("from the second writer")  # waits for the first transaction, then writes after it
            assert list(second) == ["x", "from the first writer", "from the second writer"]
    finally:
        go.set()
        p.join(600)
    assert p.exitcode == 0
    assert list(StringsMmap(path, mode="r")) == ["x", "from the first writer", "from the second writer"]


def test_a_forked_child_does_not_keep_the_writer_lock(tmp_path: Path) -> None:
    """DataLoader / from_indexable workers may be forked while a transaction holds the lock; flock locks belong
    to the open file, so a child that outlives the transaction would keep the map locked."""
    path = tmp_path / "m"
    writer = StringsMmap.from_strings(path, ["a"])
    r, w = os.pipe()
    with writer.transaction():
        writer.append("b")
        pid = os.fork()
        if pid == 0:  # the child: say it is running, then just live on
            try:
                os.write(w, b"x")
                time.sleep(60)
            finally:
                os._exit(0)
    try:
        assert os.read(r, 1) == b"x"  # the child has started (and run the fork handlers)
        with StringsMmap(path, lock_timeout=2) as again:  # the sleeping child must not hold the lock
            again.append("c")
        assert list(StringsMmap(path, mode="r")) == ["a", "b", "c"]
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
        os.close(w)
        writer.close()
