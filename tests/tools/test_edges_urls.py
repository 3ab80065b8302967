"""Maps at URLs in the CLI and `verify` (issue 20): ``info`` and a shallow ``verify`` read headers and object sizes
only, ``verify --deep`` downloads into the cache and checks every checksum, ``convert s3://b/x DST`` works."""

import json
import re

import numpy as np
import pytest

pytest.importorskip("s3fs")

import mmap_ninja
from mmap_ninja import RaggedMmap, StringsMmap, merge, upload, verify
from mmap_ninja.tools.cli import main


def _sharded(tmp_path, name="s"):
    for k in range(2):
        RaggedMmap.from_lists(tmp_path / f"{name}{k}", [np.arange(k + 2, dtype=np.int32)] * 3).close()
    merge(tmp_path / name, [tmp_path / f"{name}{k}" for k in range(2)], metadata={"m": 1})
    return tmp_path / name


def _object(fs, folder, column="data"):
    """The key of ``column``'s object in the uploaded map folder ``folder`` (named after the map's id and commit)."""
    return f"{folder}/{json.loads(fs.cat_file(f'{folder}/header.json'))['objects'][column]}"


def _column_gets(server, bucket):
    return {key: n for key, n in server.gets(bucket).items() if key.endswith(".bin")}


def test_info_of_a_url_reads_headers_and_sizes_only(tmp_path, s3_server, capsys):
    local = _sharded(tmp_path)
    bucket = s3_server.bucket()
    url = f"s3://{bucket}/data/s"
    upload(local, url, storage_options=s3_server.options())
    options = json.dumps(s3_server.options())
    assert main(["info", "--json", url, "--storage-options", options]) == 0
    remote_info = json.loads(capsys.readouterr().out)
    assert main(["info", "--json", str(local)]) == 0
    local_info = json.loads(capsys.readouterr().out)
    assert remote_info["path"] == url and local_info["path"] == str(local)
    remote_info.pop("path"), local_info.pop("path")
    assert remote_info == local_info and remote_info["length"] == 6 and remote_info["metadata"] == {"m": 1}
    assert _column_gets(s3_server, bucket) == {}  # no column was downloaded

    StringsMmap.from_strings(tmp_path / "one", ["a", "bb"], metadata={"x": [1]}).close()
    upload(tmp_path / "one", f"s3://{bucket}/one", storage_options=s3_server.options())
    assert main(["info", "--json", f"s3://{bucket}/one", "--storage-options", options]) == 0
    single = json.loads(capsys.readouterr().out)
    assert single["kind"] == "strings" and single["length"] == 2 and single["metadata"] == {"x": [1]}
    assert single["bytes"]["data"] == 3 and _column_gets(s3_server, bucket) == {}


def test_shallow_verify_of_a_url_finds_a_truncated_object_without_downloading(tmp_path, s3_server, capsys):
    import s3fs

    local = _sharded(tmp_path)
    bucket = s3_server.bucket()
    url = f"s3://{bucket}/s"
    upload(local, url, storage_options=s3_server.options())
    report = verify(url, storage_options=s3_server.options())
    assert report.ok and report.path == url and report.length == 6 and report.kind == "ragged"
    options = json.dumps(s3_server.options())
    assert main(["verify", url, "--storage-options", options]) == 0
    assert capsys.readouterr().out.startswith(f"{url}: sound")
    fs = s3fs.S3FileSystem(**s3_server.options())
    truncated = _object(fs, f"{bucket}/s/shards/shard-000001")
    fs.pipe_file(truncated, b"\0")  # cut short
    report = verify(url, storage_options=s3_server.options())
    assert not report.ok and "shard 1" in report.problems[0]
    assert f"{truncated.rsplit('/', 1)[1]} is truncated" in report.problems[0]
    assert main(["verify", url, "--storage-options", options]) == 1
    assert "DAMAGED" in capsys.readouterr().out
    fetched = _column_gets(s3_server, bucket)  # the index columns only (offsets, shapes), never the samples' data
    assert fetched and not [key for key in fetched if key.rsplit("/", 1)[1].startswith(("data.", "checksums."))]


