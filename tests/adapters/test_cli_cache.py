"""``mmap-ninja cache path | ls | clear`` and `mmap_ninja.adapters.cache`, on a real cache filled through
``open_existing("memory://...")``: entries are listed with their URL and size, and clearing never deletes an entry
a live reader holds."""

import json
import os
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from mmap_ninja import RaggedMmap, StringsMmap, merge, open_existing, upload
from mmap_ninja.adapters.cache import clear, list_entries, parse_duration
from mmap_ninja.tools.cli import main

DAY = 86400


@pytest.fixture
def remote(tmp_path):
    """Two single maps uploaded under a fresh memory:// prefix; returns (prefix, cache_dir)."""
    prefix = f"memory://cachecli-{uuid.uuid4().hex}"
    StringsMmap.from_strings(tmp_path / "a", ["alpha", "beta"] * 50).close()
    RaggedMmap.from_lists(tmp_path / "b", [np.arange(k + 1) for k in range(40)]).close()
    upload(tmp_path / "a", f"{prefix}/a")
    upload(tmp_path / "b", f"{prefix}/b")
    return prefix, tmp_path / "cache"


def fill(url, cache):
    """Download the map at ``url`` into ``cache`` (first read) and close it; its entry's directory."""
    m = open_existing(url, cache_dir=cache)
    m[0]
    m.close()
    [entry] = [e for e in list_entries(cache) if e.url == url]
    return cache / "entries" / entry.key


def ls(cache, capsys):
    assert main(["cache", "ls", "--json", "--cache-dir", str(cache)]) == 0
    return json.loads(capsys.readouterr().out)


