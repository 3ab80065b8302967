"""Checksums and headers at the edges: the default checksum is a core dependency, and a newer major version is
reported as such before any checksum is checked (issue 20)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mmap_ninja
from mmap_ninja import FormatVersionError, RaggedMmap, StringsMmap, merge, open_existing, verify
from mmap_ninja.containers.sharded import FORMAT_VERSION as SHARDS_VERSION
from mmap_ninja.storage.format import FORMAT_VERSION

ROOT = Path(__file__).resolve().parents[2]


def test_xxhash_is_a_core_dependency():
    dependencies = re.search(r"^dependencies = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.M | re.S)
    assert dependencies is not None and '"xxhash>=' in dependencies.group(1)


def test_new_maps_use_xxh3_whatever_is_importable(tmp_path):
    # The algorithm a new map records does not depend on what happens to be importable: without xxhash (a broken
    # installation) building fails loudly instead of writing a map in another format.
    code = ("import sys; sys.modules['xxhash'] = None\n"
            "from mmap_ninja.storage.checksums import default_algorithm\n"
            "print(default_algorithm())\n")
    env = dict(os.environ, PYTHONPATH=str(Path(mmap_ninja.__file__).resolve().parent.parent))  # this mmap_ninja
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "xxh3_64"


def test_a_map_built_with_xxhash_appends_and_deep_verifies(tmp_path):
    with StringsMmap.from_generator(tmp_path / "m", (str(i) for i in range(10)), batch_size=4) as m:
        pass
    checksums = json.loads((tmp_path / "m" / "header.json").read_text())["checksums"]
    assert checksums == {"algorithm": "xxh3_64", "granularity": 8 << 20}  # records cut every 8 MiB (ranged reads)
    with StringsMmap(tmp_path / "m") as m:
        m.append("more")
    assert verify(tmp_path / "m", deep=True).ok


def _newer_major_with_a_foreign_checksum(path: Path, name: str) -> None:
    content = json.loads((path / name).read_text())
    content["version"] = [content["version"][0] + 1, 0]
    content["checksum"] = "sha256:" + "0" * 64  # however the newer version computes it
    (path / name).write_text(json.dumps(content))


def test_a_newer_major_header_is_a_version_error_before_its_checksum(tmp_path):
    RaggedMmap.from_lists(tmp_path / "m", [np.arange(3)]).close()
    _newer_major_with_a_foreign_checksum(tmp_path / "m", "header.json")
    newer = f"{FORMAT_VERSION[0] + 1}.0"
    ours = f"{FORMAT_VERSION[0]}.{FORMAT_VERSION[1]}"
    with pytest.raises(FormatVersionError, match=rf"{newer}.*{ours}"):
        open_existing(tmp_path / "m")


def test_a_newer_major_shards_json_is_a_version_error_before_its_checksum(tmp_path):
    for k in range(2):
        RaggedMmap.from_lists(tmp_path / f"p{k}", [np.arange(k + 1)]).close()
    merge(tmp_path / "s", [tmp_path / "p0", tmp_path / "p1"])
    _newer_major_with_a_foreign_checksum(tmp_path / "s", "shards.json")
    newer = f"{SHARDS_VERSION[0] + 1}.0"
    ours = f"{SHARDS_VERSION[0]}.{SHARDS_VERSION[1]}"
    with pytest.raises(FormatVersionError, match=rf"{newer}.*{ours}"):
        open_existing(tmp_path / "s")
