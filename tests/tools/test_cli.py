"""The mmap-ninja command line: info, verify, head and convert --codec; one clear line on bad input, never a
traceback."""

import contextlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mmap_ninja import RaggedMmap, StringsMmap
from mmap_ninja.tools.cli import main


def run(*args):
    """The command as a user runs it (a real process: exit status, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "mmap_ninja", *map(str, args)], capture_output=True, text=True,
                          timeout=600)  # bounds a hang only (a convert of 400,000 rows on a loaded machine)
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
    status, out, _ = run("verify", "--json", "--deep", maps / "r")
    report = json.loads(out)
    assert status == 1 and report["ok"] is False and "data.bin bytes" in report["problems"][0]


def test_info_is_instant_on_ten_million_samples(tmp_path, monkeypatch, capsys):
    """info reads headers and file sizes only: with every way of mapping or reading a data file made to fail,
    it still describes 10M-sample maps."""
    import builtins
    import mmap

    from mmap_ninja.kinds.numpy import from_ndarray

    from_ndarray(tmp_path / "n", np.zeros(10_000_000, dtype=np.uint8))
    StringsMmap.from_strings(tmp_path / "s", [""] * 10_000_000)
    real_open = builtins.open

    def no_data_files(file, *args, **kwargs):
        assert not str(file).endswith(".bin"), f"info opened {file}"
        return real_open(file, *args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("info mapped a file")

    monkeypatch.setattr(builtins, "open", no_data_files)
    monkeypatch.setattr(mmap, "mmap", refuse)
    monkeypatch.setattr(np, "memmap", refuse)
    monkeypatch.setattr(np, "fromfile", refuse)
    assert main(["info", "--json", str(tmp_path / "n")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["length"] == 10_000_000 and info["shape"] == [10_000_000] and info["bytes"]["data"] == 10_000_000
    assert main(["info", "--json", str(tmp_path / "s")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["length"] == 10_000_000 and info["bytes"]["offsets"] == 8 * 10_000_001 and info["codec"] == "none"


@pytest.fixture
def sharded(tmp_path):
    from mmap_ninja import merge

    StringsMmap.from_strings(tmp_path / "a", ["alpha", "beta"])
    StringsMmap.from_strings(tmp_path / "b", ["gamma"])
    merge(tmp_path / "sharded", [tmp_path / "a", tmp_path / "b"])
    return tmp_path / "sharded"


def test_info_verify_and_head_understand_a_sharded_map(sharded, capsys):
    assert main(["info", "--json", str(sharded)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "strings" and info["length"] == 3 and info["shards"] == 2
    assert info["bytes"]["data"] == len("alphabetagamma") and info["codec"] == "none"
    assert main(["head", "--json", str(sharded)]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == ["alpha", "beta", "gamma"]
    assert main(["verify", "--deep", str(sharded)]) == 0
    assert "sound (strings, 3 samples" in capsys.readouterr().out
    data = next(sharded.glob("shards/*1/data.bin"))
    data.write_bytes(b"GAMMA")
    status, out, _ = run("verify", "--deep", sharded)
    assert status == 1 and "shard 1" in out and "samples 2..2 of the sharded map" in out and "checksum" in out


def test_head_json_gives_samples_a_script_can_parse(maps, capsys):
    assert main(["head", "--json", "-n", "1", str(maps / "r")]) == 0
    head = json.loads(capsys.readouterr().out)
    assert head["length"] == 2
    assert head["samples"] == [{"dtype": "int64", "shape": [3, 4], "values": list(range(12)), "truncated": False}]


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


@pytest.mark.parametrize("command", ["info", "head", "verify", "convert"])
@pytest.mark.parametrize("what, status, says", [("missing", 3, "not a map:"), ("file", 3, "not a map:"),
                                                ("empty", 3, "not a map:"), ("garbage", 1, "error:"),
                                                ("bad_shards", 1, "error:")])
def test_bad_input_is_one_line_on_stderr_and_no_traceback(tmp_path, command, what, status, says):
    (tmp_path / "file").write_text("not a map")
    (tmp_path / "empty").mkdir()
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "header.json").write_text("{broken")
    (tmp_path / "bad_shards").mkdir()
    (tmp_path / "bad_shards" / "shards.json").write_text("[1, 2")
    args = [command, tmp_path / what] + ([tmp_path / "out"] if command == "convert" else [])
    got, out, err = run(*args)
    if command == "verify" and status == 1:  # verify reports a corrupt header as damage, on stdout
        assert got == 1 and "damaged:" in out and "not valid JSON" in out and "Traceback" not in err
        return
    assert got == status and out == "" and err.count("\n") == 1 and "Traceback" not in err and says in err
    assert not (tmp_path / "out").exists()


def test_deep_verify_can_show_a_progress_bar(maps, capsys):
    from mmap_ninja import verify

    assert verify(maps / "r", deep=True, progress=True).ok
    assert "verifying r" in capsys.readouterr().err
    assert verify(maps / "r", deep=True).ok
    assert capsys.readouterr().err == ""


def test_info_on_records_names_each_fields_kind_and_the_key(tmp_path, capsys):
    """A records map's info says what each field is (strings, numpy, ragged, images) and which field is the key:
    without the kind, a strings field showed only ``{"codec": "none"}``."""
    from mmap_ninja import RecordsMmap

    RecordsMmap.from_dict(tmp_path / "rec", {"id": ["a", "b"], "x": np.arange(2), "r": [np.arange(1), np.arange(2)]},
                          key="id")
    assert main(["info", "--json", str(tmp_path / "rec")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["key"] == "id"
    assert {name: spec["kind"] for name, spec in info["fields"].items()} == {"id": "strings", "x": "numpy",
                                                                               "r": "ragged"}
    assert main(["info", str(tmp_path / "rec")]) == 0
    text = capsys.readouterr().out
    assert 'id: kind "strings"' in text and "key:" in text


def test_head_shows_numpy_scalars_as_plain_numbers(tmp_path, capsys):
    """A records map's scalar fields read as NumPy scalars, whose repr under NumPy 2 is ``np.int64(0)``."""
    from mmap_ninja import RecordsMmap

    RecordsMmap.from_dict(tmp_path / "rec", {"x": np.arange(2), "y": np.array([0.5, 1.5], dtype=np.float32)})
    assert main(["head", str(tmp_path / "rec")]) == 0
    out = capsys.readouterr().out
    assert "[0] {'x': 0, 'y': 0.5}" in out and "np." not in out