def files_bytes(directory):
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def test_path_prints_the_option_else_the_environment(tmp_path, capsys, monkeypatch):
    assert main(["cache", "path", "--cache-dir", str(tmp_path / "c")]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'c'}\n"
    monkeypatch.setenv("MMAP_NINJA_CACHE", str(tmp_path / "env"))
    assert main(["cache", "path"]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'env'}\n"
    assert not (tmp_path / "env").exists()  # asking creates nothing
    assert main(["cache", "path", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"cache_dir": str(tmp_path / "env"), "exists": False}


def test_ls_lists_each_entry_with_its_url_size_and_holder(remote, capsys):
    prefix, cache = remote
    entry = fill(f"{prefix}/a", cache)
    listing = ls(cache, capsys)
    [described] = listing["entries"]
    assert described["url"] == f"{prefix}/a" and described["key"] == entry.name
    assert described["size"] == files_bytes(entry) > 0 and listing["total_bytes"] == described["size"]
    assert described["held"] is False and described["about"]["holds"] == "strings map"
    assert described["last_used"] == entry.stat().st_mtime and listing["cache_dir"] == str(cache)

    assert main(["cache", "ls", "--cache-dir", str(cache)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["KEY", "SIZE", "LAST", "USED", "HELD", "URL"]
    assert entry.name in table[1] and table[1].endswith(f"{prefix}/a") and table[-1].startswith("1 entry, ")
    size = described["size"]
    assert (f"{size} B" if size < 1024 else f"{size / 1024:.1f} KiB") in table[1]


def test_sizes_are_written_for_people():
    from mmap_ninja.tools.cli import _bytes

    assert [_bytes(n) for n in (0, 1023, 1024, 3 << 19, 3 << 30, 5 << 40)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 MiB", "3.0 GiB", "5.0 TiB"]


def test_ls_of_a_missing_cache_is_empty_and_creates_nothing(tmp_path, capsys):
    assert ls(tmp_path / "none", capsys) == {"cache_dir": str(tmp_path / "none"), "total_bytes": 0, "entries": []}
    assert not (tmp_path / "none").exists()


def test_a_sharded_map_lists_its_header_and_each_shard_read(remote, tmp_path, capsys):
    prefix, cache = remote
    for k in range(2):
        RaggedMmap.from_lists(tmp_path / f"part{k}", [np.arange(3) + k] * 5).close()
    merge(tmp_path / "s", [tmp_path / "part0", tmp_path / "part1"])
    upload(tmp_path / "s", f"{prefix}/s")
    m = open_existing(f"{prefix}/s", cache_dir=cache)
    m[7]  # shard 1 only
    m.close()
    about = sorted((e["about"]["holds"], e["url"]) for e in ls(cache, capsys)["entries"])
    assert about == [("shard 1 of " + f"{prefix}/s", f"{prefix}/s/shards/shard-000001"),
                     ("sharded map header", f"{prefix}/s")]


def test_clear_older_than_removes_the_old_entry_and_keeps_the_fresh_one(remote, capsys):
    prefix, cache = remote
    old, fresh = fill(f"{prefix}/a", cache), fill(f"{prefix}/b", cache)
    ten_days_ago = time.time() - 10 * DAY
    os.utime(old, (ten_days_ago, ten_days_ago))
    assert main(["cache", "clear", "--older-than", "7d", "--json", "--cache-dir", str(cache)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [e["url"] for e in report["removed"]] == [f"{prefix}/a"] and report["held"] == []
    assert report["freed_bytes"] == report["removed"][0]["size"] > 0 and report["dry_run"] is False
    assert not old.exists() and fresh.is_dir()
    assert not (cache / "meta" / f"{old.name}.json").exists() and list((cache / "trash").iterdir()) == []
    assert [e["url"] for e in ls(cache, capsys)["entries"]] == [f"{prefix}/b"]
    again = open_existing(f"{prefix}/a", cache_dir=cache)  # a cleared entry is downloaded again when read
    assert again[1] == "beta"
    again.close()


def test_an_entry_a_live_reader_holds_is_kept_and_reported(remote, capsys):
    prefix, cache = remote
    entry = fill(f"{prefix}/a", cache)
    reader = open_existing(f"{prefix}/a", cache_dir=cache)
    assert reader[0] == "alpha"  # maps the entry and holds its lock shared
    other = fill(f"{prefix}/b", cache)
    assert {e["url"]: e["held"] for e in ls(cache, capsys)["entries"]} == {f"{prefix}/a": True, f"{prefix}/b": False}

    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert f"removed {other.name}" in out and f"kept {entry.name}" in out and "held by a live reader" in out
    assert entry.is_dir() and not other.exists() and reader[99] == "beta"
    reader.close()
    report = clear(cache)
    assert [e.key for e in report.removed] == [entry.name] and report.held == [] and not entry.exists()


def test_an_entry_held_by_another_process_is_kept(remote, capsys):
    prefix, cache = remote
    entry = fill(f"{prefix}/a", cache)
    # memory:// is per process: the child takes the entry's reader lock as a reader in another process does
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, os; from mmap_ninja import locks; fd = os.open(sys.argv[1], os.O_RDWR); "
                               "locks.lock(fd, shared=True); print('held', flush=True); sys.stdin.read()",
         str(cache / "locks" / entry.name)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "held\n"
        assert main(["cache", "clear", "--json", "--cache-dir", str(cache)]) == 0
        report = json.loads(capsys.readouterr().out)
        assert [e["key"] for e in report["held"]] == [entry.name] and report["removed"] == []
        assert entry.is_dir()
    finally:
        child.stdin.close()
        child.wait(timeout=60)
    assert [e.key for e in clear(cache).removed] == [entry.name]


def test_dry_run_removes_nothing(remote, capsys):
    prefix, cache = remote
    a, b = fill(f"{prefix}/a", cache), fill(f"{prefix}/b", cache)
    before = ls(cache, capsys)
    assert main(["cache", "clear", "--dry-run", "--json", "--cache-dir", str(cache)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] is True and sorted(e["key"] for e in report["removed"]) == sorted([a.name, b.name])
    assert a.is_dir() and b.is_dir() and ls(cache, capsys) == before
    assert main(["cache", "clear", "--dry-run", "--cache-dir", str(cache)]) == 0
    assert "would remove 2 entries" in capsys.readouterr().out


def test_clear_by_url_prefix_and_entries_without_a_description(remote, capsys):
    prefix, cache = remote
    a, b = fill(f"{prefix}/a", cache), fill(f"{prefix}/b", cache)
    (cache / "meta" / f"{b.name}.json").unlink()  # as an entry cached before descriptions were written
    assert {e["key"]: e["url"] for e in ls(cache, capsys)["entries"]} == {a.name: f"{prefix}/a", b.name: None}
    assert main(["cache", "ls", "--cache-dir", str(cache)]) == 0
    assert "(unknown)" in capsys.readouterr().out
    report = clear(cache, url_prefix=f"{prefix}/")
    assert [e.key for e in report.removed] == [a.name] and b.is_dir()  # an unknown URL never matches a prefix
    assert [e.key for e in clear(cache, url_prefix="memory://elsewhere/").removed] == []
    assert [e.key for e in clear(cache).removed] == [b.name]


def test_an_entry_without_a_description_gets_one_when_it_is_read_again(remote, capsys):
    prefix, cache = remote
    entry = fill(f"{prefix}/a", cache)
    description = cache / "meta" / f"{entry.name}.json"
    description.unlink()  # as an entry cached before descriptions were written
    m = open_existing(f"{prefix}/a", cache_dir=cache)
    assert m[0] == "alpha"  # served from the cache
    m.close()
    assert json.loads(description.read_text())["url"] == f"{prefix}/a"


def test_url_is_a_path_prefix_so_a_sharded_map_goes_whole_and_its_siblings_stay(remote, tmp_path, capsys):
    prefix, cache = remote
    for k in range(2):
        RaggedMmap.from_lists(tmp_path / f"part{k}", [np.arange(3) + k] * 5).close()
    merge(tmp_path / "s", [tmp_path / "part0", tmp_path / "part1"])
    upload(tmp_path / "s", f"{prefix}/s")
    upload(tmp_path / "a", f"{prefix}/s2")  # a sibling whose URL starts with the same characters
    m = open_existing(f"{prefix}/s", cache_dir=cache)
    m[0], m[9]  # both shards
    m.close()
    sibling = fill(f"{prefix}/s2", cache)
    assert main(["cache", "clear", "--url", f"{prefix}/s", "--json", "--cache-dir", str(cache)]) == 0
    removed = json.loads(capsys.readouterr().out)["removed"]
    assert sorted(e["url"] for e in removed) == [f"{prefix}/s", f"{prefix}/s/shards/shard-000000",
                                                  f"{prefix}/s/shards/shard-000001"]
    assert [e.key for e in list_entries(cache)] == [sibling.name]


def test_durations():
    assert [parse_duration(t) for t in ("90s", "30m", "12h", "7d", "2w", "1d12h", "1.5h")] == [
        90, 1800, 43200, 7 * DAY, 14 * DAY, 1.5 * DAY, 5400]
    for bad in ("", "7", "d", "7days", "-1d", "1d 2h"):
        with pytest.raises(ValueError, match="a duration is a number with a unit"):
            parse_duration(bad)


def test_errors_are_one_line_and_leave_stdout_empty(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["cache", "clear", "--older-than", "7days", "--cache-dir", str(tmp_path)])
    assert exited.value.code == 2 and "a duration is a number with a unit" in capsys.readouterr().err
    (tmp_path / "file").write_text("not a cache")
    for action in (["ls", "--json"], ["clear", "--json"]):
        assert main(["cache", *action, "--cache-dir", str(tmp_path / "file")]) == 1
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1
        assert err.startswith("mmap-ninja cache: error: ") and "is not a directory" in err
    assert (tmp_path / "file").read_text() == "not a cache"


def run(*args):
    """The command as a user runs it (a real process: exit status, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "mmap_ninja", *map(str, args)], capture_output=True, text=True,
                          timeout=120)
    return done.returncode, done.stdout, done.stderr


def test_as_a_user_runs_it(tmp_path):
    status, out, err = run("cache", "ls", "--json", "--cache-dir", tmp_path / "none")
    assert status == 0 and json.loads(out)["entries"] == [] and err == ""
    status, out, err = run("cache")
    assert status == 2 and out == "" and "ACTION" in err  # which action: path, ls or clear
    (tmp_path / "file").write_text("")
    status, out, err = run("cache", "clear", "--json", "--cache-dir", tmp_path / "file")
    assert status == 1 and out == "" and err.count("\n") == 1 and "Traceback" not in err
