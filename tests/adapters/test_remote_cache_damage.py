"""The remote cache re-checks what it finds: an entry a power cut left truncated or zero-filled is evicted and
fetched again, never served."""

import os

import pytest

pytest.importorskip("fsspec")

from mmap_ninja import StringsMmap, merge, open_existing, upload
from mmap_ninja.storage import _osfile

TEXTS = [f"string number {i} " * (i % 5 + 1) for i in range(2_000)]


def cached_files(cache, name):
    return sorted((cache / "entries").glob(f"*/{name}"))


@pytest.mark.parametrize("damage", ["zero-filled", "truncated", "zero-filled-offsets"])
def test_a_damaged_cached_entry_is_evicted_and_fetched_again(tmp_path, damage):
    StringsMmap.from_strings(tmp_path / "local", TEXTS).close()
    url = f"memory://cache-damage/{damage}"
    upload(tmp_path / "local", url)
    cache = tmp_path / "cache"
    first = open_existing(url, cache_dir=cache)
    assert first[1999] == TEXTS[1999]
    name = "offsets.bin" if damage == "zero-filled-offsets" else "data.bin"
    (cached,) = cached_files(cache, name)
    size = cached.stat().st_size
    if _osfile.HELD_FILES_PINNED:
        first.close()  # Windows: a damaged entry that a handle still maps cannot be moved away (nor damaged so)
    if damage == "truncated":
        os.truncate(cached, size // 2)
    else:
        cached.write_bytes(bytes(size))  # what a power cut after an un-fsynced rename can leave
    again = open_existing(url, cache_dir=cache)
    assert list(again) == TEXTS
    (refetched,) = cached_files(cache, name)
    assert refetched.stat().st_size == size and refetched.read_bytes() != bytes(size)


def test_a_damaged_cached_shard_is_fetched_again(tmp_path):
    StringsMmap.from_strings(tmp_path / "a", TEXTS[:1000]).close()
    StringsMmap.from_strings(tmp_path / "b", TEXTS[1000:]).close()
    merge(tmp_path / "sharded", [tmp_path / "a", tmp_path / "b"]).close()
    url = "memory://cache-damage/sharded"
    upload(tmp_path / "sharded", url)
    cache = tmp_path / "cache"
    assert list(open_existing(url, cache_dir=cache)) == TEXTS
    for cached in cached_files(cache, "data.bin"):
        cached.write_bytes(bytes(cached.stat().st_size))
    assert list(open_existing(url, cache_dir=cache)) == TEXTS