def test_shallow_verify_of_a_url_checks_ragged_shapes_and_offsets_as_a_local_one(tmp_path, s3_server):
    import s3fs

    local = _sharded(tmp_path)
    bucket = s3_server.bucket()
    fs = s3fs.S3FileSystem(**s3_server.options())
    for column, position, value, found in [("dims", 1, -2, r"sample 1 has the shape \(-2,\): a dimension is negative"),
                                           ("dims", 0, 7, r"sample 0 has the shape \(7,\) of 7 elements, but its "
                                                          r"offsets give it 3"),
                                           ("offsets", 2, 1, r"offsets\.bin decreases at sample\(s\) \[1\]")]:
        url = f"s3://{bucket}/{column}{position}"
        upload(local, url, storage_options=s3_server.options())
        key = _object(fs, f"{bucket}/{column}{position}/shards/shard-000001", column)
        items = np.frombuffer(fs.cat_file(key), dtype="<i8").copy()
        items[position] = value
        fs.pipe_file(key, items.tobytes())  # the same size: only reading the column shows it
        report = verify(url, storage_options=s3_server.options())
        assert not report.ok, column
        assert report.problems[0].startswith(f"shard 1 (shards/shard-000001, samples 3..5 of the sharded map): "
                                             f"{url}/shards/shard-000001: ")
        assert re.search(found, report.problems[0]), report.problems[0]
    assert verify(local).ok


def test_shallow_verify_of_a_url_notes_index_columns_too_large_to_fetch(tmp_path, s3_server, monkeypatch):
    from mmap_ninja.adapters import remote_check

    RaggedMmap.from_lists(tmp_path / "one", [np.arange(3)] * 4).close()
    url = f"s3://{s3_server.bucket()}/one"
    upload(tmp_path / "one", url, storage_options=s3_server.options())
    monkeypatch.setattr(remote_check, "INDEX_CHECK_LIMIT", 16)
    report = verify(url, storage_options=s3_server.options())
    assert report.ok and report.notes == [f"{url}: its index columns (112 bytes) were not fetched, so its offsets "
                                          f"and shapes were not checked; verify with deep=True checks them"]


def test_deep_verify_of_a_url_downloads_into_the_cache_and_hashes_everything(tmp_path, s3_server, monkeypatch,
                                                                              capsys):
    import s3fs

    local = _sharded(tmp_path)
    bucket = s3_server.bucket()
    url = f"s3://{bucket}/s"
    upload(local, url, storage_options=s3_server.options())
    monkeypatch.setenv("MMAP_NINJA_CACHE", str(tmp_path / "cache"))
    report = verify(url, deep=True, storage_options=s3_server.options())
    assert report.ok and report.deep and report.bytes_hashed == verify(local, deep=True).bytes_hashed > 0
    assert (tmp_path / "cache" / "entries").is_dir()
    assert main(["verify", "--deep", url, "--storage-options", json.dumps(s3_server.options())]) == 0
    assert "checked every checksum" in capsys.readouterr().out

    fs = s3fs.S3FileSystem(**s3_server.options())
    data = fs.cat_file(_object(fs, f"{bucket}/s/shards/shard-000000"))
    flipped = bytes([data[0] ^ 1]) + data[1:]  # same size: only a deep check can see it
    other = f"s3://{bucket}/flipped"
    upload(local, other, storage_options=s3_server.options())
    fs.pipe_file(_object(fs, f"{bucket}/flipped/shards/shard-000000"), flipped)
    assert verify(other, storage_options=s3_server.options()).ok
    deep = verify(other, deep=True, storage_options=s3_server.options(), cache_dir=tmp_path / "cache2")
    assert not deep.ok and "shard 0" in deep.problems[0] and "checksum" in deep.problems[0]


def test_convert_of_a_url_keeps_its_double_slash(tmp_path, s3_server):
    local = _sharded(tmp_path)
    bucket = s3_server.bucket()
    url = f"s3://{bucket}/s"
    upload(local, url, storage_options=s3_server.options())
    done = mmap_ninja.convert(url, tmp_path / "out" / "one", verbose=False, storage_options=s3_server.options(),
                              cache_dir=tmp_path / "cache")
    with RaggedMmap(done.path, mode="r") as one:
        assert len(one) == 6 and one.metadata == {"m": 1} and one[5].tolist() == [0, 1, 2]
    StringsMmap.from_strings(tmp_path / "single", ["x", "yy"]).close()
    upload(tmp_path / "single", f"s3://{bucket}/single", storage_options=s3_server.options())
    assert main(["convert", "-q", f"s3://{bucket}/single", str(tmp_path / "cli"),
                 "--storage-options", json.dumps(s3_server.options())]) == 0
    assert list(StringsMmap(tmp_path / "cli", mode="r")) == ["x", "yy"]


def test_a_url_holding_no_map_is_status_3(tmp_path, s3_server, capsys):
    bucket = s3_server.bucket()
    options = json.dumps(s3_server.options())
    for command in (["info"], ["verify"], ["verify", "--deep"]):
        assert main([*command, f"s3://{bucket}/nothing", "--storage-options", options]) == 3, command
        assert "holds no mmap_ninja map" in capsys.readouterr().err
