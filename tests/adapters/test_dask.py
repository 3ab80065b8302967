"""Building sharded maps on a real Dask cluster (two worker processes): equal to a single-process build,
re-runs build only what is missing, a killed worker leaves no partial shard."""

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

db = pytest.importorskip("dask.bag")

from mmap_ninja import RaggedMmap, StringsMmap, np_from_ndarray  # noqa: E402
from mmap_ninja.adapters.dask import PROVENANCE_KEY, from_dask  # noqa: E402
from mmap_ninja.containers.sharded import SchemaMismatchError, ShardedMap  # noqa: E402
from mmap_ninja.storage.format import read_header  # noqa: E402
from mmap_ninja.testing import arrays_equal as equal  # noqa: E402


def ragged_sample(i):
    return np.full((i % 5 + 1,), i, dtype=np.int32)


def text_sample(i):
    return f"line {i} " + "é" * (i % 3)


def slow_ragged_sample(i, started):
    """A sample that takes a while, leaving a mark in ``started`` when the first one begins."""
    Path(started).touch()
    time.sleep(0.02)
    return ragged_sample(i)


def _ids(path):
    return {p.name: read_header(p).id for p in sorted((path / "shards").glob("part-*"))}


def test_from_dask_equals_a_single_process_build(tmp_path, dask_client):
    bag = db.from_sequence(range(103), npartitions=5).map(ragged_sample)
    m = from_dask(RaggedMmap, tmp_path / "out", bag, batch_size=7, metadata={"source": "range"})
    single = RaggedMmap.from_generator(tmp_path / "single", bag.compute(), batch_size=7)
    assert len(m) == len(single) == 103 and m.kind == "ragged" and len(m.shards) == bag.npartitions > 1
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(m, single))
    assert m.metadata == {"source": "range"}
    first = read_header(tmp_path / "out" / "shards" / "part-00002").metadata[PROVENANCE_KEY]
    assert first["partition"] == 2 and first["npartitions"] == bag.npartitions and first["token"]
    strings = from_dask(StringsMmap, tmp_path / "strings", db.from_sequence(range(30), npartitions=3).map(text_sample))
    assert list(strings) == [text_sample(i) for i in range(30)]


def test_numpy_kind_and_an_empty_partition(tmp_path, dask_client):
    from mmap_ninja import NumpyMmap

    bag = db.from_sequence([], npartitions=1).map(ragged_sample)
    empty = from_dask(NumpyMmap, tmp_path / "empty", bag)
    assert len(empty) == 0
    rows = db.from_sequence(range(12), npartitions=3).map(lambda i: np.full((2, 3), i, np.float32))
    m = from_dask(NumpyMmap, tmp_path / "numpy", rows)
    reference = np_from_ndarray(tmp_path / "single", np.stack(rows.compute()))
    assert np.array_equal(m.get_batch(list(range(12))), np.asarray(reference))


def test_a_rerun_builds_only_missing_or_stale_shards(tmp_path, dask_client):
    bag = db.from_sequence(range(40), npartitions=4).map(ragged_sample)
    from_dask(RaggedMmap, tmp_path / "out", bag)
    before = _ids(tmp_path / "out")
    import shutil

    shutil.rmtree(tmp_path / "out" / "shards" / "part-00001")
    m = from_dask(RaggedMmap, tmp_path / "out", bag)
    after = _ids(tmp_path / "out")
    assert {k: v for k, v in after.items() if k != "part-00001"} == {k: v for k, v in before.items()
                                                                     if k != "part-00001"}
    assert after["part-00001"] != before["part-00001"] and len(m) == 40
    changed = db.from_sequence(range(100, 130), npartitions=2).map(ragged_sample)  # new input: nothing reused
    m = from_dask(RaggedMmap, tmp_path / "out", changed)
    assert not set(_ids(tmp_path / "out").values()) & set(after.values())
    assert [int(a[0]) for a in m] == list(range(100, 130)) and len(m.shards) == changed.npartitions
    assert sorted(p.name for p in (tmp_path / "out" / "shards").iterdir()) == [
        f"part-{i:05d}" for i in range(changed.npartitions)]


def test_a_failing_partition_leaves_no_visible_shard_and_a_rerun_completes(tmp_path, dask_client):
    flag = tmp_path / "fail"
    flag.write_text("")

    def fragile(i):
        if i == 25 and os.path.exists(flag):
            raise RuntimeError("bad sample 25")
        return ragged_sample(i)

    bag = db.from_sequence(range(40), npartitions=4).map(fragile)
    with pytest.raises(RuntimeError, match="bad sample 25"):
        from_dask(RaggedMmap, tmp_path / "out", bag)
    shards = tmp_path / "out" / "shards"
    assert not (tmp_path / "out" / "shards.json").exists()
    assert "part-00002" not in {p.name for p in shards.iterdir()}
    assert not [p for p in shards.iterdir() if ".staging-" in p.name]
    flag.unlink()
    _until_the_scheduler_forgets_failed_tasks(dask_client)
    m = from_dask(RaggedMmap, tmp_path / "out", bag)
    assert [int(a[0]) for a in m] == list(range(40))


