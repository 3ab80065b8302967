"""Upload object names carry the map's id and commit (FORMAT.md, "Upload object names"): `upload` never overwrites
an object a published header names, so an upload killed between its objects and its header leaves every reader
the old map, exact; a header naming an object of another map is refused; ``prune=True`` removes what no header
names any more.

"Killed" is deterministic: the upload dies at its first header write (the first ``header.json`` it would put, after
that map's column objects). In another process (S3) a SIGKILL there; in this one (``memory://``, which lives in
one process) an exception no code of the upload catches."""

import json
import os
import signal
import subprocess
import sys
import zlib

import numpy as np
import pytest

pytest.importorskip("fsspec")

import fsspec

from mmap_ninja import (
    CorruptMapError,
    MapError,
    UnknownFeatureError,
    merge,
    np_from_ndarray,
    open_existing,
    upload,
    verify,
)
from mmap_ninja.adapters import remote as remote_module

N = 4_000
OLD = np.full((N, 3), 1.5, dtype=np.float32)
NEW = np.ones((N, 3), dtype=np.int32)  # the same shape and byte size: read as float32, 1 is 1.4e-45


class Killed(BaseException):
    """The upload's death at its kill point (a BaseException, as a signal's: no upload code handles it)."""


def kill_at_first_header(monkeypatch, action):
    """Make the next upload run ``action()`` where it would write its first ``header.json``."""
    put = remote_module._Remote.pipe

    def pipe(self, rel, data):
        if rel.rsplit("/", 1)[-1] == "header.json":
            action()
        put(self, rel, data)

    monkeypatch.setattr(remote_module._Remote, "pipe", pipe)


def die():
    raise Killed


def single(tmp_path, name, values):
    np_from_ndarray(tmp_path / name, values).close()
    return tmp_path / name


def sharded(tmp_path, name, values):
    parts = []
    for k, chunk in enumerate(np.array_split(values, 2)):
        parts.append(single(tmp_path, f"{name}-part{k}", chunk))
    merge(tmp_path / name, parts).close()
    return tmp_path / name


def memory_objects(prefix):
    memory = fsspec.filesystem("memory")
    return sorted(path.split(prefix, 1)[1].lstrip("/") for path in memory.find(prefix))


@pytest.mark.parametrize("layout", [single, sharded])
def test_an_upload_killed_between_its_objects_and_its_header_leaves_readers_the_old_map(tmp_path, monkeypatch,
                                                                                         layout):
    url = f"memory://objects-test/killed-{layout.__name__}"
    upload(layout(tmp_path, "old", OLD), url)
    opened_before = open_existing(url, cache_dir=tmp_path / "cache-before")  # holds the old header, nothing read
    kill_at_first_header(monkeypatch, die)
    with pytest.raises(Killed):
        upload(layout(tmp_path, "new", NEW), url)
    monkeypatch.undo()

    fresh = open_existing(url, cache_dir=tmp_path / "cache-after")
    for reader in (opened_before, fresh):
        got = np.stack(list(reader))
        assert got.dtype == np.float32 and np.array_equal(got, OLD)  # the old values, exactly: never garbage
    assert verify(url).ok and verify(url, deep=True, cache_dir=tmp_path / "cache-verify").ok

    upload(tmp_path / "new", url)  # the upload done again, whole
    new = open_existing(url, cache_dir=tmp_path / "cache-after")
    assert np.array_equal(np.stack(list(new)), NEW) and np.stack(list(new)).dtype == np.int32
    assert np.array_equal(np.stack(list(opened_before)), OLD)  # a reader keeps the version it read
    for reader in (opened_before, fresh, new):
        reader.close()


_CHILD = """
import json, os, signal, sys
from mmap_ninja.adapters import remote

put = remote._Remote.pipe

def pipe(self, rel, data):
    if rel.rsplit("/", 1)[-1] == "header.json":
        os.kill(os.getpid(), signal.SIGKILL)  # the kill point: the objects are written, the header is not
    put(self, rel, data)

remote._Remote.pipe = pipe
remote.upload(sys.argv[1], sys.argv[2], storage_options=json.loads(sys.argv[3]))
"""


