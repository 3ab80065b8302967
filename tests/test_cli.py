"""The mmap-ninja command line: info, verify, head and convert --codec; one clear line on bad input, never a
traceback."""

import json
import subprocess
import sys

import numpy as np
import pytest

from mmap_ninja import RaggedMmap, StringsMmap
from mmap_ninja.cli import main


def run(*args):
    """The command as a user runs it (a real process: exit status, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "mmap_ninja", *map(str, args)], capture_output=True, text=True,
                          timeout=120)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def maps(tmp_path):
    StringsMmap.from_strings(tmp_path / "s", ["first document " * 30, "second"], metadata={"source": "unit test"},
                             codec="zstd")
    RaggedMmap.from_lists(tmp_path / "r", [np.arange(12).reshape(3, 4), np.arange(5)])
    return tmp_path


def test_info_reads_only_the_header(maps, capsys):
    assert main(["info", "--json", str(maps / "s")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "strings" and info["length"] == 2 and info["codec"]["name"] == "zstd"
    assert info["metadata"] == {"source": "unit test"} and info["requires"] == ["codec.zstd"]
    assert info["bytes"]["data"] == (maps / "s" / "data.bin").stat().st_size
    assert main(["info", str(maps / "r")]) == 0
    text = capsys.readouterr().out
    assert "ragged" in text and "ndims:" in text and "[1, 2]" in text


def test_verify_exit_status_says_sound_damaged_or_not_a_map(maps):
    status, out, _ = run("verify", "--deep", maps / "r")
    assert status == 0 and "sound" in out
    data = maps / "r" / "data.bin"
    raw = bytearray(data.read_bytes())
    raw[10] ^= 0x40
    data.write_bytes(bytes(raw))
    status, out, _ = run("verify", "--deep", maps / "r")
    assert status == 1 and "damaged:" in out and "data.bin bytes" in out
    status, out, err = run("verify", maps / "missing")
    assert status == 3 and out == "" and err.count("\n") == 1 and "not a map" in err


def test_head_shortens_samples_for_a_terminal(maps, capsys):
    assert main(["head", "-n", "1", str(maps / "s")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[0] 'first document") and lines[0].endswith("…") and len(lines[0]) <= 100
    assert lines[-1] == "(2 samples)"
    assert main(["head", str(maps / "r")]) == 0
    assert "int64[3, 4]" in capsys.readouterr().out


def test_convert_re_encodes_a_map_with_a_codec(maps):
    status, _out, err = run("convert", "-q", "--codec", "lz4", maps / "r", maps / "r_lz4")
    assert status == 0, err
    converted = RaggedMmap(maps / "r_lz4")
    assert converted.codec == "lz4"
    np.testing.assert_array_equal(converted[0], np.arange(12).reshape(3, 4))
    status, _, err = run("convert", "-q", maps / "r", maps / "again")
    assert status == 1 and "already in the current format" in err and not (maps / "again").exists()


@pytest.mark.parametrize("args", [["info", "{missing}"], ["head", "{missing}"], ["info", "{file}"],
                                  ["head", "{garbage}"]])
def test_bad_input_is_one_line_on_stderr_and_no_traceback(tmp_path, args):
    (tmp_path / "file").write_text("not a map")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "header.json").write_text("{broken")
    status, out, err = run(*[a.format(missing=tmp_path / "missing", file=tmp_path / "file",
                                      garbage=tmp_path / "garbage") for a in args])
    assert status == 1 and out == "" and err.count("\n") == 1 and "Traceback" not in err and "error:" in err
