"""Maps in object storage: read through the cache from a real S3 server (moto_server on loopback, s3fs client)."""

import gc
import json
import multiprocessing
import os
import pickle
import re
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("s3fs")

import mmap_ninja
from mmap_ninja import CorruptMapError, NotAMapError, RaggedMmap, StringsMmap, merge, open_existing, upload
from mmap_ninja.adapters.remote import Cache, RemoteMap, RemoteShardedMap, RemoteStorageError


def ragged(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 1000, size=int(rng.integers(1, 50))).astype(np.int32) for _ in range(n)]


def sharded(tmp_path, name, parts):
    """A sharded ragged map in tmp_path/name, one shard per list of samples in ``parts``."""
    paths = []
    for k, samples in enumerate(parts):
        RaggedMmap.from_lists(tmp_path / f"{name}-part{k}", samples).close()
        paths.append(tmp_path / f"{name}-part{k}")
    merge(tmp_path / name, paths)
    return tmp_path / name


def shard_files(gets):
    """The GET counts of column files (not headers)."""
    return {key: n for key, n in gets.items() if key.endswith(".bin")}


def cache_files(cache):
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file() and "locks" not in p.parts)


def test_open_fetches_only_the_header_then_each_shard_on_first_touch(tmp_path, s3_server):
    parts = [ragged(20, seed=k) for k in range(3)]
    local = sharded(tmp_path, "s", parts)
    bucket = s3_server.bucket()
    url = f"s3://{bucket}/data/s"
    upload(local, url, storage_options=s3_server.options())
    uploaded = len(s3_server.requests(bucket))

    m = open_existing(url, cache_dir=tmp_path / "cache", storage_options=s3_server.options())
    assert isinstance(m, RemoteShardedMap) and len(m) == 60 and m.url == url
    after_open = s3_server.requests(bucket)[uploaded:]
    assert {key for _, key in after_open} == {"data/s/shards.json"}  # opening touched the header and nothing else
    assert [method for method, _ in after_open].count("GET") == 1  # (s3fs asks for its size first: a HEAD)

    np.testing.assert_array_equal(m[25], parts[1][5])  # first touch of shard 1 downloads shard 1 only
    gets = shard_files(s3_server.gets(bucket))
    assert gets and all("shard-000001/" in key for key in gets) and set(gets.values()) == {1}
    assert all(np.array_equal(a, b) for a, b in zip(m, [s for p in parts for s in p]))
    gets = shard_files(s3_server.gets(bucket))
    per_shard = len(list((local / "shards" / "shard-000000").glob("*.bin")))  # data, offsets, checksums, ...
    assert per_shard >= 3 and len(gets) == 3 * per_shard and set(gets.values()) == {1}  # each fetched once
    m.close()

    again = open_existing(url, cache_dir=tmp_path / "cache", storage_options=s3_server.options())
    assert [a.tolist() for a in again[0:60:7]] == [s.tolist() for s in [s for p in parts for s in p][0:60:7]]
    assert shard_files(s3_server.gets(bucket)) == gets  # the cache served it: no file fetched twice
    before = s3_server.requests(bucket)
    copy = pickle.loads(pickle.dumps(again))  # as a spawned DataLoader worker gets it
    assert isinstance(copy, RemoteShardedMap) and copy.url == url and copy[59].tolist() == parts[2][19].tolist()
    assert s3_server.requests(bucket) == before  # the copy carries its header and reads from the cache
    copy.close()
    again.close()


def test_a_single_map_downloads_on_first_read_and_pickles_by_url(tmp_path, s3_server):
    samples = ragged(30)
    RaggedMmap.from_lists(tmp_path / "r", samples, metadata={"source": "test"}).close()
    bucket = s3_server.bucket()
    url = f"s3://{bucket}/r"
    upload(tmp_path / "r", url, storage_options=s3_server.options())
    m = open_existing(url, cache_dir=tmp_path / "cache", storage_options=s3_server.options())
    assert isinstance(m, RemoteMap) and len(m) == 30 and m.kind == "ragged"
    assert not shard_files(s3_server.gets(bucket))  # len() came from the header
    np.testing.assert_array_equal(m[-1], samples[-1])
    assert m.metadata == {"source": "test"}
    padded, lengths = m.get_batch([0, 1, 2], pad_value=-1)
    assert padded[0, len(samples[0]):].tolist() == [-1] * (padded.shape[1] - len(samples[0]))
    assert lengths.tolist() == [len(s) for s in samples[:3]]
    before = s3_server.requests(bucket)
    copy = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(copy[3], samples[3])
    assert s3_server.requests(bucket) == before  # the copy reopened from the cache without a single request
    assert len(pickle.dumps(m)) < 10_000  # the URL, options and header; never the data
    copy.close()
    m.close()


