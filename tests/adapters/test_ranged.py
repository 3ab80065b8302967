"""Ranged block reads of maps in object storage (``open_existing(url, fetch="blocks")``): bytes fetched to the first
sample, checks of every block, the per-block cache shared by processes (a corrupted cached block, a reader killed
mid-fetch, the size limit). The kit's read-side conformance on block-read maps runs in
tests/testing/test_kit_containers.py (its ``remote-blocks-*`` and ``remote-sharded-blocks-*`` cases)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pytest

fsspec = pytest.importorskip("fsspec")

from fsspec.implementations.memory import MemoryFileSystem  # noqa: E402

from mmap_ninja import CacheOverLimitWarning, RaggedMmap, StringsMmap, open_existing, upload  # noqa: E402
from mmap_ninja.adapters._block_map import RemoteBlockMap  # noqa: E402
from mmap_ninja.errors import ChecksumMismatchError, NotAMapError  # noqa: E402
from mmap_ninja.storage import _granularity  # noqa: E402

BLOCK = 16 << 10


class CountingMemoryFileSystem(MemoryFileSystem):
    """The memory file system, counting the requests it serves and the bytes they return (a real file system:
    every call is the memory file system's own)."""

    protocol = "countingmem"
    requests = 0
    bytes_served = 0

    def cat_file(self, path, start=None, end=None, **kwargs):
        data = super().cat_file(path, start=start, end=end, **kwargs)
        CountingMemoryFileSystem.requests += 1
        CountingMemoryFileSystem.bytes_served += len(data)
        return data

    @classmethod
    def reset(cls):
        cls.requests = cls.bytes_served = 0


fsspec.register_implementation("countingmem", CountingMemoryFileSystem, clobber=True)


@pytest.fixture
def fine(monkeypatch):
    """New maps split their checksum records every 4 KiB (blocks of 16 KiB are then checked record by record)."""
    monkeypatch.setattr(_granularity, "DEFAULT_GRANULARITY", 4096)


def _samples(n=600):
    return [np.arange(k % 97 + 200 + k, dtype=np.int32) for k in range(n)]


def _built(tmp_path, url, samples):
    RaggedMmap.from_lists(tmp_path / "local", samples, batch_size=1000).close()
    upload(tmp_path / "local", url)
    return tmp_path / "local"


def test_first_sample_of_a_cold_map_fetches_one_block_and_the_index(tmp_path, fine):
    url = f"countingmem://ranged/{uuid.uuid4().hex}"
    samples = _samples()
    local = _built(tmp_path, url, samples)
    data_bytes = (local / "data.bin").stat().st_size
    index_bytes = sum((local / f).stat().st_size for f in ("offsets.bin", "shape_offsets.bin", "checksums.bin",
                                                            "dims.bin"))  # (dims: small, fetched whole)
    CountingMemoryFileSystem.reset()
    m = open_existing(url, cache_dir=tmp_path / "cache", block_size=BLOCK)  # auto: the records are fine
    assert isinstance(m, RemoteBlockMap) and m.fetch_block_size == BLOCK
    assert CountingMemoryFileSystem.requests == 1  # opening: the header only
    header_bytes = CountingMemoryFileSystem.bytes_served
    np.testing.assert_array_equal(m[len(samples) // 2], samples[len(samples) // 2])
    fetched = CountingMemoryFileSystem.bytes_served - header_bytes
    # One block of the data plus the index; the data and dims ranges are widened to whole checksum records (at
    # most a record, of up to 4 KiB and one sample, on each side).
    largest_sample = max(s.nbytes for s in samples)
    assert fetched <= index_bytes + BLOCK + 4 * 4096 + 2 * largest_sample
    assert fetched < data_bytes / 4
    before = CountingMemoryFileSystem.bytes_served
    np.testing.assert_array_equal(m[len(samples) // 2 + 1], samples[len(samples) // 2 + 1])  # the same block
    assert CountingMemoryFileSystem.bytes_served == before
    for i in (0, len(samples) - 1, 7):
        np.testing.assert_array_equal(m[i], samples[i])
    m.close()


def test_whole_and_auto_on_a_map_without_fine_records(tmp_path):
    url = f"memory://ranged/{uuid.uuid4().hex}"
    StringsMmap.from_strings(tmp_path / "s", ["a", "bc"]).close()
    header = json.loads((tmp_path / "s" / "header.json").read_text())
    upload(tmp_path / "s", url)
    assert header["checksums"]["granularity"] == _granularity.DEFAULT_GRANULARITY
    assert not isinstance(open_existing(url, cache_dir=tmp_path / "c", fetch="whole"), RemoteBlockMap)
    small = open_existing(url, cache_dir=tmp_path / "c", block_size=1024)  # granularity far above the block
    assert not isinstance(small, RemoteBlockMap) and small.fetch_block_size is None
    with pytest.raises(ValueError, match="fetch must be one of"):
        open_existing(url, cache_dir=tmp_path / "c", fetch="ranges")
    with pytest.raises(ValueError, match="block_size"):
        open_existing(url, cache_dir=tmp_path / "c", fetch="blocks", block_size=0)


def test_a_damaged_object_is_fetched_again_once_then_refused_naming_url_and_range(tmp_path, fine):
    url = f"countingmem://ranged/{uuid.uuid4().hex}"
    samples = _samples()
    _built(tmp_path, url, samples)
    fs, root = fsspec.core.url_to_fs(url)
    [name] = [n.rsplit("/", 1)[-1] for n in fs.ls(root, detail=False) if n.rsplit("/", 1)[-1].startswith("data.")]
    path = f"{root}/{name}"  # the object upload named after the map's id and commit
    data = bytearray(fs.cat_file(path))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(path, bytes(data))
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=BLOCK)
    np.testing.assert_array_equal(m[0], samples[0])  # another block: unaffected
    with pytest.raises(ChecksumMismatchError, match=rf"{url}/{re.escape(name)} bytes \d+\.\.\d+ do not match"):
        for i in reversed(range(len(samples))):  # (backwards: no read-ahead fetches the damaged block meanwhile)
            CountingMemoryFileSystem.reset()
            np.testing.assert_array_equal(m[i], samples[i])  # never a wrong sample
    # The failing read: the block's data range (dims, small, came whole with the index), then once more.
    assert CountingMemoryFileSystem.requests == 2
    assert not list((tmp_path / "cache" / "staging").iterdir())  # nothing of the refused block stays


def test_a_corrupted_cached_block_is_fetched_again(tmp_path, fine):
    url = f"countingmem://ranged/{uuid.uuid4().hex}"
    samples = _samples()
    _built(tmp_path, url, samples)
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=BLOCK)
    np.testing.assert_array_equal(m[300], samples[300])
    m.close()
    [block] = [p for p in (tmp_path / "cache" / "entries").iterdir() if (p / "data.bin").exists()]
    with open(block / "data.bin", "r+b") as f:
        f.seek(100)
        byte = f.read(1)[0]
        f.seek(100)
        f.write(bytes([byte ^ 0x01]))
    CountingMemoryFileSystem.reset()
    again = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=BLOCK)
    np.testing.assert_array_equal(again[300], samples[300])
    assert CountingMemoryFileSystem.requests >= 1  # fetched again: the damaged copy was never read


def test_the_cache_limit_evicts_blocks_nobody_holds_and_warns_when_held_blocks_fill_it(tmp_path, fine, monkeypatch):
    from mmap_ninja.adapters import _block_map
    from mmap_ninja.adapters.cache import Cache

    monkeypatch.setattr(_block_map, "_warned_over_limit", False)
    url = f"memory://ranged/{uuid.uuid4().hex}"
    samples = _samples()
    _built(tmp_path, url, samples)
    cache = Cache(tmp_path / "cache")
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=BLOCK, max_open_shards=1,
                      cache_size_limit=1)
    with pytest.warns(CacheOverLimitWarning, match="over its cache_size_limit"):
        for i in range(0, len(samples), 50):
            np.testing.assert_array_equal(m[i], samples[i])
    # Left: the index and the open block (held), and at most the block max_open_shards=1 dropped last; every
    # other block was evicted as the reads went on.
    assert 2 <= len(cache.usage()) <= 3
    m.close()
    import gc

    gc.collect()
    open_existing(url, cache_dir=tmp_path / "cache", cache_size_limit=0).close()  # the limit, enforced at opening
    assert cache.usage() == {}


_HANGING_FS = '''
import os, time
from fsspec.implementations.local import LocalFileSystem

class HangingFileSystem(LocalFileSystem):
    """The local file system; with $HANG_MARKER set, a ranged read of data.bin writes the marker and hangs."""
    protocol = "hangfile"

    def cat_ranges(self, paths, starts, ends, *args, **kwargs):
        marker = os.environ.get("HANG_MARKER")
        if marker and any(str(p).endswith("data.bin") for p in paths):
            open(marker, "w").close()
            time.sleep(3600)  # killed here
        return super().cat_ranges(paths, starts, ends, *args, **kwargs)
'''


def test_a_reader_killed_mid_fetch_leaves_no_partial_block(tmp_path, fine):
    (tmp_path / "hangfs.py").write_text(_HANGING_FS)
    samples = _samples()
    RaggedMmap.from_lists(tmp_path / "remote", samples, batch_size=1000).close()
    url = f"hangfile://{tmp_path / 'remote'}"
    marker = tmp_path / "fetching"
    child = textwrap.dedent(f"""
        import sys, fsspec
        sys.path.insert(0, {str(tmp_path)!r})
        from hangfs import HangingFileSystem
        fsspec.register_implementation("hangfile", HangingFileSystem, clobber=True)
        from mmap_ninja import open_existing
        m = open_existing({url!r}, cache_dir={str(tmp_path / 'cache')!r}, fetch="blocks", block_size={BLOCK})
        m[300]
    """)
    process = subprocess.Popen([sys.executable, "-c", child], env={**os.environ, "HANG_MARKER": str(marker)})
    try:
        import time

        deadline = time.monotonic() + 600  # waits for the child to reach the fetch; the bound only ends a hang
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert marker.exists(), "the child never reached the block fetch"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    entries = tmp_path / "cache" / "entries"
    assert not [p for p in entries.iterdir() if (p / "data.bin").exists()]  # no block published
    sys.path.insert(0, str(tmp_path))
    try:
        from hangfs import HangingFileSystem
    finally:
        sys.path.remove(str(tmp_path))
    fsspec.register_implementation("hangfile", HangingFileSystem, clobber=True)
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=BLOCK)
    np.testing.assert_array_equal(m[300], samples[300])
    assert all((entries / p.name).is_dir() for p in entries.iterdir())
    assert not list((tmp_path / "cache" / "staging").iterdir())  # the dead fetch's staging was cleaned up