def test_a_deep_verify_of_a_map_without_checksums_does_not_claim_it_checked_them(tmp_path):
    """A map written before checksums (or by 0.9.0) has none: the summary line said "checked every checksum"
    while the note above it said there were none."""
    StringsMmap.from_strings(tmp_path / "s", ["a", "b"])
    header = json.loads((tmp_path / "s" / "header.json").read_text())
    del header["checksums"], header["checksum"], header["columns"]["checksums"]
    (tmp_path / "s" / "header.json").write_text(json.dumps(header))
    status, out, _ = run("verify", "--deep", tmp_path / "s")
    assert status == 0 and "every checksum" not in out and "it has no checksums" in out
    status, out, _ = run("verify", "--deep", "--json", tmp_path / "s")
    assert status == 0 and json.loads(out)["checksums_missing"] is True
    StringsMmap.from_strings(tmp_path / "t", ["a", "b"])
    status, out, _ = run("verify", "--deep", "--json", tmp_path / "t")
    assert status == 0 and json.loads(out)["checksums_missing"] is False


def test_json_output_stays_empty_on_an_error(tmp_path):
    """As the README says: with --json an error prints nothing on stdout (one line on stderr), so a script checks
    the exit status before parsing."""
    for command in ("info", "verify", "head"):
        status, out, err = run(command, "--json", tmp_path / "missing")
        assert (status, out) == (3, "") and err.count("\n") == 1


