"""``mmap-ninja head URL --json`` names the map by its URL, as ``info`` does, not by the cache entry it was read
from (a path of the local cache means nothing to the script that asked for the URL)."""

import json

import numpy as np
import pytest

pytest.importorskip("fsspec")

from mmap_ninja import RaggedMmap, merge, upload
from mmap_ninja.tools.cli import main


def test_head_json_of_a_url_names_the_url(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MMAP_NINJA_CACHE", str(tmp_path / "cache"))
    RaggedMmap.from_lists(tmp_path / "a", [np.arange(3, dtype=np.int32)] * 2).close()
    RaggedMmap.from_lists(tmp_path / "b", [np.arange(2, dtype=np.int32)] * 2).close()
    merge(tmp_path / "sh", [tmp_path / "a", tmp_path / "b"]).close()
    RaggedMmap.from_lists(tmp_path / "one", [np.arange(4, dtype=np.int32)]).close()
    for name in ("sh", "one"):
        url = f"file://{tmp_path}/up_{name}"
        upload(tmp_path / name, url)
        assert main(["head", url, "-n", "1", "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["path"] == url and shown["samples"][0]["shape"] == [3 if name == "sh" else 4]
    assert main(["head", str(tmp_path / "one"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(tmp_path / "one")