def test_processes_on_one_node_download_each_file_once(tmp_path, s3_server):
    parts = [ragged(15, seed=k) for k in range(4)]
    local = sharded(tmp_path, "s", parts)
    bucket = s3_server.bucket()
    url = f"s3://{bucket}/s"
    upload(local, url, storage_options=s3_server.options())
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(3), context.Queue()
    readers = [context.Process(target=_read_all, args=(url, str(tmp_path / "cache"), s3_server.options(), barrier,
                                                       results)) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        sums = [results.get(timeout=300) for _ in readers]
    finally:
        for reader in readers:
            reader.join(timeout=300)
            if reader.is_alive():  # a reader stuck on a lock: stop it (the test fails on the missing sum)
                reader.kill()
                reader.join()
    expected = sum(int(s.sum()) for p in parts for s in p)
    assert sums == [expected] * 3
    gets = shard_files(s3_server.gets(bucket))
    per_shard = len(list((local / "shards" / "shard-000000").glob("*.bin")))
    assert len(gets) == 4 * per_shard and set(gets.values()) == {1}, gets  # 3 readers, each file fetched once
    assert not list((tmp_path / "cache" / "staging").iterdir())


def _read_all(url, cache_dir, options, barrier, results):
    m = open_existing(url, cache_dir=cache_dir, storage_options=options)
    barrier.wait()  # all three race for the same shards
    total = sum(int(s.sum()) for s in m)
    results.put(total)
    barrier.wait(timeout=300)  # every reader keeps its shards mapped until all have read (as DataLoader workers do)
    m.close()


def test_dataloader_workers_read_a_remote_map(tmp_path, s3_server):
    torch = pytest.importorskip("torch")
    parts = [[np.full(3, k * 10 + i) for i in range(10)] for k in range(2)]
    local = sharded(tmp_path, "s", parts)
    bucket = s3_server.bucket()
    url = f"s3://{bucket}/s"
    upload(local, url, storage_options=s3_server.options())
    m = open_existing(url, cache_dir=tmp_path / "cache", storage_options=s3_server.options())
    loader = torch.utils.data.DataLoader(m, batch_size=5, num_workers=2, multiprocessing_context="fork")
    seen = sorted(int(x) for batch in loader for x in batch[:, 0])
    assert seen == [k * 10 + i for k in range(2) for i in range(10)]
    assert set(shard_files(s3_server.gets(bucket)).values()) == {1}
    assert s3_server.gets(bucket)["s/shards.json"] == 1  # the forked workers fetched no header again
    m.close()


def test_a_replaced_dataset_never_mixes_with_its_cached_predecessor(tmp_path, s3_server):
    bucket = s3_server.bucket()
    url = f"s3://{bucket}/words"
    StringsMmap.from_strings(tmp_path / "old", ["old"] * 5).close()
    upload(tmp_path / "old", url, storage_options=s3_server.options())
    old = open_existing(url, cache_dir=tmp_path / "cache", storage_options=s3_server.options())
    assert old[0] == "old"
    StringsMmap.from_strings(tmp_path / "new", ["new"] * 5).close()  # same lengths, another map (another id)
    upload(tmp_path / "new", url, storage_options=s3_server.options())
    new = open_existing(url, cache_dir=tmp_path / "cache", storage_options=s3_server.options())
    assert list(new) == ["new"] * 5
    assert list(old) == ["old"] * 5  # the open reader keeps its version
    assert len(Cache(tmp_path / "cache").usage()) == 2
    old.close()
    new.close()


def test_a_single_map_uploaded_over_a_sharded_one_replaces_it_and_back(tmp_path, s3_server):
    bucket = s3_server.bucket()
    url = f"s3://{bucket}/words"
    options = s3_server.options()
    upload(sharded(tmp_path, "s", [ragged(4), ragged(3, seed=1)]), url, storage_options=options)
    StringsMmap.from_strings(tmp_path / "single", ["one", "two"]).close()
    upload(tmp_path / "single", url, storage_options=options)
    m = open_existing(url, cache_dir=tmp_path / "cache", storage_options=options)
    assert isinstance(m, RemoteMap) and list(m) == ["one", "two"]  # not the sharded map it replaced
    m.close()
    upload(tmp_path / "s", url, storage_options=options)  # and a sharded map replaces a single one
    m = open_existing(url, cache_dir=tmp_path / "cache", storage_options=options)
    assert isinstance(m, RemoteShardedMap) and len(m) == 7
    m.close()


def test_a_map_at_a_url_is_read_only_and_says_so(tmp_path):
    StringsMmap.from_strings(tmp_path / "w", ["a", "b"]).close()
    upload(tmp_path / "w", "memory://remote-test/read-only")
    with pytest.raises(ValueError, match=r"memory://remote-test/read-only opens read-only .*mode='r\+'"):
        open_existing("memory://remote-test/read-only", mode="r+", cache_dir=tmp_path / "cache")
    m = open_existing("memory://remote-test/read-only", cache_dir=tmp_path / "cache")
    assert m.mode == "r"
    for write in (lambda: m.append("c"), lambda: m.extend(["c"]), lambda: m.__setitem__(0, "z")):
        with pytest.raises(PermissionError, match="memory://remote-test/read-only is a map at a URL, read-only"):
            write()
    assert list(m) == ["a", "b"]
    m.close()
    upload(sharded(tmp_path, "s", [ragged(2)]), "memory://remote-test/read-only-sharded")
    s = open_existing("memory://remote-test/read-only-sharded", cache_dir=tmp_path / "cache")
    RaggedMmap.from_lists(tmp_path / "more", ragged(2)).close()
    with pytest.raises(PermissionError, match="memory://remote-test/read-only-sharded is a sharded map at a URL, "
                                              "read-only"):
        s.add_shards([tmp_path / "more"])
    assert (tmp_path / "more" / "header.json").exists() and len(s) == 2
    s.close()


def test_refresh_fetches_the_top_header_again(tmp_path):
    # refresh() read the cached copy of the header, so it never saw a map uploaded again at the URL.
    StringsMmap.from_strings(tmp_path / "v1", ["a", "b"]).close()
    upload(tmp_path / "v1", "memory://remote-test/refresh-single")
    m = open_existing("memory://remote-test/refresh-single", cache_dir=tmp_path / "cache")
    assert m.refresh() == 0 and list(m) == ["a", "b"]
    StringsMmap.from_strings(tmp_path / "v2", ["x", "y", "z"]).close()
    upload(tmp_path / "v2", "memory://remote-test/refresh-single")
    assert len(m) == 2 and m.refresh() == 1 and list(m) == ["x", "y", "z"]
    m.close()

    local = sharded(tmp_path, "s", [ragged(3), ragged(2, seed=1)])
    upload(local, "memory://remote-test/refresh-sharded")
    s = open_existing("memory://remote-test/refresh-sharded", cache_dir=tmp_path / "cache")
    first = s[0]
    assert s.refresh() == 0 and len(s) == 5
    RaggedMmap.from_lists(tmp_path / "more", ragged(4, seed=2)).close()
    merge(local, [tmp_path / "more"])
    upload(local, "memory://remote-test/refresh-sharded")
    assert s.refresh() == 4 and len(s) == 9 and s[8].tolist() == ragged(4, seed=2)[3].tolist()
    assert s[0].tolist() == first.tolist() and len(pickle.loads(pickle.dumps(s))) == 9
    upload(tmp_path / "v1", "memory://remote-test/refresh-sharded")  # a single map takes its place
    with pytest.raises(NotAMapError, match="refresh-sharded holds a single map now; open it again"):
        s.refresh()
    assert len(s) == 9 and s[8].tolist() == ragged(4, seed=2)[3].tolist()  # still the version it had
    s.close()


def test_an_upload_refused_for_a_damaged_shard_writes_nothing(tmp_path):
    # Every shard is checked before the first object is written: a shard found damaged midway used to leave the
    # shards before it overwritten at the URL, under the old shards.json that readers still follow.
    import fsspec

    local = sharded(tmp_path, "s", [ragged(3), ragged(2, seed=1), ragged(4, seed=2)])
    url = "memory://remote-test/damaged-upload"
    StringsMmap.from_strings(tmp_path / "old", ["old"]).close()
    upload(tmp_path / "old", url)
    memory = fsspec.filesystem("memory")
    before = {path: memory.cat_file(path) for path in memory.find("/remote-test/damaged-upload")}
    (local / "shards" / "shard-000002" / "data.bin").unlink()
    with pytest.raises(CorruptMapError, match=r"shard-000002/data\.bin is missing"):
        upload(local, url)
    assert {path: memory.cat_file(path) for path in memory.find("/remote-test/damaged-upload")} == before


def test_the_size_limit_evicts_least_recently_used_entries_no_reader_holds(tmp_path, s3_server):
    parts = [[np.arange(10_000, dtype=np.int64) + k] for k in range(4)]  # ~80 kB per shard
    local = sharded(tmp_path, "s", parts)
    bucket = s3_server.bucket()
    url = f"s3://{bucket}/s"
    upload(local, url, storage_options=s3_server.options())
    cache = tmp_path / "cache"
    options = {"cache_dir": cache, "storage_options": s3_server.options()}
    holder = open_existing(url, **options)
    assert holder[0][0] == 0  # holds shard 0 open (a live reader)
    m = open_existing(url, cache_size_limit=200_000, max_open_shards=1, **options)
    for k in range(1, 4):
        assert m[k][0] == k
        gc.collect()
    sizes = Cache(cache).usage()
    assert sum(sizes.values()) <= 200_000 + 100_000  # the limit, plus at most the shard still open here
    kept = {key for key in sizes}
    assert len(kept) <= 4  # the view, shard 0 (held by the other reader), and the newest shards
    assert holder[0][0] == 0 and holder.shard(0) is not None
    gets_before = shard_files(s3_server.gets(bucket))
    assert m[0][0] == 0  # shard 0 was never evicted: it is read from the cache
    assert shard_files(s3_server.gets(bucket)) == gets_before
    assert m[1][0] == 1  # shard 1 was evicted: it is downloaded again
    assert sum(shard_files(s3_server.gets(bucket)).values()) > sum(gets_before.values())
    holder.close()
    m.close()
    assert Cache(cache, size_limit=0).evict() and Cache(cache).usage() == {}  # nothing is held any more


def test_upload_writes_every_header_after_its_data_and_the_top_header_last(tmp_path, s3_server):
    local = sharded(tmp_path, "s", [ragged(3, seed=k) for k in range(3)])
    bucket = s3_server.bucket()
    upload(local, f"s3://{bucket}/s", storage_options=s3_server.options())
    puts = [key for method, key in s3_server.requests(bucket) if method == "PUT" and key]
    assert puts[-1] == "s/shards.json"
    for k in range(3):
        mine = [i for i, key in enumerate(puts) if f"shard-{k:06d}/" in key]
        assert puts[mine[-1]].endswith("/header.json") and len(mine) >= 3  # data and index before the header
    assert sorted(puts) == sorted(set(puts))  # each object written once


def test_a_shard_that_fails_its_check_names_the_url_and_the_file_and_leaves_no_partial_file(tmp_path, s3_server):
    import s3fs

    local = sharded(tmp_path, "s", [ragged(10, seed=k) for k in range(2)])
    bucket = s3_server.bucket()
    url = f"s3://{bucket}/s"
    upload(local, url, storage_options=s3_server.options())
    fs = s3fs.S3FileSystem(**s3_server.options())
    objects = json.loads(fs.cat_file(f"{bucket}/s/shards/shard-000001/header.json"))["objects"]
    key = f"{bucket}/s/shards/shard-000001/{objects['data']}"  # data.<id>-<commit>.bin
    data = bytearray(fs.cat_file(key))
    data[5] ^= 0xFF  # a flipped bit: same size, wrong checksum
    fs.pipe_file(key, bytes(data))
    cache = tmp_path / "cache"
    m = open_existing(url, cache_dir=cache, storage_options=s3_server.options())
    assert len(m[0]) > 0
    with pytest.raises(CorruptMapError, match=rf"{url}/shards/shard-000001/{objects['data']}.*checksum"):
        m[15]
    assert not any("shard-000001" in f for f in cache_files(cache))
    assert not list((cache / "staging").iterdir())
    fs.pipe_file(key, bytes(data[:3]))  # truncated
    with pytest.raises(CorruptMapError, match=rf"{url}/shards/shard-000001/{objects['data']} is truncated"):
        m[15]
    assert not list((cache / "staging").iterdir()) and len(Cache(cache).usage()) == 2  # the view and shard 0
    m.close()


def test_bad_locations_fail_fast_and_clearly(tmp_path, s3_server, monkeypatch):
    import socket

    bucket = s3_server.bucket()
    with pytest.raises(NotAMapError, match=rf"s3://{bucket}/nothing/here holds no mmap_ninja map"):
        open_existing(f"s3://{bucket}/nothing/here", cache_dir=tmp_path / "c", storage_options=s3_server.options())
    with pytest.raises(NotAMapError, match="s3://no-such-bucket-3f9a/x holds no mmap_ninja map"):
        open_existing("s3://no-such-bucket-3f9a/x", cache_dir=tmp_path / "c", storage_options=s3_server.options())
    StringsMmap.from_strings(tmp_path / "w", ["a"]).close()
    with pytest.raises(RemoteStorageError, match=r"cannot write s3://no-such-bucket-3f9a/x/\S+: .*bucket does not"):
        upload(tmp_path / "w", "s3://no-such-bucket-3f9a/x", storage_options=s3_server.options())

    # A dead endpoint: a port this test holds bound without listening, so connections to it are refused (a port
    # found free and let go could be taken by another process before the test connects).
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        dead = dict(s3_server.options(), client_kwargs={"endpoint_url": f"http://127.0.0.1:{held.getsockname()[1]}"},
                    config_kwargs={"retries": {"max_attempts": 1}, "connect_timeout": 1})
        start = time.monotonic()
        with pytest.raises(RemoteStorageError, match=rf"cannot access s3://{bucket}/m/.*Could not connect"):
            open_existing(f"s3://{bucket}/m", cache_dir=tmp_path / "c", storage_options=dead)
        # It fails on the refused connection, not by waiting: the bound only ends a hang (it was 5 s, and a loaded
        # machine may take seconds just to set up the S3 client).
        assert time.monotonic() - start < 120

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    anonymous = {"client_kwargs": {"endpoint_url": s3_server.endpoint}, "skip_instance_cache": True,
                 "config_kwargs": {"retries": {"max_attempts": 1}}}
    with pytest.raises(RemoteStorageError, match=rf"cannot access s3://{bucket}/m/.*credentials"):
        open_existing(f"s3://{bucket}/m", cache_dir=tmp_path / "c", storage_options=anonymous)
    assert not (tmp_path / "c" / "entries").exists() or not list((tmp_path / "c" / "entries").iterdir())


def test_memory_urls_need_no_server_and_the_default_cache_is_per_user(tmp_path, monkeypatch):
    monkeypatch.setenv("MMAP_NINJA_CACHE", str(tmp_path / "user-cache"))
    StringsMmap.from_strings(tmp_path / "w", ["a", "b", "c"]).close()
    mmap_ninja.upload(tmp_path / "w", "memory://remote-test/w")
    m = open_existing("memory://remote-test/w")
    assert list(m) == ["a", "b", "c"]
    assert len(Cache(tmp_path / "user-cache").usage()) == 1
    m.close()
    with pytest.raises(NotAMapError, match="memory://remote-test/none holds no mmap_ninja map"):
        open_existing("memory://remote-test/none")
    assert os.path.isdir(tmp_path / "user-cache" / "entries")
    with pytest.raises(NotAMapError, match="no such map directory"):
        upload(tmp_path / "missing", "memory://remote-test/missing")
    mmap_ninja.upload(tmp_path / "w", (tmp_path / "bucket" / "w").as_uri())  # file:// is one more fsspec URL
    assert list(open_existing((tmp_path / "bucket" / "w").as_uri())) == ["a", "b", "c"]


def test_a_memory_url_read_in_another_process_says_memory_urls_are_per_process(tmp_path):
    StringsMmap.from_strings(tmp_path / "w", ["a", "b"]).close()
    upload(tmp_path / "w", "memory://remote-test/per-process")
    m = open_existing("memory://remote-test/per-process", cache_dir=tmp_path / "cache")
    (tmp_path / "m.pickle").write_bytes(pickle.dumps(m))  # opened, not read yet: a worker would download it
    code = "import pickle, sys; m = pickle.loads(open(sys.argv[1], 'rb').read()); m[0]"
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.pickle")], capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 1
    assert re.search(r"memory://remote-test/per-process/data\.[0-9a-f]+-\d+\.bin is missing", result.stderr)
    assert "memory:// URLs live in the memory of one process" in result.stderr
    assert m[1] == "b"  # in this process it is there
    m.close()


def test_a_cache_dir_that_is_a_file_is_named(tmp_path):
    (tmp_path / "not-a-folder").write_text("x")
    StringsMmap.from_strings(tmp_path / "w", ["a"]).close()
    upload(tmp_path / "w", "memory://remote-test/cache-file")
    m = open_existing("memory://remote-test/cache-file", cache_dir=tmp_path / "not-a-folder")
    with pytest.raises(NotADirectoryError, match=r"cannot use .*not-a-folder as the cache \(cache_dir\)"):
        m[0]


def test_importing_mmap_ninja_imports_no_storage_client():
    code = "import sys, mmap_ninja; bad = [m for m in ('fsspec', 's3fs', 'botocore') if m in sys.modules]; print(bad)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_download_left_by_a_dead_process_is_cleared_and_redone(tmp_path, s3_server):
    RaggedMmap.from_lists(tmp_path / "r", ragged(5)).close()
    bucket = s3_server.bucket()
    url = f"s3://{bucket}/r"
    upload(tmp_path / "r", url, storage_options=s3_server.options())
    cache = Cache(tmp_path / "cache")
    m = open_existing(url, cache_dir=cache.root, storage_options=s3_server.options())
    first = m[0].tolist()
    (key,) = cache.usage()
    m.close()
    gc.collect()
    assert cache.evict(0) == [key]  # released: evictable
    stale = cache.staging / f"{key}.0123abcd"
    stale.mkdir()
    (stale / "data.bin").write_bytes(b"partial")  # as a downloader killed midway leaves it
    m = open_existing(url, cache_dir=cache.root, storage_options=s3_server.options())
    assert m[0].tolist() == first
    assert list(cache.usage()) == [key] and not list(cache.staging.iterdir())
    m.close()


def test_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="cache_size_limit must be a number of bytes"):
        open_existing("memory://remote-test/x", cache_dir=tmp_path, cache_size_limit=-1)
    with pytest.raises(ValueError, match="opens read-only"):
        open_existing("memory://remote-test/x", mode="w", cache_dir=tmp_path)


