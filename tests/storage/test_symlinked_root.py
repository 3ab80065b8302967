"""A map's root may be a symbolic link (its data on another disk): it is resolved once, when the map is opened or
created (FORMAT.md, "Untrusted map folders"), and the handle keeps to the folder it resolved."""

import os
import pickle

import numpy as np
import pytest

from mmap_ninja import MapError, MapMovedError, RaggedMmap, ShardedMap, StringsMmap, merge, open_existing, verify

WORDS = ["alpha", "beta", "gamma"]


def repoint(link, target):
    """Point the symbolic link ``link`` at ``target`` (atomically, as a deployment switching versions does)."""
    tmp = link.with_name(link.name + ".new")
    os.symlink(target, tmp)
    os.replace(tmp, link)


def test_a_map_created_through_a_link_to_a_folder_elsewhere_lives_there(tmp_path):
    disk = tmp_path / "other-disk"
    link = tmp_path / "data"
    os.symlink(disk / "tokens", link)  # the folder does not exist yet: creating the map makes it
    samples = [np.arange(n) for n in (1, 2, 3)]
    m = RaggedMmap.from_lists(link, samples)
    assert m.path == disk / "tokens"  # the resolved folder
    m.extend([np.arange(4)])
    m.close()
    assert link.is_symlink() and (disk / "tokens" / "header.json").is_file()
    again = open_existing(link)
    assert [s.tolist() for s in again] == [s.tolist() for s in [*samples, np.arange(4)]]
    again.append(np.arange(5))
    assert len(RaggedMmap(disk / "tokens", mode="r")) == 5
    assert verify(link, deep=True).ok and verify(disk / "tokens", deep=True).ok
    again.close()


def test_a_handle_keeps_the_folder_it_opened_when_the_link_is_repointed(tmp_path):
    first = tmp_path / "v1"
    second = tmp_path / "v2"
    StringsMmap.from_strings(first, WORDS).close()
    StringsMmap.from_strings(second, ["other"]).close()
    second_files = {p.name: p.read_bytes() for p in second.iterdir()}
    link = tmp_path / "current"
    os.symlink(first, link)
    m = StringsMmap(link)
    copy = pickle.dumps(m)
    repoint(link, second)
    m.append("delta")  # into the map this handle opened, never into the one the link names now
    assert list(m) == [*WORDS, "delta"] and m.path == first
    assert list(StringsMmap(first, mode="r")) == [*WORDS, "delta"]
    assert {p.name: p.read_bytes() for p in second.iterdir()} == second_files
    assert list(pickle.loads(copy)) == [*WORDS, "delta"]  # a copy pickled by path reopens the same folder
    m.close()


def test_a_symlinked_root_keeps_the_protections_of_the_files_inside(tmp_path):
    real = tmp_path / "disk" / "m"
    StringsMmap.from_strings(real, WORDS).close()
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"precious " * 100)
    link = tmp_path / "link"
    os.symlink(real, link)
    (real / "data.bin").rename(tmp_path / "cache-data.bin")
    os.symlink(tmp_path / "cache-data.bin", real / "data.bin")  # a column linked into a cache: read, never written
    m = StringsMmap(link)
    assert list(m) == WORDS
    with pytest.raises(MapError, match=r"data\.bin"):
        m.append("delta")
    m.close()
    (real / "data.bin").unlink()
    (tmp_path / "cache-data.bin").rename(real / "data.bin")
    os.symlink(outside, real / "header.json.tmp")
    m = StringsMmap(link)
    with pytest.raises(MapError, match=r"header\.json\.tmp"):
        m.append("delta")
    m.close()
    assert outside.read_bytes() == b"precious " * 100 and list(StringsMmap(link, mode="r")) == WORDS


def test_a_map_moved_away_from_under_its_link_says_so(tmp_path):
    real = tmp_path / "disk" / "m"
    StringsMmap.from_strings(real, WORDS).close()
    link = tmp_path / "link"
    os.symlink(real, link)
    m = StringsMmap(link)
    real.rename(tmp_path / "disk" / "moved")
    with pytest.raises(MapMovedError, match=rf"{real}.*moved or deleted"):
        m.append("delta")
    m.close()


def test_a_sharded_map_opened_through_a_link_reads_the_shards_of_the_folder_it_opened(tmp_path):
    for version, words in (("v1", WORDS), ("v2", ["x", "y", "z"])):
        parts = []
        for k, word in enumerate(words):
            StringsMmap.from_strings(tmp_path / f"{version}-part{k}", [word]).close()
            parts.append(tmp_path / f"{version}-part{k}")
        merge(tmp_path / version, parts).close()
    link = tmp_path / "current"
    os.symlink(tmp_path / "v1", link)
    s = ShardedMap(link, mode="r", max_open_shards=1)
    assert s[0] == WORDS[0] and s.path == tmp_path / "v1"
    repoint(link, tmp_path / "v2")
    assert list(s) == WORDS  # shards opened later come from v1 still (they were refused as replaced shards)
    assert list(ShardedMap(link, mode="r")) == ["x", "y", "z"]  # a new handle resolves the link anew
    s.close()


def test_merge_sees_through_links_when_it_checks_where_maps_are(tmp_path):
    source = tmp_path / "disk" / "m"
    StringsMmap.from_strings(source, WORDS).close()
    (source / "inner").mkdir()
    os.symlink(source / "inner", tmp_path / "out")  # the sharded map would lie inside the map moved into it
    before = sorted(p.name for p in source.iterdir())
    with pytest.raises(ValueError, match="lies inside the map"):
        merge(tmp_path / "out", [source])
    assert sorted(p.name for p in source.iterdir()) == before  # nothing moved (out holds merge's .lock only)
    assert [p.name for p in (source / "inner").iterdir()] in ([], [".lock"])
    os.symlink(tmp_path / "disk", tmp_path / "disk-link")
    with pytest.raises(ValueError, match="given twice"):  # one map under two names
        merge(tmp_path / "out2", [source, tmp_path / "disk-link" / "m"])
    assert not (tmp_path / "out2").exists() and list(StringsMmap(source, mode="r")) == WORDS
