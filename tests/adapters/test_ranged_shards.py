"""A sharded map at a URL read by blocks (``open_existing(url, fetch="blocks")`` on a sharded map): each shard read
through the block machinery (one block cache), bytes to the first sample, ``fetch="auto"`` per shard, pickling,
block layouts (the kit's read-side conformance on these maps: tests/testing/test_kit_containers.py)."""

from __future__ import annotations

import pickle
import uuid

import numpy as np
import pytest

fsspec = pytest.importorskip("fsspec")

from fsspec.implementations.memory import MemoryFileSystem  # noqa: E402

from mmap_ninja import RaggedMmap, merge, open_existing, upload  # noqa: E402
from mmap_ninja.adapters._block_map import RemoteBlockMap  # noqa: E402
from mmap_ninja.adapters.remote import RemoteShardedMap  # noqa: E402
from mmap_ninja.containers.block_order import block_layout  # noqa: E402
from mmap_ninja.storage import _granularity  # noqa: E402

BLOCK = 16 << 10


class CountingShardsFileSystem(MemoryFileSystem):
    """The memory file system, counting the bytes it serves (every call is the memory file system's own)."""

    protocol = "countingshards"
    bytes_served = 0
    requests = 0

    def cat_file(self, path, start=None, end=None, **kwargs):
        data = super().cat_file(path, start=start, end=end, **kwargs)
        CountingShardsFileSystem.bytes_served += len(data)
        CountingShardsFileSystem.requests += 1
        return data


fsspec.register_implementation("countingshards", CountingShardsFileSystem, clobber=True)


@pytest.fixture
def fine(monkeypatch):
    """New maps split their checksum records every 4 KiB."""
    monkeypatch.setattr(_granularity, "DEFAULT_GRANULARITY", 4096)


def _samples(n=1200):
    return [np.arange(k % 97 + 200 + k % 300, dtype=np.int32) for k in range(n)]


def _built(tmp_path, url, samples, cut=500):
    RaggedMmap.from_lists(tmp_path / "p0", samples[:cut], batch_size=1000).close()
    RaggedMmap.from_lists(tmp_path / "p1", samples[cut:], batch_size=1000).close()
    merge(tmp_path / "local", [tmp_path / "p0", tmp_path / "p1"]).close()
    upload(tmp_path / "local", url)
    return tmp_path / "local"


def test_first_sample_of_a_cold_sharded_map_fetches_one_block_of_one_shard(tmp_path, fine):
    url = f"countingshards://ranged/{uuid.uuid4().hex}"
    samples = _samples()
    local = _built(tmp_path, url, samples)
    [shard] = [p for p in (local / "shards").iterdir() if RaggedMmap(p, mode="r").__len__() == 700]
    shard_data = (shard / "data.bin").stat().st_size
    shard_index = sum((shard / f).stat().st_size for f in ("offsets.bin", "shape_offsets.bin", "checksums.bin",
                                                             "dims.bin", "header.json"))
    CountingShardsFileSystem.bytes_served = 0
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=BLOCK)
    assert isinstance(m, RemoteShardedMap) and m.fetch_block_size == BLOCK
    opening = CountingShardsFileSystem.bytes_served
    np.testing.assert_array_equal(m[900], samples[900])  # in the second shard
    fetched = CountingShardsFileSystem.bytes_served - opening
    # The shard's header, checksum records and index, and one block of its data widened to whole records.
    largest_sample = max(s.nbytes for s in samples)
    assert fetched <= shard_index + BLOCK + 4 * 4096 + 2 * largest_sample
    assert fetched < shard_data / 4
    assert isinstance(m.shard(1), RemoteBlockMap) and len(m.shard(1).shards) > 4
    before = CountingShardsFileSystem.bytes_served
    np.testing.assert_array_equal(m[901], samples[901])  # the same block: nothing fetched
    assert CountingShardsFileSystem.bytes_served == before
    m.close()


def test_a_sharded_map_read_by_blocks_reads_like_the_local_one(tmp_path, fine):
    url = f"memory://ranged/{uuid.uuid4().hex}"
    samples = _samples(900)
    _built(tmp_path, url, samples, cut=400)
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=BLOCK)
    assert len(m) == len(samples)
    for i in (0, 399, 400, 899, -1):
        np.testing.assert_array_equal(m[i], samples[i])
    for got, want in zip(m, samples):
        np.testing.assert_array_equal(got, want)
    batch = m.get_batch([1, 500, 899], pad_value=0)
    np.testing.assert_array_equal(batch[0][1, :len(samples[500])], samples[500])
    again = pickle.loads(pickle.dumps(m))
    assert again.fetch_block_size == BLOCK and isinstance(again.shard(1), RemoteBlockMap)
    np.testing.assert_array_equal(again[777], samples[777])
    # The blocks of a sharded map read by blocks are those of its shards (each shard's own, not one per shard).
    layout = block_layout(m)
    expected = np.concatenate([[0], *(m.shard_starts[k] + np.asarray(m.shard(k).shard_starts[1:])
                                      for k in range(2))])
    np.testing.assert_array_equal(layout.bounds, expected)
    assert layout.num_blocks > 4
    with pytest.raises(ValueError, match="block_bytes must be that"):
        block_layout(m, BLOCK * 2)
    m.close()
    again.close()


