"""Checks of a merge journal (``.merge-journal.json``) before recovery acts on it, and the move of one map
into a sharded map that the journal records.

A journal is a file in a folder that may come from anyone (a tarball, a shared file system), and recovery renames
and deletes what it names: every entry is checked, whole, before anything moves.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from mmap_ninja.errors import CorruptMapError, MapError
from mmap_ninja.storage import _osfile
from mmap_ninja.storage.format import Header, read_header
from mmap_ninja.storage.store import LOCK_FILE

__all__ = ["check_journal", "move_map"]


def move_map(src: Path, dest: Path, header: Header, copy: bool, lock_fd: int) -> None:
    """Move (or copy) the map ``src`` to ``dest``; ``lock_fd`` holds its writer lock, and is closed here. The map
    must still be the commit ``header`` describes (ValueError if a write came in meanwhile).

    The lock is held through the move, so no append races it; except where a folder holding an open file cannot
    be renamed (Windows: the lock file is one), where it is released just before the rename. The rename itself
    then fails (``PermissionError``) while any handle, a writer's included, holds a file of the map, and the
    header is read again at ``dest``: a commit that slipped in between moves the map back, and raises."""
    try:
        now = read_header(src)
        if now.id != header.id or now.commit != header.commit:
            raise ValueError(f"{src} changed while it was being merged (commit {header.commit} -> {now.commit})")
        if copy:
            staging = dest.with_name(dest.name + ".copying")
            shutil.copytree(src, staging, ignore=shutil.ignore_patterns(LOCK_FILE))
            os.rename(staging, dest)
            return
        if _osfile.HELD_FILES_PINNED:
            fd, lock_fd = lock_fd, -1
            os.close(fd)
        os.rename(src, dest)
        if lock_fd < 0:
            moved = read_header(dest)
            if moved.id != header.id or moved.commit != header.commit:
                os.rename(dest, src)
                raise ValueError(f"{src} changed while it was being merged (commit {header.commit} -> "
                                 f"{moved.commit})")
    finally:
        if lock_fd >= 0:
            os.close(lock_fd)


def check_journal(out: Path, journal_path: Path, journal: Any, shards_dir_name: str
                  ) -> tuple[int, bool, list[tuple[Path, Path]]]:
    """The commit, copy flag and moves (source, destination) of a merge journal, each checked before anything
    moves: a journal is a file in a folder that may come from anyone, and recovery renames and deletes what it
    names. Every destination must be a folder (not a link) directly in the map's ``shards/``; every source an
    absolute, normalized path."""
    def refuse(why: str) -> CorruptMapError:
        return CorruptMapError(f"{journal_path} is not a journal a merge wrote ({why}); nothing was moved. Remove it "
                               f"if this folder came from elsewhere (the shards it names stay where they are)")

    if not isinstance(journal, dict):
        raise refuse(f"it holds {type(journal).__name__}, not an object")
    commit, copy, moves = journal.get("commit"), journal.get("copy"), journal.get("moves")
    if not isinstance(commit, int) or isinstance(commit, bool) or commit < 0:
        raise refuse(f"'commit' is {commit!r}, not a commit number")
    if not isinstance(copy, bool):
        raise refuse(f"'copy' is {copy!r}, not true or false")
    if not isinstance(moves, list):
        raise refuse(f"'moves' is {moves!r}, not a list")
    shards_dir = out / shards_dir_name
    checked: list[tuple[Path, Path]] = []
    for k, move in enumerate(moves):
        if not isinstance(move, dict) or not isinstance(move.get("source"), str) or \
                not isinstance(move.get("dest"), str):
            raise refuse(f"move {k} is {move!r}, not {{'source': <path>, 'dest': <path>}}")
        source, dest = move["source"], move["dest"]
        parts = dest.split("/")
        if len(parts) != 2 or parts[0] != shards_dir_name or parts[1] in ("", ".", "..") or "\\" in dest or \
                "\0" in dest or dest.startswith("/"):
            raise refuse(f"move {k} goes to {dest!r}, not to a folder shards/<name> inside the map")
        if "\0" in source or not os.path.isabs(source) or os.path.normpath(source) != source:
            raise refuse(f"move {k} comes from {source!r}, not an absolute, normalized path")
        checked.append((Path(source), out / dest))
    for k, (source, dest) in enumerate(checked):
        for entry in (shards_dir, dest, dest.with_name(dest.name + ".copying")):
            if entry.is_symlink():
                raise refuse(f"move {k}: {entry} is a symbolic link, and recovery never moves or deletes through "
                             f"one")
        if not copy and dest.exists() and not source.exists():
            # Moving back puts a folder where the journal says: only a map, into a folder that exists.
            try:
                read_header(dest)
            except MapError as e:
                raise refuse(f"move {k}: {dest} holds no map to move back ({e})") from None
            if not source.parent.is_dir():
                raise refuse(f"move {k}: {source.parent} is not a folder to move {dest} back into")
    return commit, copy, checked