def test_a_download_waits_for_the_downloader_never_for_live_readers(tmp_path):
    import fcntl
    import threading

    cache = Cache(tmp_path / "cache")
    cache.acquire("warm", lambda stage: None)  # creates the cache's folders
    reader = os.open(cache.locks / "k", os.O_RDWR | os.O_CREAT)
    fcntl.flock(reader, fcntl.LOCK_SH)  # another process's reader, between its check and its download
    started, release, calls, done, held = threading.Event(), threading.Event(), [], [], []

    def slow_fill(stage):
        calls.append(stage)
        started.set()
        assert release.wait(600)  # the waits of this test only bound a hang
        (stage / "data.bin").write_bytes(b"x" * 10)

    def get():
        entry, fd = cache.acquire("k", slow_fill)
        held.append(fd)  # stays a live reader while the other one waits
        done.append((entry / "data.bin").read_bytes())

    first = threading.Thread(target=get, daemon=True)
    first.start()
    assert started.wait(600)
    second = threading.Thread(target=get, daemon=True)
    second.start()
    time.sleep(0.2)
    assert done == []  # the second waits for the download in progress
    release.set()
    first.join(600)
    second.join(600)
    assert done == [b"x" * 10] * 2 and len(calls) == 1  # one download, both served, none stuck on a reader
    for fd in [reader, *held]:
        os.close(fd)


def test_a_map_of_mmap_ninja_090_is_refused_with_the_way_to_convert_it(legacy_maps):
    path = next(iter(legacy_maps.values()))
    with pytest.raises(NotAMapError, match=r"0\.9\.0; convert it first"):
        upload(path, "memory://remote-test/legacy")
