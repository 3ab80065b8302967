"""A real S3-compatible server for the tests: ``moto_server`` on a free loopback port, one per test session.

Moto records every request it serves (``MOTO_ENABLE_RECORDING``) in a file; `S3Server.requests` reads it, so tests
count the GETs the server really answered for each object.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest


class S3Server:
    def __init__(self, endpoint: str, recording: Path):
        self.endpoint = endpoint
        self.recording = recording

    def options(self, **extra):
        """s3fs storage options for this server: test credentials, few retries (a dead server fails fast)."""
        return {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": self.endpoint},
                "config_kwargs": {"retries": {"max_attempts": 2}, "connect_timeout": 5}, **extra}

    def bucket(self) -> str:
        """A new, empty bucket with a unique name."""
        import s3fs

        name = f"test-{uuid.uuid4().hex[:16]}"
        s3fs.S3FileSystem(**self.options()).mkdir(name)
        return name

    def requests(self, bucket: str) -> list[tuple[str, str]]:
        """``(method, key)`` of every request the server received for ``bucket`` so far, in order (key without
        the bucket; "" for requests on the bucket itself)."""
        found = []
        if not self.recording.exists():
            return found
        for line in self.recording.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            parsed = urlparse(entry["url"])
            parts = parsed.path.lstrip("/").split("/", 1)
            if parts[0] == bucket:
                key = parts[1] if len(parts) > 1 else ""
                found.append((entry["method"], key + (f"?{parsed.query}" if parsed.query else "")))
        return found

    def gets(self, bucket: str) -> dict[str, int]:
        """How many times each object of ``bucket`` was fetched (GET of a key, listings excluded)."""
        counts: dict[str, int] = {}
        for method, key in self.requests(bucket):
            if method == "GET" and key and "?" not in key:
                counts[key] = counts.get(key, 0) + 1
        return counts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    pytest.importorskip("s3fs")
    executable = Path(sys.executable).parent / "moto_server"
    if not executable.exists():
        pytest.fail(f"{executable} is missing: install the dev extra (moto[server])")
    recording = tmp_path_factory.mktemp("moto") / "requests.jsonl"
    port = free_port()
    env = dict(os.environ, MOTO_ENABLE_RECORDING="true", MOTO_RECORDER_FILEPATH=str(recording))
    process = subprocess.Popen([str(executable), "-H", "127.0.0.1", "-p", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on {endpoint}") from None
                time.sleep(0.05)
        yield S3Server(endpoint, recording)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