@pytest.mark.parametrize("layout", [single, sharded])
def test_an_uploader_sigkilled_after_its_objects_leaves_s3_readers_the_old_map(tmp_path, s3_server, layout):
    bucket = s3_server.bucket()
    url = f"s3://{bucket}/m"
    options = s3_server.options()
    upload(layout(tmp_path, "old", OLD), url, storage_options=options)
    new = layout(tmp_path, "new", NEW)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    child = subprocess.run([sys.executable, "-c", _CHILD, str(new), url, json.dumps(options)], env=env,
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr
    puts = [key for method, key in s3_server.requests(bucket) if method == "PUT"]
    assert any(key.endswith(".bin") for key in puts[-3:])  # the child did write the new map's objects

    reader = open_existing(url, cache_dir=tmp_path / "cache", storage_options=options)
    got = np.stack(list(reader))
    assert got.dtype == np.float32 and np.array_equal(got, OLD)
    reader.close()
    upload(new, url, storage_options=options, prune=True)
    reader = open_existing(url, cache_dir=tmp_path / "cache", storage_options=options)
    assert np.array_equal(np.stack(list(reader)), NEW)
    reader.close()

    import s3fs  # pruned: what is left is what the new headers name, and the headers

    fs = s3fs.S3FileSystem(**options)
    left = {key.split("/m/", 1)[1] for key in fs.find(f"{bucket}/m")}
    folders = {key.rsplit("/", 1)[0] if "/" in key else "" for key in left if key.endswith("header.json")}
    named = {"shards.json"} if layout is sharded else set()
    for folder in folders:
        header = json.loads(fs.cat_file(f"{bucket}/m/{folder}/header.json" if folder else f"{bucket}/m/header.json"))
        named |= {f"{folder}/{name}" if folder else name for name in [*header["objects"].values(), "header.json"]}
    assert left == named and len(folders) == (2 if layout is sharded else 1)


def uploaded_header(url, rel=""):
    memory = fsspec.filesystem("memory")
    return json.loads(memory.cat_file(f"{url.split('://', 1)[1]}/{rel + '/' if rel else ''}header.json"))


def test_the_uploaded_headers_list_their_objects_which_carry_the_maps_id_and_commit(tmp_path):
    url = "memory://objects-test/listed"
    local = sharded(tmp_path, "s", OLD)
    upload(local, url)
    for rel in ("shards/shard-000000", "shards/shard-000001"):
        content = uploaded_header(url, rel)
        local_header = json.loads((local / rel / "header.json").read_bytes())
        assert "objects" in content["requires"] and "objects" not in local_header  # the local map has neither
        tag = f"{local_header['id']}-{local_header['commit']}"
        assert content["objects"] == {name: f"{name}.{tag}.bin" for name in local_header["columns"]}
        assert sorted(memory_objects(f"/objects-test/listed/{rel}")) == sorted(
            ["header.json", *content["objects"].values()])
        checked = dict(content)
        stored = checked.pop("checksum")
        assert stored == f"crc32:{zlib.crc32(json.dumps(checked).encode()):08x}"


def test_a_downloaded_map_is_an_ordinary_local_map(tmp_path):
    url = "memory://objects-test/downloaded"
    upload(single(tmp_path, "m", OLD), url)
    reader = open_existing(url, cache_dir=tmp_path / "cache")
    local = reader.local.path
    content = json.loads((local / "header.json").read_bytes())
    assert "objects" not in content and "objects" not in content["requires"]
    assert sorted(p.name for p in local.glob("*.bin")) == sorted(f"{name}.bin" for name in content["columns"])
    assert verify(local, deep=True).ok
    assert np.array_equal(open_existing(local, mode="r")[:], OLD)  # a local reader opens it as any map
    reader.close()


def test_a_local_map_that_requires_objects_is_refused_by_local_readers(tmp_path):
    bucket = tmp_path / "bucket"
    upload(single(tmp_path, "m", OLD), (bucket / "m").as_uri())  # file:// : the uploaded copy, on a local disk
    with pytest.raises(UnknownFeatureError, match="requires the feature 'objects'"):
        open_existing(bucket / "m")
    assert np.array_equal(open_existing((bucket / "m").as_uri(), cache_dir=tmp_path / "cache")[:], OLD)


def rewrite_header(url, change):
    """Change the header uploaded at ``url`` (in memory://) with ``change(content)``, keeping its checksum valid."""
    memory = fsspec.filesystem("memory")
    path = f"{url.split('://', 1)[1]}/header.json"
    content = json.loads(memory.cat_file(path))
    content.pop("checksum")
    change(content)
    content["checksum"] = f"crc32:{zlib.crc32(json.dumps(content).encode()):08x}"
    memory.pipe_file(path, json.dumps(content).encode())
    return content


@pytest.mark.parametrize("naming", ["another id", "another commit", "outside the map", "missing column"])
def test_a_header_naming_an_object_of_another_map_or_commit_is_refused(tmp_path, naming):
    url = f"memory://objects-test/mismatch-{naming.replace(' ', '-')}"
    upload(single(tmp_path, "m", OLD), url)
    memory = fsspec.filesystem("memory")
    content = uploaded_header(url)
    name = content["objects"]["data"]
    map_id, commit = content["id"], content["commit"]
    other = {"another id": f"data.{'0' * 32}-{commit}.bin", "another commit": f"data.{map_id}-{commit + 1}.bin",
             "outside the map": f"../data.{map_id}-{commit}.bin", "missing column": None}[naming]
    if other is not None and "/" not in other:  # the object named is there, with the right bytes even
        memory.pipe_file(f"/objects-test/{url.rsplit('/', 1)[1]}/{other}",
                         memory.cat_file(f"/objects-test/{url.rsplit('/', 1)[1]}/{name}"))

    def change(content):
        if other is None:
            del content["objects"]["data"]
        else:
            content["objects"]["data"] = other

    rewrite_header(url, change)
    with pytest.raises(CorruptMapError, match=rf"{url}/header\.json.*data") as caught:
        np.stack(list(open_existing(url, cache_dir=tmp_path / "cache")))
    assert isinstance(caught.value, MapError)
    assert not verify(url).ok


def test_a_header_listing_objects_without_requiring_the_feature_is_refused(tmp_path):
    url = "memory://objects-test/no-feature"
    upload(single(tmp_path, "m", OLD), url)
    rewrite_header(url, lambda content: content["requires"].remove("objects"))  # older readers would read data.bin
    with pytest.raises(CorruptMapError, match=rf"{url}/header\.json lists 'objects' but does not require"):
        open_existing(url, cache_dir=tmp_path / "cache")


def test_an_object_shorter_than_its_header_commits_is_refused_naming_it(tmp_path):
    url = "memory://objects-test/short"
    upload(single(tmp_path, "m", OLD), url)
    name = uploaded_header(url)["objects"]["data"]
    memory = fsspec.filesystem("memory")
    memory.pipe_file(f"/objects-test/short/{name}", memory.cat_file(f"/objects-test/short/{name}")[:100])
    with pytest.raises(CorruptMapError, match=rf"{url}/{name} is truncated"):
        open_existing(url, cache_dir=tmp_path / "cache")[0]


@pytest.mark.parametrize("layout", [single, sharded])
def test_a_map_uploaded_before_object_names_still_reads(tmp_path, layout):
    # What upload wrote before: the local headers as they are, and each column under <column>.bin.
    local = layout(tmp_path, "m", OLD)
    url = f"memory://objects-test/old-style-{layout.__name__}"
    memory = fsspec.filesystem("memory")
    for file in local.rglob("*"):
        if file.name in ("header.json", "shards.json") or file.suffix == ".bin":
            memory.pipe_file(f"{url.split('://', 1)[1]}/{file.relative_to(local).as_posix()}", file.read_bytes())
    reader = open_existing(url, cache_dir=tmp_path / "cache")
    assert np.array_equal(np.stack(list(reader)), OLD)
    assert verify(url).ok and verify(url, deep=True, cache_dir=tmp_path / "cache").ok
    reader.close()


def test_superseded_objects_stay_unless_pruned(tmp_path):
    url = "memory://objects-test/prune"
    prefix = "/objects-test/prune"
    memory = fsspec.filesystem("memory")
    m = np_from_ndarray(tmp_path / "m", OLD[:10])
    upload(tmp_path / "m", url)
    first = set(uploaded_header(url)["objects"].values())
    memory.pipe_file(f"{prefix}/README.txt", b"not the map's")  # a file of the user's: never pruned
    m.extend(OLD[:5])  # a new commit: new names
    upload(tmp_path / "m", url)
    second = set(uploaded_header(url)["objects"].values())
    assert first.isdisjoint(second) and set(memory_objects(prefix)) == {"header.json", "README.txt", *first, *second}
    m.extend(OLD[:5])
    upload(tmp_path / "m", url, prune=True)
    third = set(uploaded_header(url)["objects"].values())
    assert set(memory_objects(prefix)) == {"header.json", "README.txt", *third}
    assert len(open_existing(url, cache_dir=tmp_path / "cache")) == 20
    m.close()

    # A sharded map over the single one: pruning removes the single map's objects and header; a single map over
    # the sharded one removes the shards' objects and headers.
    upload(sharded(tmp_path, "s", OLD[:10]), url, prune=True)
    shard_headers = [uploaded_header(url, f"shards/shard-00000{k}") for k in range(2)]
    named = {f"shards/shard-00000{k}/{name}" for k, content in enumerate(shard_headers)
             for name in [*content["objects"].values(), "header.json"]}
    assert set(memory_objects(prefix)) == {"shards.json", "README.txt", *named}
    assert len(open_existing(url, cache_dir=tmp_path / "cache")) == 10
    upload(tmp_path / "m", url, prune=True)
    assert set(memory_objects(prefix)) == {"header.json", "README.txt", *third}
    assert np.array_equal(np.stack(list(open_existing(url, cache_dir=tmp_path / "cache"))), np.concatenate(
        [OLD[:10], OLD[:5], OLD[:5]]))


def test_without_objects_gives_a_header_a_local_reader_opens(tmp_path):
    from mmap_ninja.adapters.remote_objects import without_objects
    from mmap_ninja.storage.format import encode_header, parse_header

    url = "memory://objects-test/without"
    upload(single(tmp_path, "m", OLD), url)
    header = remote_module._parse(json.dumps(uploaded_header(url)).encode(), f"{url}/header.json")
    with pytest.raises(UnknownFeatureError):
        parse_header(json.loads(encode_header(header)), tmp_path / "header.json")
    local = without_objects(header)
    assert "objects" not in local.requires and "objects" not in local.extra
    assert parse_header(json.loads(encode_header(local)), tmp_path / "header.json").lengths == header.lengths
