"""A map folder from an untrusted source (a tarball, a shared file system) never makes a write leave the map.

Every case keeps a sentinel folder outside the map, which must stay byte-identical whatever the map holds.
"""

import json
import os
from pathlib import Path

import pytest

from mmap_ninja import MapError, StringsMmap
from mmap_ninja.containers.sharded import JOURNAL_FILE, merge, recover_merge

WORDS = ["alpha", "beta", "gamma", "delta"]


def snapshot_tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (links not followed) by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def sentinel(tmp_path):
    """A folder outside every map, with files a hostile map may point at; checked unchanged after the test."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "precious.txt").write_bytes(b"precious " * 7_467)
    (folder / "other.bin").write_bytes(bytes(range(256)) * 10)
    (folder / "victim").mkdir()
    (folder / "victim" / "file").write_bytes(b"keep me")
    before = snapshot_tree(folder)
    yield folder
    assert snapshot_tree(folder) == before
    assert sorted(p.name for p in folder.iterdir()) == ["other.bin", "precious.txt", "victim"]


def make_map(path: Path) -> Path:
    StringsMmap.from_strings(path, WORDS).close()
    return path


def test_a_symlinked_header_tmp_is_refused_on_append(tmp_path, sentinel):
    m = make_map(tmp_path / "m")
    os.symlink(sentinel / "precious.txt", m / "header.json.tmp")
    opened = StringsMmap(m)
    with pytest.raises(MapError, match=r"header\.json\.tmp"):
        opened.append("epsilon")
    opened.close()
    assert list(StringsMmap(m)) == WORDS


def test_a_symlinked_column_is_read_but_never_written(tmp_path, sentinel):
    m = make_map(tmp_path / "m")
    # A DVC-style checkout: the column file is a link into a cache, with an uncommitted tail on top.
    target = sentinel / "precious.txt"
    target_bytes = target.read_bytes()
    (m / "data.bin").unlink()
    os.symlink(target, m / "data.bin")
    opened = StringsMmap(m)
    assert len(opened) == len(WORDS)
    opened[0]  # reads through the link are allowed
    with pytest.raises(MapError, match=r"data\.bin"):
        opened.append("epsilon")  # the tail past the committed bytes would be cut, then written: refused
    opened.close()
    assert target.read_bytes() == target_bytes


def test_a_dangling_lock_link_creates_nothing_outside(tmp_path, sentinel):
    m = make_map(tmp_path / "m")
    (m / ".lock").unlink(missing_ok=True)
    os.symlink(sentinel / "created-by-lock", m / ".lock")
    opened = StringsMmap(m)
    with pytest.raises(MapError, match=r"\.lock"):
        opened.append("epsilon")
    opened.close()


def test_a_map_whose_root_is_a_symlink_is_written_normally(tmp_path):
    real = make_map(tmp_path / "disk" / "m")
    link = tmp_path / "link"
    os.symlink(real, link)
    opened = StringsMmap(link)
    opened.append("epsilon")
    opened.close()
    assert list(StringsMmap(real)) == [*WORDS, "epsilon"]


def test_a_symlinked_shards_json_tmp_is_refused_on_merge(tmp_path, sentinel):
    out = tmp_path / "out"
    merge(out, [make_map(tmp_path / "a")]).close()
    os.symlink(sentinel / "precious.txt", out / "shards.json.tmp")
    b = make_map(tmp_path / "b")
    with pytest.raises(MapError, match=r"shards\.json\.tmp"):
        merge(out, [b])
    assert list(StringsMmap(b)) == WORDS  # moved back


def hostile_journal(tmp_path: Path, moves, **extra) -> Path:
    out = tmp_path / "out"
    merge(out, [make_map(tmp_path / "a")]).close()
    journal = {"commit": 99, "copy": False, "moves": moves, **extra}
    (out / JOURNAL_FILE).write_text(json.dumps(journal))
    return out


@pytest.mark.parametrize("make_moves", [
    lambda s: [{"source": str(s / "victim-moved"), "dest": "../outside/victim"}],
    lambda s: [{"source": str(s / "victim-moved"), "dest": str(s / "victim")}],
    lambda s: [{"source": str(s / "victim-moved"), "dest": "shards/../../outside/victim"}],
    lambda s: [{"source": str(s / "victim-moved"), "dest": "shards"}],
    lambda s: [{"source": str(s / "victim-moved"), "dest": 7}],
    lambda s: [{"source": 7, "dest": "shards/shard-000000"}],
    lambda s: [{"source": "relative/path", "dest": "shards/shard-000000"}],
    lambda s: [{"dest": "shards/shard-000000"}],
    lambda s: ["shards/shard-000000"],
    lambda s: {"source": "x", "dest": "y"},
], ids=["dotdot", "absolute", "dotdot-inside", "shards-itself", "dest-type", "source-type", "source-relative",
        "missing-key", "entry-type", "moves-type"])
@pytest.mark.parametrize("copy", [False, True])
def test_a_hostile_merge_journal_is_refused_before_anything_moves(tmp_path, sentinel, make_moves, copy):
    out = hostile_journal(tmp_path, make_moves(sentinel), copy=copy)
    before = snapshot_tree(out)
    with pytest.raises(MapError, match="merge-journal"):
        recover_merge(out)
    with pytest.raises(MapError, match="merge-journal"):
        merge(out, [make_map(tmp_path / "b")])
    assert snapshot_tree(out) == before
    assert list(StringsMmap(tmp_path / "b")) == WORDS


@pytest.mark.parametrize("journal", [[], "x", {"commit": "1", "copy": False, "moves": []},
                                     {"commit": 2, "copy": "no", "moves": []}, {"commit": 2, "copy": False}])
def test_a_malformed_journal_is_refused(tmp_path, sentinel, journal):
    out = tmp_path / "out"
    merge(out, [make_map(tmp_path / "a")]).close()
    (out / JOURNAL_FILE).write_text(json.dumps(journal))
    with pytest.raises(MapError, match="merge-journal"):
        recover_merge(out)


def test_a_journal_dest_that_is_a_link_out_of_the_map_is_refused(tmp_path, sentinel):
    out = hostile_journal(tmp_path, [])
    os.symlink(sentinel / "victim", out / "shards" / "shard-000009")
    journal = {"commit": 99, "copy": True, "moves": [{"source": str(tmp_path / "gone"), "dest": "shards/shard-000009"}]}
    (out / JOURNAL_FILE).write_text(json.dumps(journal))
    with pytest.raises(MapError, match="shard-000009"):
        recover_merge(out)


def test_format_md_plans_every_change_of_this_round():
    """FORMAT.md says, for each format change of this round, whether older readers may ignore it (an optional key)
    or must refuse the map (a `requires` feature), and how existing maps keep opening."""
    text = (Path(__file__).resolve().parents[2] / "FORMAT.md").read_text()
    plan = text.split("## The plan for this round's format changes", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in plan.splitlines() if line.startswith("| ") and not line.startswith("| change")]
    topics = {"upload object names": "`requires`", "zstd frame checksums": "optional key",
              "explicit image format": "optional key", "finer-grained checksum records": "optional key",
              "never renames over a file a reader holds": "`requires`"}
    for topic, kind in topics.items():
        row = next((r for r in rows if topic in r), None)
        assert row is not None, topic
        assert row.split("|")[2].strip().startswith(kind), row
        assert row.split("|")[4].strip(), f"{topic}: how existing maps keep opening"


def test_a_journal_never_moves_a_folder_that_holds_no_map_out_of_the_map(tmp_path, sentinel):
    out = hostile_journal(tmp_path, [])
    planted = out / "shards" / "shard-000009"
    planted.mkdir()
    (planted / "payload").write_text("not a map")
    journal = {"commit": 99, "copy": False,
               "moves": [{"source": str(sentinel / "victim" / "planted"), "dest": "shards/shard-000009"}]}
    (out / JOURNAL_FILE).write_text(json.dumps(journal))
    with pytest.raises(MapError, match="holds no map"):
        recover_merge(out)
    assert (planted / "payload").exists()


def test_a_journal_never_creates_folders_outside_the_map(tmp_path, sentinel):
    out = hostile_journal(tmp_path, [])
    shard = out / "shards" / "shard-000000"
    journal = {"commit": 99, "copy": False,
               "moves": [{"source": str(sentinel / "new-folder" / "x"), "dest": "shards/shard-000000"}]}
    (out / JOURNAL_FILE).write_text(json.dumps(journal))
    with pytest.raises(MapError, match="not a folder"):
        recover_merge(out)
    assert shard.is_dir()