def test_auto_downloads_a_map_of_a_few_blocks_whole_and_kind_holds_under_both(tmp_path, fine):
    from mmap_ninja import ShardedMap

    url = f"memory://ranged/{uuid.uuid4().hex}"
    samples = _samples()
    _built(tmp_path, url, samples)
    data_bytes = (tmp_path / "local" / "data.bin").stat().st_size
    few = open_existing(url, cache_dir=tmp_path / "c", block_size=data_bytes // 3)  # 4 blocks or fewer: whole
    assert isinstance(few, RaggedMmap) and few.fetch_block_size is None
    assert isinstance(open_existing(url, cache_dir=tmp_path / "c", block_size=BLOCK, kind=ShardedMap), RemoteBlockMap)
    by_blocks = open_existing(url, cache_dir=tmp_path / "c", block_size=BLOCK, kind=RaggedMmap)  # its kind's too
    assert isinstance(by_blocks, RemoteBlockMap) and isinstance(by_blocks, RaggedMmap)
    assert isinstance(open_existing(url, cache_dir=tmp_path / "c", fetch="whole", kind=RaggedMmap), RaggedMmap)


def test_sequential_reads_fetch_the_next_block_ahead(tmp_path, fine):
    from mmap_ninja.adapters._block_map import _read_ahead_pool

    url = f"memory://ranged/{uuid.uuid4().hex}"
    samples = _samples()
    _built(tmp_path, url, samples)
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=BLOCK)
    entries = tmp_path / "cache" / "entries"

    def blocks_cached():
        return len([p for p in entries.iterdir() if (p / "data.bin").exists()])

    starts = m.shard_starts
    m[starts[2]]  # block 2, then block 5: no pattern, nothing ahead
    m[starts[5]]
    _read_ahead_pool().submit(lambda: None).result()  # (one thread, in order: what was submitted is done)
    assert blocks_cached() == 2
    m[starts[6]]  # 5 then 6: not yet (a shuffled window opens two neighbours in order often enough)
    _read_ahead_pool().submit(lambda: None).result()
    assert blocks_cached() == 3
    m[starts[7]]  # 5, 6, 7, each opened for the first time: block 8 is fetched ahead
    _read_ahead_pool().submit(lambda: None).result()
    assert blocks_cached() == 5
    for k in (8, 9):
        np.testing.assert_array_equal(m[starts[k]], samples[starts[k]])
    m.close()


