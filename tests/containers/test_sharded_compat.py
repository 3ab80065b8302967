"""Sharded maps written by earlier releases open: ``shards.json``'s format name is FORMAT.md's, whatever module the
code lives in."""

import json
import zlib

import numpy as np

from mmap_ninja import RaggedMmap, ShardedMap, merge


def _merged(tmp_path):
    for name in ("a", "b"):
        RaggedMmap.from_lists(tmp_path / name, [np.arange(3), np.arange(2)]).close()
    return merge(tmp_path / "sh", [tmp_path / "a", tmp_path / "b"])


def test_shards_json_names_the_format_of_format_md(tmp_path):
    _merged(tmp_path).close()
    content = json.loads((tmp_path / "sh" / "shards.json").read_text())
    assert content["format"] == "mmap_ninja.sharded"


def test_a_shards_json_written_by_an_earlier_release_opens(tmp_path):
    _merged(tmp_path).close()
    path = tmp_path / "sh" / "shards.json"
    content = json.loads(path.read_text())
    del content["checksum"]
    content["format"] = "mmap_ninja.sharded"  # as 1.0 before the relayout (and FORMAT.md) wrote it
    content["checksum"] = f"crc32:{zlib.crc32(json.dumps(content).encode()):08x}"
    path.write_text(json.dumps(content))
    reopened = ShardedMap(tmp_path / "sh")
    assert len(reopened) == 4 and reopened[3].tolist() == [0, 1]
