"""Ranged block reads from a real S3 server (moto_server on loopback, one per session): DataLoader workers (forked;
spawned in the ``slow`` run) share one cold map's block cache, and each block is fetched exactly once."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("s3fs")

from mmap_ninja import RaggedMmap, open_existing, upload
from mmap_ninja.adapters._block_map import RemoteBlockMap
from mmap_ninja.storage import _granularity

BLOCK = 16 << 10


@pytest.mark.parametrize("context", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])
def test_four_dataloader_workers_fetch_each_block_once(tmp_path, s3_server, monkeypatch, context):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(_granularity, "DEFAULT_GRANULARITY", 4096)
    rng = np.random.default_rng(0)
    samples = [rng.integers(0, 1000, size=int(rng.integers(50, 400))).astype(np.int32) for _ in range(800)]
    RaggedMmap.from_lists(tmp_path / "local", samples, batch_size=1000).close()
    offsets = np.fromfile(tmp_path / "local" / "offsets.bin", dtype="<i8")
    blocks = len(np.unique(offsets[:-1] * 4 // BLOCK))
    bucket = s3_server.bucket()
    url = f"s3://{bucket}/tokens"
    upload(tmp_path / "local", url, storage_options=s3_server.options())
    m = open_existing(url, cache_dir=tmp_path / "cache", storage_options=s3_server.options(), fetch="blocks",
                      block_size=BLOCK)
    assert isinstance(m, RemoteBlockMap)
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(0)).tolist()
    loader = torch.utils.data.DataLoader(m, batch_size=16, sampler=order, num_workers=4, collate_fn=list,
                                         multiprocessing_context=context)
    got = [sample for batch in loader for sample in batch]
    assert len(got) == len(samples)
    assert all(np.array_equal(a, samples[i]) for a, i in zip(got, order))
    gets = {key.split(".")[0]: count for key, count in s3_server.gets(bucket).items()}  # data.<id>-<commit>.bin
    assert gets["tokens/data"] == blocks  # one ranged GET per block, by whichever worker came first
    assert gets["tokens/offsets"] == 1 and gets["tokens/checksums"] == 1  # the index, once
    assert gets["tokens/header"] == 1  # the workers reopened from the pickled header
    m.close()


def test_a_whole_download_sends_each_byte_once(tmp_path, s3_server, monkeypatch):
    # s3fs's get_file of an object over its default_block_size opens a GET of the whole object, closes it and
    # fetches the object again in parts: the server sent and logged twice the map. Whole downloads fetch the
    # committed bytes by ranged requests instead (parts of 256 KiB here, an s3fs block of 1 MiB).
    from mmap_ninja.adapters import _blocks

    monkeypatch.setattr(_blocks, "DOWNLOAD_PART", 256 << 10)
    rng = np.random.default_rng(1)
    samples = [rng.integers(0, 1 << 30, size=int(rng.integers(500, 3000))).astype(np.int32) for _ in range(600)]
    RaggedMmap.from_lists(tmp_path / "local", samples, batch_size=1000).close()
    data_bytes = (tmp_path / "local" / "data.bin").stat().st_size
    assert data_bytes > 3 << 20
    bucket = s3_server.bucket()
    url = f"s3://{bucket}/whole"
    upload(tmp_path / "local", url, storage_options=s3_server.options())
    options = s3_server.options(default_block_size=1 << 20)
    logged = len(s3_server.recording.read_text().splitlines())
    m = open_existing(url, cache_dir=tmp_path / "cache", storage_options=options, fetch="whole")
    np.testing.assert_array_equal(m[321], samples[321])
    ranges = []
    for line in s3_server.recording.read_text().splitlines()[logged:]:
        entry = json.loads(line)
        if entry["method"] == "GET" and f"/{bucket}/whole/data." in entry["url"]:
            ranges.append((entry.get("headers") or {}).get("Range"))
    assert None not in ranges  # no GET of the whole object
    spans = sorted(tuple(int(v) for v in r.split("=", 1)[1].split("-")) for r in ranges)
    assert sum(b + 1 - a for a, b in spans) == data_bytes and spans[0][0] == 0
    assert len(spans) == -(-data_bytes // (256 << 10))
    m.close()
