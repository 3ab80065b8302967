"""Index columns larger than `mmap_ninja.adapters._blocks.INDEX_WHOLE_LIMIT` (lowered here to a few KiB) are fetched
by block: a block read fetches the entries of the index it needs by ranged requests, checked against the index's
own checksum records, never the whole index."""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from typing import ClassVar

import numpy as np
import pytest

fsspec = pytest.importorskip("fsspec")

from fsspec.implementations.memory import MemoryFileSystem  # noqa: E402

from mmap_ninja import RaggedMmap, StringsMmap, open_existing, upload  # noqa: E402
from mmap_ninja.adapters import _blocks  # noqa: E402
from mmap_ninja.adapters._block_map import RemoteBlockMap  # noqa: E402
from mmap_ninja.errors import ChecksumMismatchError  # noqa: E402
from mmap_ninja.storage import _granularity  # noqa: E402

BLOCK = 16 << 10


class ObjectCountingFileSystem(MemoryFileSystem):
    """The memory file system, counting the bytes it serves per object (every call is the memory file system's
    own)."""

    protocol = "indexcountingmem"
    served: ClassVar[dict[str, int]] = defaultdict(int)

    def cat_file(self, path, start=None, end=None, **kwargs):
        data = super().cat_file(path, start=start, end=end, **kwargs)
        ObjectCountingFileSystem.served[path.rsplit("/", 1)[-1].split(".")[0]] += len(data)
        return data

    def get_file(self, rpath, lpath, *args, **kwargs):
        ObjectCountingFileSystem.served[rpath.rsplit("/", 1)[-1].split(".")[0]] += self.size(rpath)
        return super().get_file(rpath, lpath, *args, **kwargs)

    @classmethod
    def reset(cls):
        cls.served.clear()


fsspec.register_implementation("indexcountingmem", ObjectCountingFileSystem, clobber=True)


@pytest.fixture
def small_limit(monkeypatch):
    """Checksum records every 4 KiB, and index columns over 4 KiB fetched by block."""
    monkeypatch.setattr(_granularity, "DEFAULT_GRANULARITY", 4096)
    monkeypatch.setattr(_blocks, "INDEX_WHOLE_LIMIT", 4096)


def _strings(n=20_000):
    return [f"sample {k} " + "x" * (k % 23) for k in range(n)]


def _ragged(n=6_000):
    return [np.arange(k % 31 + 2, dtype=np.int32).reshape(-1, 1 + k % 2) if (k % 31) % 2 == 0 or k % 2 == 0
            else np.arange(k % 31 + 2, dtype=np.int32) for k in range(n)]


def test_a_large_index_is_fetched_by_block_not_whole(tmp_path, small_limit):
    url = f"indexcountingmem://ranged-index/{uuid.uuid4().hex}"
    strings = _strings()
    StringsMmap.from_strings(tmp_path / "local", strings).close()
    upload(tmp_path / "local", url)
    offsets_bytes = (tmp_path / "local" / "offsets.bin").stat().st_size
    assert offsets_bytes > 32 * 4096
    ObjectCountingFileSystem.reset()
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=BLOCK)
    assert isinstance(m, RemoteBlockMap)
    assert m[len(strings) // 2] == strings[len(strings) // 2]
    served = dict(ObjectCountingFileSystem.served)
    # The offsets of one block (about BLOCK bytes of data: ~600 samples, 5 KB of entries) widened to whole records.
    assert 0 < served["offsets"] <= 4 * 4096
    assert served["data"] <= BLOCK + 3 * 4096
    assert list(m) == strings  # every block, each from the entries it fetched
    assert ObjectCountingFileSystem.served["offsets"] <= offsets_bytes + len(m._blocks) * 2 * 4096
    m.close()


def test_without_the_limit_the_index_comes_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(_granularity, "DEFAULT_GRANULARITY", 4096)
    url = f"indexcountingmem://ranged-index/{uuid.uuid4().hex}"
    strings = _strings()
    StringsMmap.from_strings(tmp_path / "local", strings).close()
    upload(tmp_path / "local", url)
    ObjectCountingFileSystem.reset()
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=BLOCK)
    assert m[7] == strings[7]
    assert ObjectCountingFileSystem.served["offsets"] == (tmp_path / "local" / "offsets.bin").stat().st_size
    m.close()


