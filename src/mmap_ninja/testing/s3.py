"""A real S3-compatible server on loopback for tests and benchmarks: ``moto_server`` (from ``moto[server]``) on a
loopback port the kernel picks, started and stopped by `moto_server`.

Moto records every request it serves (``MOTO_ENABLE_RECORDING``) in a file; `S3Server.requests` reads it, so a test
counts the GETs the server really answered for each object. Usage::

    with moto_server(tmp_path / "requests.jsonl") as server:
        bucket = server.bucket()
        upload(local_map, f"s3://{bucket}/data", storage_options=server.options())
        server.gets(bucket)  # {"data/shards.json": 1, ...}
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

__all__ = ["S3Server", "free_port", "moto_server"]


class S3Server:
    """A running moto_server: its endpoint, and the file where it records the requests it serves."""

    def __init__(self, endpoint: str, recording: Path):
        self.endpoint = endpoint
        self.recording = recording

    def options(self, **extra: Any) -> dict[str, Any]:
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
        found: list[tuple[str, str]] = []
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


def _read_log(process: subprocess.Popen[str], listening: queue.Queue[str]) -> None:
    """Read the server's stderr to its end; put the endpoint it says it runs on, then "" at the end."""
    assert process.stderr is not None
    for line in process.stderr:
        found = re.search(r"Running on (http://127\.0\.0\.1:\d+)", line)
        if found:
            listening.put(found.group(1))
    listening.put("")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_server(recording: Path, timeout: float = 600) -> Iterator[S3Server]:
    """Run ``moto_server`` (installed beside this interpreter) on a loopback port the kernel picks for it (port 0:
    no other process can take it first), recording its requests in ``recording``; stopped by its pid at the end.
    The endpoint is the one the server prints when it listens. FileNotFoundError if it is not installed;
    ``timeout`` only bounds a server that never starts."""
    executable = Path(sys.executable).parent / "moto_server"
    if not executable.exists():
        raise FileNotFoundError(f"{executable} is missing: install moto[server] (the dev extra has it)")
    env = dict(os.environ, MOTO_ENABLE_RECORDING="true", MOTO_RECORDER_FILEPATH=str(recording))
    process = subprocess.Popen([str(executable), "-H", "127.0.0.1", "-p", "0"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, errors="replace")
    listening: queue.Queue[str] = queue.Queue()
    # The server's log goes to stderr (a line per request): read to its end, or the pipe would fill and block it.
    threading.Thread(target=_read_log, args=(process, listening), daemon=True).start()
    try:
        try:
            endpoint = listening.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"moto_server did not say where it listens within {timeout} s") from None
        if not endpoint:
            raise RuntimeError(f"moto_server exited (status {process.wait()}) before it listened")
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not answer on {endpoint}") from None
                time.sleep(0.05)
        yield S3Server(endpoint, recording)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
