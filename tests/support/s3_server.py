"""The session's S3 server for tests/adapters/test_remote.py: `mmap_ninja.testing.s3.moto_server`, one per test
session."""

from __future__ import annotations

import pytest

from mmap_ninja.testing.s3 import moto_server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    pytest.importorskip("s3fs")
    try:
        with moto_server(tmp_path_factory.mktemp("moto") / "requests.jsonl") as server:
            yield server
    except FileNotFoundError as e:
        pytest.fail(str(e))
