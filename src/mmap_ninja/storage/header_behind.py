"""A build's per-batch headers renamed into place by a helper thread while the build writes its next batches (issue
21): on ext4 on a busy disk one rename of a new header over the old one (and the creation of the temporary file
before it) waits 1-5 ms for the journal, against well under a millisecond of CPU, so a build of 62 batches of token
sequences from RAM spent a third of its wall time there.

Only a build whose samples come from a list in RAM uses it (`Store.defer_build_commits`): no code of the caller's runs
between two of its batches, so nobody can have seen a batch "return" before its header is on disk. The helper writes
the newest header it has been given: while one rename is under way, a newer header replaces the one waiting (the
headers in between never reach the disk, as if no reader had looked then). A header is handed over only after the
data it names is written, so a process killed at any instant leaves the map readable at the last header that
reached the disk, with every sample that header names; the build's last header (the one that drops ``"building"``)
is written by the build itself, after the helper is idle. A failed rename stops the helper and is raised by the
next `HeaderBehind.publish` or `HeaderBehind.wait` (and by every one after it).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional

from mmap_ninja.storage.dirs import replace_file

__all__ = ["HeaderBehind"]


class HeaderBehind:
    """The newest header of a build, renamed into place at ``path`` by a helper thread (not durable: no fsync)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._changed = threading.Condition()
        self._waiting: Optional[bytes] = None  # the newest header handed over and not yet being written
        self._busy = False  # a header is being written
        self._error: Optional[BaseException] = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = False

    def publish(self, data: bytes) -> None:
        """Hand over the encoded header ``data``, to be renamed into place as soon as the helper is free (replacing
        a header still waiting). Raises the error of a rename that failed."""
        with self._changed:
            self._raise_error()
            self._waiting = data
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="mmap_ninja-header", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def _run(self) -> None:
        while True:
            with self._changed:
                while self._waiting is None and not self._stopping:
                    self._changed.wait()
                if self._waiting is None:
                    return
                data, self._waiting, self._busy = self._waiting, None, True
            try:
                replace_file(self._path, data, durable=False)
                failed: Optional[BaseException] = None
            except BaseException as e:  # handed to the build's thread
                failed = e
            with self._changed:
                self._busy = False
                if failed is not None:
                    self._error, self._waiting, self._stopping = failed, None, True
                self._changed.notify_all()

    def wait(self) -> None:
        """Return once every header handed over is in place (or superseded by one that is); raise the error of a
        rename that failed."""
        with self._changed:
            while (self._waiting is not None or self._busy) and self._error is None:
                self._changed.wait()
            self._raise_error()

    def close(self) -> None:
        """`wait`, then end the helper thread (also when `wait` raises)."""
        try:
            self.wait()
        finally:
            with self._changed:
                self._stopping = True
                self._changed.notify_all()
                thread, self._thread = self._thread, None
            if thread is not None:
                thread.join()

    def _raise_error(self) -> None:
        if self._error is not None:  # (kept: every later call raises it too)
            raise self._error