def test_a_bad_sample_is_named_by_its_partition(tmp_path, dask_client):
    from mmap_ninja import RecordsMmap

    bag = db.from_sequence(["a", "b", 3, "d"], npartitions=2)  # partitions ["a", "b"] and [3, "d"]
    with pytest.raises(TypeError, match=r"partition 1 of the Dask input .*: item 0 is int, expected str"):
        from_dask(StringsMmap, tmp_path / "words", bag)
    assert not (tmp_path / "words" / "shards.json").exists()
    assert [p.name for p in (tmp_path / "words" / "shards").iterdir()] == ["part-00000"]  # kept for a re-run
    with pytest.raises(TypeError, match=r"partition 0 of the Dask input .*: item 1 is int"):
        from_dask(StringsMmap, tmp_path / "new" / "words", db.from_sequence(["a", 3], npartitions=1))
    assert not (tmp_path / "new").exists()  # a build that made nothing leaves nothing, not even the folders
    mixed = db.from_sequence([np.arange(3, dtype=np.int32), np.array([0.5])], npartitions=2)
    with pytest.raises(SchemaMismatchError, match=r"partitions of the Dask input built shards that differ: .*"
                                                  r"part-00001 .*dtype '<f8' instead of '<i4'.* pass dtype="):
        from_dask(RaggedMmap, tmp_path / "mixed", mixed)
    assert not (tmp_path / "mixed" / "shards.json").exists()
    with pytest.raises(ValueError, match="every partition of the input is empty"):
        RecordsMmap.from_dask(tmp_path / "empty", db.from_sequence([], npartitions=1))
    assert not (tmp_path / "empty").exists()
    rows = db.from_sequence([{"a": 1}, {"a": 2}, {"a": "x"}, {"a": 4}], npartitions=2)
    with pytest.raises(TypeError, match=r"partition 1 of the Dask input .*: row 1, field 'a': expected str"):
        RecordsMmap.from_dask(tmp_path / "rows", rows)


def _erred_tasks(dask_scheduler):
    return [str(key) for key, task in dask_scheduler.tasks.items() if task.state == "erred"]


def _until_the_scheduler_forgets_failed_tasks(client):
    """The client releases a failed computation's keys asynchronously; the same keys submitted before the
    scheduler forgot them would fail again at once without running."""
    deadline = time.monotonic() + 600  # bounds a hang only
    while client.run_on_scheduler(_erred_tasks):
        assert time.monotonic() < deadline, "the scheduler kept the failed tasks"
        time.sleep(0.05)


def test_a_worker_killed_mid_build(tmp_path, dask_client):
    started = tmp_path / "started"
    bag = db.from_sequence(range(120), npartitions=6).map(slow_ragged_sample, str(started))  # ~0.4 s a partition
    shards = tmp_path / "out" / "shards"
    outcome = {}

    def build():
        try:
            outcome["map"] = from_dask(RaggedMmap, tmp_path / "out", bag)
        except Exception as e:  # the scheduler may give up on the killed worker's task
            outcome["error"] = e

    thread = threading.Thread(target=build)
    thread.start()
    deadline = time.monotonic() + 600  # bounds a hang only: a loaded machine may take minutes to start a task
    while not started.exists():  # the workers are computing samples: kill one mid-build
        assert time.monotonic() < deadline, f"no sample was computed: {outcome}"
        time.sleep(0.005)
    pids = dask_client.run(os.getpid)
    os.kill(next(iter(pids.values())), signal.SIGKILL)
    thread.join(600)  # bounds only a hung build; a loaded machine may take minutes
    assert not thread.is_alive()
    for part in shards.glob("part-*"):  # whatever is visible under a shard's name is a finished shard
        assert not read_header(part).building
    if "error" in outcome:  # the same keys, submitted again before the scheduler forgot them, would fail at once
        _until_the_scheduler_forgets_failed_tasks(dask_client)
    m = from_dask(RaggedMmap, tmp_path / "out", bag)
    assert [int(a[0]) for a in m] == list(range(120))
    assert all(np.array_equal(m[i], ragged_sample(i)) for i in range(120))
    assert isinstance(ShardedMap(tmp_path / "out"), ShardedMap)
    dask_client.wait_for_workers(2, timeout=300)  # the nanny restarts the killed worker for the next tests


# ------------------------------------------------------------------ every kind, and records from a dataframe

from mmap_ninja.testing import specs as kit_specs  # noqa: E402


@pytest.mark.parametrize("spec", kit_specs(), ids=lambda s: s.name)
def test_every_kind_builds_from_a_bag_through_its_classmethod(tmp_path, dask_client, spec):
    bag = db.from_sequence(range(23), npartitions=4).map(spec.make_sample)
    m = spec.container.from_dask(tmp_path / "out", bag, batch_size=5, **spec.build_options)
    single = spec.container.from_generator(tmp_path / "single", spec.samples(0, 23), 5, **spec.build_options)
    assert isinstance(m, ShardedMap) and m.kind == spec.kind and len(m.shards) == bag.npartitions
    assert len(m) == len(single) == 23 and all(spec.equal(a, b) for a, b in zip(m, single))


