"""Concurrency: one writer and many reader processes; a second writer is refused or waits."""

import multiprocessing as mp
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from mmap_ninja import MapLockedError, NumpyMmap, RaggedMmap, StringsMmap

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stress"))
import concurrency_stress as cs  # noqa: E402


def _assert_clean(stats, readers):
    assert stats["failed_opens"] == 0, stats["errors"]
    assert stats["wrong"] == 0, stats["errors"]
    assert stats["exit_codes"] == [0] * (readers + 1)
    # every reader's last refresh, after the writer finished, saw everything the writer committed
    assert stats["reader_final_lengths"] == [stats["final_length"]] * readers
    assert stats["growing_refreshes"] > 0  # readers really ran while the writer was writing
    assert stats["checked"] > stats["final_length"]


@pytest.mark.parametrize("kind", ["strings", "ragged", "numpy"])
def test_readers_never_see_a_torn_sample(tmp_path, kind):
    _assert_clean(cs.run(kind, seconds=2, readers=8, workdir=tmp_path), 8)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["strings", "ragged", "numpy"])
def test_readers_never_see_a_torn_sample_long(tmp_path, kind):
    _assert_clean(cs.run(kind, seconds=30, readers=8, workdir=tmp_path), 8)


def _hold_then_append(path, locked, go):
    with StringsMmap(path, mode="r+") as m:
        locked.set()
        go.wait(60)
        m.append("from the first writer")


@pytest.mark.parametrize("cls", [StringsMmap, RaggedMmap, NumpyMmap])
def test_a_second_writer_in_the_same_process_is_refused(tmp_path, cls):
    path = tmp_path / "m"
    first = cls.from_generator(path, [[1, 2]] if cls is not StringsMmap else ["a"], batch_size=1)
    with pytest.raises(MapLockedError, match="another writer"):
        cls(path, mode="r+")
    first.close()
    cls(path, mode="r+").close()  # free again


def test_a_second_writer_is_refused_at_once_or_waits(tmp_path):
    path = tmp_path / "m"
    StringsMmap.from_strings(path, ["x"]).close()
    ctx = mp.get_context("spawn")
    locked, go = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_then_append, args=(str(path), locked, go))
    p.start()
    try:
        assert locked.wait(60)
        with pytest.raises(MapLockedError, match="another writer"):
            StringsMmap(path, mode="r+")
        with pytest.raises(MapLockedError, match="after waiting"):
            StringsMmap(path, mode="r+", lock_timeout=0.2)
        with StringsMmap(path) as reader:  # readers take no lock
            assert list(reader) == ["x"]
        go.set()
        with StringsMmap(path, mode="r+", lock_timeout=60) as second:
            # it got the lock only once the first writer had appended and closed
            assert list(second) == ["x", "from the first writer"]
            second.append("from the second writer")
    finally:
        p.join(60)
    assert p.exitcode == 0
    assert list(StringsMmap(path)) == ["x", "from the first writer", "from the second writer"]


def test_a_forked_child_does_not_keep_the_writer_lock(tmp_path):
    """DataLoader / from_indexable workers are forked while a writer is open; flock locks belong to the open
    file, so a child that outlives (or outlasts) the writer used to keep the map locked."""
    path = tmp_path / "m"
    writer = StringsMmap.from_strings(path, ["a"])
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: say it is running, then just live on
        try:
            os.write(w, b"x")
            time.sleep(60)
        finally:
            os._exit(0)
    try:
        assert os.read(r, 1) == b"x"  # the child has started (and run the fork handlers)
        writer.close()
        with StringsMmap(path, mode="r+") as again:  # the sleeping child must not hold the lock
            again.append("b")
        assert list(StringsMmap(path)) == ["a", "b"]
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
        os.close(w)