def _rows(first: int, count: int) -> bytes:
    return "".join(json.dumps({"i": i, "text": f"line {i} " * 4}) + "\n" for i in range(first, first + count)).encode()


@contextlib.contextmanager
def _convert_waiting_on_a_pipe(tmp_path, written_batches: int):
    """A ``convert`` of a JSON-lines named pipe into ``tmp_path/out`` (batches of 1,000 rows), fed
    ``written_batches`` batches and then kept waiting for more: the pipe stays open, so the process cannot finish
    however slow the machine is. Returns the process and the pipe's open end once the build folder's map holds the
    batches written, so that the process is waiting on the pipe for more (nothing here depends on timing: the loop
    waits for a state the process must reach; a signal sent while it was still building landed wherever it was,
    even in a ``__del__``, where Python drops a KeyboardInterrupt); the pipe closes when the block ends."""
    import signal
    import time

    from mmap_ninja import open_existing
    from mmap_ninja.errors import MapError

    def committed(folder):
        try:
            with open_existing(folder, mode="r", allow_unfinished=True) as m:
                return len(m)
        except (MapError, OSError):  # not a map yet
            return 0

    pipe = tmp_path / "stream.jsonl"
    os.mkfifo(pipe)
    # Ctrl-C as in a terminal: a job started in the background (`cmd &` in a script, as a CI runner may start
    # the tests) ignores SIGINT, and a Python started with SIGINT ignored keeps ignoring it.
    process = subprocess.Popen([sys.executable, "-m", "mmap_ninja", "convert", "-q", "--batch-size", "1000",
                                str(pipe), str(tmp_path / "out")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    with open(pipe, "wb") as writer:  # opening blocks until the process opens the pipe
        writer.write(_rows(0, written_batches * 1000 + 1))
        writer.flush()
        deadline = time.monotonic() + 300  # bounds a broken build only: the process cannot end before the pipe closes
        while process.poll() is None and time.monotonic() < deadline and not any(
                p.is_dir() and committed(p) >= written_batches * 1000 for p in tmp_path.glob(".out.converting-*")):
            time.sleep(0.01)
        assert process.poll() is None, f"the conversion stopped while its source was open: {process.communicate()}"
        yield process


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_ctrl_c_during_convert_leaves_nothing_behind(tmp_path):
    """SIGINT (Ctrl-C) in the middle of a convert: exit 130, one line on stderr, no DST and no temporary folder."""
    import signal

    before = sorted([p.name for p in tmp_path.iterdir()] + ["stream.jsonl"])
    with _convert_waiting_on_a_pipe(tmp_path, written_batches=3) as process:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=600)
    assert process.returncode == 130 and err == "mmap-ninja convert: interrupted\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_what_a_killed_convert_left_is_removed_by_the_next_one_to_the_same_destination(tmp_path):
    """SIGKILL in the middle of a convert leaves its hidden build folder (possibly gigabytes) next to DST; the
    next convert to DST removes it, and keeps the folder of a convert that is still running (its lock is held)."""
    import fcntl
    import signal

    with _convert_waiting_on_a_pipe(tmp_path, written_batches=3) as process:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=600)
    killed = sorted(p.name for p in tmp_path.glob(".out.converting-*"))
    assert len(killed) == 2 and killed[1] == killed[0] + ".lock"  # the build folder and its lock file
    src = tmp_path / "rows.jsonl"
    src.write_bytes(_rows(0, 400_000))
    running = tmp_path / ".out.converting-running"
    running.mkdir()
    with open(f"{running}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        status, _, err = run("convert", "-q", src, tmp_path / "out")
        assert (status, err) == (0, "")
    assert sorted(p.name for p in tmp_path.glob(".out.converting-*")) == [running.name, running.name + ".lock"]
    from mmap_ninja import open_existing

    with open_existing(tmp_path / "out") as m:
        assert len(m) == 400_000 and m[399_999]["i"] == 399_999


def test_traceback_is_understood_after_the_subcommand_too(tmp_path):
    """``mmap-ninja info PATH --traceback`` was a usage error (exit 2): only ``mmap-ninja --traceback info PATH``
    worked."""
    for argv in (["info", tmp_path / "missing", "--traceback"], ["--traceback", "info", tmp_path / "missing"]):
        status, _, err = run(*argv)
        assert status == 1 and "Traceback (most recent call last)" in err and "NotAMapError" in err
    status, _, err = run("info", tmp_path / "missing")
    assert status == 3 and "Traceback" not in err


def test_info_on_a_sharded_images_map_lists_the_formats_its_shards_hold(tmp_path, capsys):
    """The formats live in each shard's header: a sharded images map's info said ``"formats": []``."""
    from mmap_ninja import ImagesMmap, merge

    ImagesMmap.from_generator(tmp_path / "a", [np.zeros((4, 5, 3), np.uint8)], 1, format="jpeg").close()
    ImagesMmap.from_generator(tmp_path / "b", [np.zeros((4, 5, 4), np.uint8)], 1).close()  # PNG, the default
    merge(tmp_path / "sharded", [tmp_path / "a", tmp_path / "b"]).close()
    assert main(["info", "--json", str(tmp_path / "sharded")]) == 0
    assert json.loads(capsys.readouterr().out)["formats"] == ["JPEG", "PNG"]


def test_verify_of_a_map_whose_header_is_unreadable_prints_no_none(tmp_path):
    """The summary line read "DAMAGED (None, None samples; ...)" when the header could not be read."""
    StringsMmap.from_strings(tmp_path / "s", ["a"])
    (tmp_path / "s" / "header.json").write_text("garbage")
    status, out, _ = run("verify", tmp_path / "s")
    assert status == 1 and "None" not in out and "header.json is not valid JSON" in out
    assert out.splitlines()[-1].startswith(f"{tmp_path / 's'}: DAMAGED (kind unknown")


def test_a_reader_that_stops_early_gets_no_broken_pipe_error(tmp_path):
    """``mmap-ninja head -n 100000 PATH | head -1``: the pipe closes early; that printed "error: [Errno 32] Broken
    pipe" and exited 1. Like other command-line tools it now stops quietly (status 141, 128 + SIGPIPE)."""
    StringsMmap.from_strings(tmp_path / "s", [f"sample {i} " * 10 for i in range(100_000)])
    process = subprocess.Popen([sys.executable, "-m", "mmap_ninja", "head", "-n", "100000", str(tmp_path / "s")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline().startswith(b"[0] 'sample 0")
    process.stdout.close()  # the reader goes away
    err = process.stderr.read()
    assert process.wait(timeout=600) == 141 and err == b""


def test_info_json_keys_are_identifiers(maps, capsys):
    """A script reads ``info["unfinished_build"]``; the key had a space ("unfinished build"), unlike every other
    key of info's and verify's JSON. The text output keeps its readable label."""
    assert main(["info", "--json", str(maps / "s")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["unfinished_build"] is False and all(" " not in key for key in info)
    assert main(["info", str(maps / "s")]) == 0
    assert "unfinished build: False" in capsys.readouterr().out


def test_head_json_is_standard_json_with_nan_and_infinity(tmp_path, capsys):
    """``json.dumps(allow_nan=True)`` wrote bare NaN and Infinity, which JSON does not have (jq and JavaScript
    refuse them); non-finite floats are written as the strings "nan", "inf" and "-inf"."""
    from mmap_ninja import RecordsMmap

    RecordsMmap.from_dict(tmp_path / "rec", {"x": np.array([np.nan, np.inf]), "v": [np.array([1.0, -np.inf])] * 2})
    assert main(["head", "--json", str(tmp_path / "rec")]) == 0
    out = capsys.readouterr().out
    head = json.loads(out, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    assert [s["x"] for s in head["samples"]] == ["nan", "inf"] and head["samples"][0]["v"]["values"] == [1.0, "-inf"]