def _frame(n):
    import pandas as pd

    return pd.DataFrame({"text": [f"row {i} " + "é" * (i % 3) for i in range(n)],
                         "tokens": [np.arange(i % 4, dtype=np.int32) + i for i in range(n)],
                         "label": np.arange(n, dtype=np.int64), "score": np.linspace(0, 1, n, dtype=np.float32)})


def _dataframe(frame, npartitions):
    """``frame`` as a dask dataframe that keeps its array column: by default Dask turns object columns into
    strings when it makes a dataframe (its ``dataframe.convert-string`` option)."""
    import dask
    import dask.dataframe as dd

    with dask.config.set({"dataframe.convert-string": False}):
        return dd.from_pandas(frame, npartitions=npartitions)


def _same_rows(m, reference):
    assert len(m) == len(reference)
    for got, want in zip(m, reference):
        assert list(got) == list(want) == ["text", "tokens", "label", "score"]
        assert got["text"] == want["text"] and all(equal(got[k], want[k]) for k in ("tokens", "label", "score"))


def test_records_from_a_dask_dataframe_one_shard_per_partition(tmp_path, dask_client):
    pytest.importorskip("dask.dataframe")
    from mmap_ninja import RecordsMmap

    frame = _frame(31)
    ddf = _dataframe(frame, 3)
    m = RecordsMmap.from_dask(tmp_path / "out", ddf, batch_size=4)
    assert len(m.shards) == ddf.npartitions == 3 and m.kind == "records"
    _same_rows(m, RecordsMmap.from_pandas(tmp_path / "single", frame))
    batch = m.get_batch([30, 0, 12], pad_value=-1)[0]
    assert batch["text"] == [frame.text[30], frame.text[0], frame.text[12]]
    before = _ids(tmp_path / "out")
    assert _ids(tmp_path / "out") == before and len(RecordsMmap.from_dask(tmp_path / "out", ddf, batch_size=4)) == 31
    assert _ids(tmp_path / "out") == before  # the same input again: every shard reused


def test_empty_partitions_of_records_take_the_schema_of_a_shard_with_rows(tmp_path, dask_client):
    pytest.importorskip("dask.dataframe")
    from mmap_ninja import RecordsMmap

    frame = _frame(30)
    ddf = _dataframe(frame, 3)
    late = ddf[ddf.label >= 12]  # partition 0 (rows 0..9) is empty
    assert late.map_partitions(len).compute().tolist()[0] == 0
    m = RecordsMmap.from_dask(tmp_path / "late", late)
    assert [s.length for s in m.shards] == [0, 8, 10]
    _same_rows(m, RecordsMmap.from_pandas(tmp_path / "single", frame[frame.label >= 12]))
    rows = db.from_sequence([], npartitions=1)
    with pytest.raises(ValueError, match=r"every partition of the input is empty.*pass schema="):
        RecordsMmap.from_dask(tmp_path / "none", rows)
    assert not (tmp_path / "none" / "shards.json").exists()
    schema = RecordsMmap(tmp_path / "single").schema
    assert len(RecordsMmap.from_dask(tmp_path / "none", rows, schema=schema)) == 0


def test_a_dataframe_builds_only_records(tmp_path, dask_client):
    pytest.importorskip("dask.dataframe")
    from mmap_ninja import NumpyMmap, RecordsMmap

    ddf = _dataframe(_frame(6), 2)
    with pytest.raises(TypeError, match=r"a dask.dataframe builds records maps .* NumpyMmap .*to_bag"):
        NumpyMmap.from_dask(tmp_path / "n", ddf)
    with pytest.raises(TypeError, match="not a Series"):
        RecordsMmap.from_dask(tmp_path / "r", ddf.label)
    with pytest.raises(TypeError, match=r"takes a dask\.bag or a dask\.dataframe\.DataFrame, got list"):
        RecordsMmap.from_dask(tmp_path / "r", [1, 2])
    assert not (tmp_path / "n").exists() and not (tmp_path / "r").exists()


def test_importing_mmap_ninja_does_not_import_dask(tmp_path):
    import subprocess
    import sys

    code = ("import sys, mmap_ninja\n"
            "assert all(callable(c.from_dask) for c in mmap_ninja.kinds.maps.KINDS.values())\n"
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('dask', 'distributed', 'pandas')))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_from_dask_refuses_a_url(tmp_path, dask_client):
    with pytest.raises(ValueError, match=r"s3://bucket/built is a URL, not a local path"):
        from_dask(RaggedMmap, "s3://bucket/built", db.from_sequence([ragged_sample(0)], npartitions=1))
    assert not list(Path.cwd().glob("*:"))
