"""`upload` publishes a slot map whose column files carry a suffix (it replaced a map while a reader still held the
old files: FORMAT.md, commit.slots) as a plain map, reading the suffixed files."""

import json

import numpy as np
import pytest

pytest.importorskip("fsspec")
import fsspec

from mmap_ninja import RaggedMmap, open_existing, upload


def test_a_slot_map_with_suffixed_files_uploads_as_a_plain_map(tmp_path):
    path = tmp_path / "m"
    old = RaggedMmap.from_generator(path, [np.arange(3)], 4, commit="slots")
    assert old[0].tolist() == [0, 1, 2]  # a reader holding the first generation's files
    samples = [np.arange(n, dtype=np.int32) * 7 for n in (5, 0, 2, 9)]
    RaggedMmap.from_generator(path, samples, 4, commit="slots", overwrite=True).close()
    assert any(p.name.count(".") == 2 for p in path.glob("data.*.bin")), "the new generation's files carry a suffix"
    upload(path, "memory://slot-suffix/m")
    header = json.loads(fsspec.filesystem("memory").cat("memory://slot-suffix/m/header.json"))
    assert "file_suffix" not in header and "commit.slots" not in header["requires"]
    for fetch in ("whole", "blocks"):
        with open_existing("memory://slot-suffix/m", cache_dir=tmp_path / f"cache-{fetch}", fetch=fetch,
                           verify_reads=True) as remote:
            assert len(remote) == 4
            for got, want in zip(remote, samples):
                assert got.dtype == want.dtype and got.tolist() == want.tolist()
    old.close()
