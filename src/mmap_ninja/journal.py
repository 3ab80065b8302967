"""Checks of a merge journal (``.merge-journal.json``) before recovery acts on it.

A journal is a file in a folder that may come from anyone (a tarball, a shared file system), and recovery renames
and deletes what it names: every entry is checked, whole, before anything moves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mmap_ninja.errors import CorruptMapError, MapError
from mmap_ninja.format import read_header

__all__ = ["check_journal"]


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