def test_a_ragged_map_with_every_index_ranged_reads_back(tmp_path, small_limit):
    url = f"indexcountingmem://ranged-index/{uuid.uuid4().hex}"
    samples = _ragged()
    RaggedMmap.from_lists(tmp_path / "local", samples, batch_size=500).close()
    upload(tmp_path / "local", url)
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=BLOCK)
    assert m._plan.ranged == {"offsets", "shape_offsets"}
    for k in (len(samples) // 3, 0, len(samples) - 1):
        np.testing.assert_array_equal(m[k], samples[k])
    for expected, got in zip(samples, m):
        np.testing.assert_array_equal(got, expected)
    m.close()


def test_a_damaged_index_block_is_refused_naming_the_url_and_range(tmp_path, small_limit):
    url = f"indexcountingmem://ranged-index/{uuid.uuid4().hex}"
    strings = _strings()
    StringsMmap.from_strings(tmp_path / "local", strings).close()
    upload(tmp_path / "local", url)
    fs, root = fsspec.core.url_to_fs(url)
    [name] = [n.rsplit("/", 1)[-1] for n in fs.ls(root, detail=False) if n.rsplit("/", 1)[-1].startswith("offsets.")]
    raw = bytearray(fs.cat_file(f"{root}/{name}"))
    target = len(strings) // 2
    raw[target * 8] ^= 0x01  # the entry of the sample read below: still plausible offsets, but not what was written
    fs.pipe_file(f"{root}/{name}", bytes(raw))
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=BLOCK)
    assert m[0] == strings[0]  # another block: its entries are sound
    with pytest.raises(ChecksumMismatchError, match=rf"{re.escape(url)}/{re.escape(name)} bytes \d+\.\.\d+ do not"):
        m[target]
    assert not list((tmp_path / "cache" / "staging").iterdir())
    m.close()


def test_a_map_with_a_key_index_is_downloaded_whole_and_looks_keys_up(tmp_path, small_limit):
    # The key index is a derived column written in place, without checksum records: a block reader could not
    # check the slots it fetches, so `auto` downloads such a map whole (checked), and `blocks` reads its rows by
    # blocks and its lookups from the map downloaded whole.
    from mmap_ninja import RecordsMmap

    url = f"indexcountingmem://ranged-index/{uuid.uuid4().hex}"
    paths = [f"file-{k:05d}.jpg" for k in range(5_000)]
    RecordsMmap.from_dict(tmp_path / "local", {"path": paths, "label": np.arange(5_000) % 7}, key="path").close()
    upload(tmp_path / "local", url)
    m = open_existing(url, cache_dir=tmp_path / "cache", block_size=4096)  # auto: many blocks, fine records
    assert not isinstance(m, RemoteBlockMap) and m.fetch_block_size is None
    assert m.index_of("file-04321.jpg") == 4321
    m.close()
    by_blocks = open_existing(url, cache_dir=tmp_path / "by_blocks", fetch="blocks", block_size=4096)
    assert isinstance(by_blocks, RemoteBlockMap) and len(by_blocks.shards) > 4 and by_blocks.key == "path"
    assert by_blocks[4321] == {"path": "file-04321.jpg", "label": 4321 % 7}
    assert by_blocks.get_batch([7, 4999])["path"] == ["file-00007.jpg", "file-04999.jpg"]
    assert by_blocks.open_shards == 3 and "_whole_remote" not in by_blocks.__dict__  # rows: their blocks only
    assert by_blocks.index_of("file-00042.jpg") == 42 and "file-00042.jpg" in by_blocks
    assert "file-05000.jpg" not in by_blocks and 3 not in by_blocks
    with pytest.raises(KeyError, match=r"file-05000\.jpg"):
        by_blocks.index_of("file-05000.jpg")
    by_blocks.close()


def test_a_keyed_sharded_records_map_reads_and_looks_keys_up_by_blocks(tmp_path, small_limit):
    from mmap_ninja import RecordsMmap, merge

    url = f"indexcountingmem://ranged-index/{uuid.uuid4().hex}"
    for k in range(2):
        RecordsMmap.from_dict(tmp_path / f"p{k}", {"id": [f"row-{k}-{i}" for i in range(2_000)],
                                                   "x": np.arange(2_000) + 10_000 * k}, key="id").close()
    merge(tmp_path / "local", [tmp_path / "p0", tmp_path / "p1"]).close()
    upload(tmp_path / "local", url)
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=4096)
    assert isinstance(m.shard(1), RemoteBlockMap)
    assert m[2_001] == {"id": "row-1-1", "x": 10_001} and m["x"][3] == 3
    assert m.get_batch([0, 3_999])["id"] == ["row-0-0", "row-1-1999"]
    assert m.index_of("row-1-7") == 2_007 and "row-0-5" in m and "row-2-0" not in m
    m.close()