def test_auto_reads_shards_by_blocks_when_their_records_are_fine_else_whole(tmp_path, fine):
    url = f"memory://ranged/{uuid.uuid4().hex}"
    samples = _samples(900)
    _built(tmp_path, url, samples, cut=400)
    by_blocks = open_existing(url, cache_dir=tmp_path / "c", block_size=BLOCK)
    assert isinstance(by_blocks.shard(0), RemoteBlockMap)
    np.testing.assert_array_equal(by_blocks[450], samples[450])
    coarse = open_existing(url, cache_dir=tmp_path / "c", block_size=1024)  # granularity 4 KiB > 2 blocks
    assert isinstance(coarse.shard(0), RaggedMmap)
    np.testing.assert_array_equal(coarse[450], samples[450])
    whole = open_existing(url, cache_dir=tmp_path / "c", fetch="whole")
    assert whole.fetch_block_size is None and isinstance(whole.shard(1), RaggedMmap)
    with pytest.raises(ValueError, match="block_size"):
        open_existing(url, cache_dir=tmp_path / "c", fetch="blocks", block_size=0)


def test_a_copy_or_a_second_opening_reads_cached_shard_headers_index_and_blocks_without_a_request(tmp_path, fine):
    url = f"countingshards://ranged/{uuid.uuid4().hex}"
    samples = _samples(900)
    _built(tmp_path, url, samples, cut=400)
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=BLOCK)
    np.testing.assert_array_equal(m[10], samples[10])
    np.testing.assert_array_equal(m[800], samples[800])
    CountingShardsFileSystem.requests = 0
    copy = pickle.loads(pickle.dumps(m))  # as a spawned DataLoader worker gets it (shards.json pinned)
    np.testing.assert_array_equal(copy[10], samples[10])
    np.testing.assert_array_equal(copy[800], samples[800])
    assert CountingShardsFileSystem.requests == 0
    # fetch="auto" on shards already cached whole: no request for their headers either.
    whole = open_existing(url, cache_dir=tmp_path / "whole", fetch="whole")
    assert [len(whole.shard(k)) for k in range(2)] == [400, 500]
    auto = pickle.loads(pickle.dumps(open_existing(url, cache_dir=tmp_path / "whole", block_size=BLOCK)))
    CountingShardsFileSystem.requests = 0
    assert isinstance(auto.shard(0), RaggedMmap) and isinstance(auto.shard(1), RaggedMmap)
    np.testing.assert_array_equal(auto[800], samples[800])
    assert CountingShardsFileSystem.requests == 0
    for opened in (m, copy, whole, auto):
        opened.close()


def test_the_cache_limit_evicts_the_blocks_of_shards_nobody_holds(tmp_path, fine, monkeypatch):
    import gc
    import warnings

    from mmap_ninja.adapters.cache import Cache

    url = f"memory://ranged/{uuid.uuid4().hex}"
    samples = _samples(900)
    _built(tmp_path, url, samples, cut=400)
    cache = Cache(tmp_path / "cache")
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=BLOCK, max_open_shards=1,
                      cache_size_limit=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (held entries fill a limit of one byte: it warns once per process)
        for i in range(0, len(samples), 25):
            np.testing.assert_array_equal(m[i], samples[i])
    gc.collect()
    # Left at most: the view of shards.json, the open shard's header, index and open block, and what the last
    # fetch kept before its shard was dropped; every other block was evicted as the reads went on.
    held = cache.usage()
    assert len(held) <= 6
    assert len([p for p in cache.entries.iterdir() if (p / "data.bin").exists()]) <= 2
    m.close()
    gc.collect()
    open_existing(url, cache_dir=tmp_path / "cache", cache_size_limit=0).close()  # the limit, enforced at opening
    # Left: only the view of shards.json that this opening made after evicting.
    assert [sorted(p.name for p in (cache.entries / key).iterdir()) for key in cache.usage()] == [["shards.json"]]