def test_refresh_and_pickling_of_a_block_read_map(tmp_path, fine):
    import pickle

    url = f"memory://ranged/{uuid.uuid4().hex}"
    samples = _samples()
    _built(tmp_path, url, samples)
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=BLOCK)
    np.testing.assert_array_equal(m[10], samples[10])
    copy = pickle.loads(pickle.dumps(m))
    assert isinstance(copy, RemoteBlockMap) and copy.fetch_block_size == BLOCK
    np.testing.assert_array_equal(copy[599], samples[599])
    assert m.refresh() == 0
    more = samples + _samples(50)
    RaggedMmap.from_lists(tmp_path / "newer", more, batch_size=1000).close()
    upload(tmp_path / "newer", url)
    assert m.refresh() == 50
    np.testing.assert_array_equal(m[len(more) - 1], more[-1])
    np.testing.assert_array_equal(copy[599], samples[599])  # the copy keeps the version it was opened with
    m.close()
    with pytest.raises(ValueError, match="closed"):
        m[0]


def test_an_epoch_under_block_shuffle_fetches_each_block_about_once_with_a_small_cache(tmp_path, fine):
    pytest.importorskip("torch")
    from mmap_ninja.adapters.torch import BlockShuffleSampler

    url = f"countingmem://ranged/{uuid.uuid4().hex}"
    samples = _samples()
    local = _built(tmp_path, url, samples)
    data_bytes = (local / "data.bin").stat().st_size
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=BLOCK, max_open_shards=2,
                      cache_size_limit=4 * BLOCK)
    m[0]  # the index
    CountingMemoryFileSystem.reset()
    sampler = BlockShuffleSampler(m, window_blocks=2, seed=1)
    order = list(sampler)
    assert sorted(order) == list(range(len(samples)))
    for i in order:
        np.testing.assert_array_equal(m[i], samples[i])
    # Every block fetched about once (records widen a block by at most one record on each side).
    assert CountingMemoryFileSystem.bytes_served <= 1.1 * data_bytes
    fully_shuffled = CountingMemoryFileSystem.bytes_served
    CountingMemoryFileSystem.reset()
    for i in np.random.default_rng(0).permutation(len(samples))[:len(samples) // 4].tolist():
        m[i]  # a full shuffle: a quarter of an epoch already fetches more than a whole one above
    assert CountingMemoryFileSystem.bytes_served > fully_shuffled
    m.close()


def test_a_corrupted_cached_index_is_fetched_again(tmp_path, fine):
    url = f"countingmem://ranged/{uuid.uuid4().hex}"
    samples = _samples()
    _built(tmp_path, url, samples)
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=BLOCK)
    np.testing.assert_array_equal(m[300], samples[300])
    m.close()
    [index] = [p for p in (tmp_path / "cache" / "entries").iterdir() if (p / "remote-header.json").exists()]
    offsets = np.fromfile(index / "offsets.bin", dtype="<i8")
    offsets[11] += 1  # a plausible, wrong offset, in a block not fetched yet
    offsets.tofile(index / "offsets.bin")
    CountingMemoryFileSystem.reset()
    again = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=BLOCK)
    for i in (10, 11, 300):
        np.testing.assert_array_equal(again[i], samples[i])
    assert CountingMemoryFileSystem.requests >= 1  # the index was fetched again


@pytest.mark.parametrize("fetch", ["whole", "blocks"])
def test_refresh_refuses_a_map_of_another_kind_uploaded_at_the_url(tmp_path, fine, fetch):
    url = f"memory://ranged/{uuid.uuid4().hex}"
    samples = _samples()
    _built(tmp_path, url, samples)
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch=fetch, block_size=BLOCK)
    np.testing.assert_array_equal(m[3], samples[3])
    StringsMmap.from_strings(tmp_path / "texts", ["a", "b"]).close()
    upload(tmp_path / "texts", url)
    with pytest.raises(NotAMapError, match=r"holds a map of kind 'strings' now, not 'ragged'; open it again"):
        m.refresh()
    np.testing.assert_array_equal(m[3], samples[3])  # the handle keeps reading the version it has
    m.close()
