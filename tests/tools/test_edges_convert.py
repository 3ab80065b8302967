"""Conversions at the edges (issue 20): `mmap_ninja.convert` is the function, metadata survives every conversion,
missing parents of DST are created (and removed again when the conversion fails)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mmap_ninja
from mmap_ninja import RaggedMmap, StringsMmap, merge, open_existing
from mmap_ninja.tools.cli import main

SRC_DIR = str(Path(mmap_ninja.__file__).resolve().parent.parent)


def test_mmap_ninja_convert_is_the_function_whatever_was_imported_first():
    import mmap_ninja.tools.conversion

    assert callable(mmap_ninja.convert) and mmap_ninja.convert is mmap_ninja.tools.conversion.convert
    assert "convert" in mmap_ninja.__all__
    for first in ("import mmap_ninja", "import mmap_ninja.tools.conversion", "import mmap_ninja.tools.cli",
                  "from mmap_ninja.tools.conversion import convert"):
        code = f"{first}\nimport mmap_ninja\nassert callable(mmap_ninja.convert), mmap_ninja.convert\nprint('ok')"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, PYTHONPATH=SRC_DIR))
        assert done.returncode == 0 and done.stdout.strip() == "ok", (first, done.stderr)


def test_reencoding_with_a_codec_keeps_the_metadata(tmp_path):
    pytest.importorskip("lz4")
    metadata = {"source": "wiki", "split": [1, 2]}
    StringsMmap.from_strings(tmp_path / "m", ["a", "bb", "ccc"], metadata=metadata).close()
    done = mmap_ninja.convert(tmp_path / "m", tmp_path / "lz4", codec="lz4", verbose=False)
    with StringsMmap(done.path, mode="r") as converted:
        assert converted.metadata == metadata and list(converted) == ["a", "bb", "ccc"]
    assert main(["convert", "-q", "--codec", "lz4", str(tmp_path / "m"), str(tmp_path / "cli")]) == 0
    assert json.loads((tmp_path / "cli" / "header.json").read_text())["metadata"] == metadata


def test_a_sharded_map_into_one_map_keeps_the_metadata(tmp_path):
    for k in range(2):
        RaggedMmap.from_lists(tmp_path / f"p{k}", [np.arange(k + 1)]).close()
    merge(tmp_path / "s", [tmp_path / "p0", tmp_path / "p1"], metadata={"labels": ["cat", "dog"]})
    done = mmap_ninja.convert(tmp_path / "s", tmp_path / "one", verbose=False)
    with open_existing(done.path, mode="r") as converted:
        assert converted.metadata == {"labels": ["cat", "dog"]} and len(converted) == 2
    assert main(["convert", "-q", str(tmp_path / "s"), str(tmp_path / "cli")]) == 0
    assert json.loads((tmp_path / "cli" / "header.json").read_text())["metadata"] == {"labels": ["cat", "dog"]}


def test_shards_sharing_metadata_keep_it_when_the_sharded_map_has_none(tmp_path):
    for k in range(2):
        RaggedMmap.from_lists(tmp_path / f"p{k}", [np.arange(k + 1)], metadata={"units": "mm"}).close()
    merge(tmp_path / "s", [tmp_path / "p0", tmp_path / "p1"])
    done = mmap_ninja.convert(tmp_path / "s", tmp_path / "one", verbose=False)
    with open_existing(done.path, mode="r") as converted:
        assert converted.metadata == {"units": "mm"}


def test_missing_parents_of_the_destination_are_created(tmp_path):
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("hello")
    done = mmap_ninja.convert(tmp_path / "texts", tmp_path / "a" / "b" / "c", verbose=False)
    assert done.path == tmp_path / "a" / "b" / "c" and list(StringsMmap(done.path, mode="r")) == ["hello"]
    assert main(["convert", "-q", str(tmp_path / "texts"), str(tmp_path / "x" / "y" / "z")]) == 0
    assert list(StringsMmap(tmp_path / "x" / "y" / "z", mode="r")) == ["hello"]


def test_a_failed_conversion_removes_the_parents_it_created(tmp_path):
    (tmp_path / "rows.jsonl").write_text('{"a": 1}\n{"a": "text"}\n')
    with pytest.raises(TypeError, match="line 2"):
        mmap_ninja.convert(tmp_path / "rows.jsonl", tmp_path / "new" / "deep" / "dst", verbose=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]
