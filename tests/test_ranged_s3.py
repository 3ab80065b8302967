"""Ranged block reads from a real S3 server (moto_server on loopback, one per session): DataLoader workers (forked;
spawned in the ``slow`` run) share one cold map's block cache, and each block is fetched exactly once."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("s3fs")

from mmap_ninja import RaggedMmap, _granularity, open_existing, upload
from mmap_ninja.adapters._block_map import RemoteBlockMap

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
