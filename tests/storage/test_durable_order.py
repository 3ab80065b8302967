"""The order in which ``durable`` operations make things durable (FORMAT.md, Durability): what a header or
``shards.json`` names is on disk (file data and directory entries) before the rename that publishes it.

A child process records, through wrapped ``os.fsync``, ``os.rename`` and ``os.replace`` (the real calls still
run), every fsync (of which file or directory) and every rename, in order.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")

RECORDER = textwrap.dedent("""
    import json, os, sys
    events = []
    real_fsync, real_rename, real_replace = os.fsync, os.rename, os.replace

    def fsync(fd):
        events.append(["fsync", os.readlink(f"/proc/self/fd/{fd}")])
        return real_fsync(fd)

    def rename(a, b, **kw):
        events.append(["rename", os.path.abspath(a), os.path.abspath(b)])
        return real_rename(a, b, **kw)

    def replace(a, b, **kw):
        events.append(["rename", os.path.abspath(a), os.path.abspath(b)])
        return real_replace(a, b, **kw)

    os.fsync, os.rename, os.replace = fsync, rename, replace
    root = sys.argv[1]
    exec(sys.argv[2])
    print(json.dumps(events))
""")


def record(root: Path, setup: str, code: str) -> list[list[str]]:
    subprocess.run([sys.executable, "-c", setup, str(root)], check=True, env={"PYTHONPATH": SRC})
    done = subprocess.run([sys.executable, "-c", RECORDER, str(root), code], capture_output=True, text=True,
                          env={"PYTHONPATH": SRC})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def index_of(events, kind, path, after=-1):
    for k, event in enumerate(events):
        if k > after and event[0] == kind and event[-1] == str(path):
            return k
    raise AssertionError(f"no {kind} of {path} after event {after}: {events}")


def test_durable_add_field_makes_the_new_files_durable_before_the_header_lists_them(tmp_path):
    setup = ("import sys, numpy as np\nfrom mmap_ninja import RecordsMmap\n"
             "RecordsMmap.from_generator(sys.argv[1] + '/m', [{'y': i} for i in range(5)], 5, "
             "schema={'y': int}).close()")
    code = ("from mmap_ninja import RecordsMmap\nm = RecordsMmap(root + '/m', durable=True)\n"
            "m.add_field('t', 'strings', default='x')\nm.close()")
    events = record(tmp_path, setup, code)
    m = tmp_path / "m"
    publish = index_of(events, "rename", m / "header.json")
    directory = index_of(events, "fsync", m)
    assert directory < publish, events
    assert index_of(events, "fsync", m / "t.data.bin") < publish, events


def test_durable_merge_makes_the_moved_maps_durable_before_publishing(tmp_path):
    setup = ("import sys\nfrom mmap_ninja import StringsMmap\n"
             "for name in ('a', 'b'):\n"
             "    StringsMmap.from_strings(sys.argv[1] + '/src/' + name, ['x', 'yy']).close()")
    code = "from mmap_ninja import merge\nmerge(root + '/out', [root + '/src/a', root + '/src/b']).close()"
    events = record(tmp_path, setup, code)
    out = tmp_path / "out"
    publish = index_of(events, "rename", out / "shards.json")
    for k in range(2):
        shard = out / "shards" / f"shard-{k:06d}"
        assert index_of(events, "fsync", shard / "data.bin") < publish, events
        assert index_of(events, "fsync", shard / "header.json") < publish, events
    assert index_of(events, "fsync", tmp_path / "src") < publish, events  # the sources' entries left it


def test_recover_merge_makes_the_moves_back_durable_before_forgetting_the_journal(tmp_path):
    setup = textwrap.dedent("""
        import json, os, sys
        from mmap_ninja import StringsMmap
        from mmap_ninja.containers.sharded import JOURNAL_FILE
        root = sys.argv[1]
        StringsMmap.from_strings(root + '/src/a', ['x', 'yy']).close()
        os.makedirs(root + '/out/shards')
        os.rename(root + '/src/a', root + '/out/shards/shard-000000')  # a merge that died after its first move
        journal = {'commit': 1, 'copy': False, 'moves': [{'source': root + '/src/a', 'dest': 'shards/shard-000000'}]}
        open(root + '/out/' + JOURNAL_FILE, 'w').write(json.dumps(journal))
    """)
    code = "from mmap_ninja.containers.sharded import recover_merge\nassert recover_merge(root + '/out') == 1"
    events = record(tmp_path, setup, code)
    back = index_of(events, "rename", tmp_path / "src" / "a")
    synced = index_of(events, "fsync", tmp_path / "src", after=back)
    journal_gone = index_of(events, "fsync", tmp_path / "out", after=synced)
    assert back < synced < journal_gone


def test_from_dask_makes_every_shard_durable_before_naming_it(tmp_path):
    setup = "import dask"
    code = ("import dask, dask.bag as db\nfrom mmap_ninja import StringsMmap\n"
            "from mmap_ninja.adapters.dask import from_dask\n"
            "with dask.config.set(scheduler='synchronous'):\n"
            "    from_dask(StringsMmap, root + '/out', db.from_sequence([str(i) for i in range(20)], npartitions=2),"
            " batch_size=4).close()")
    events = record(tmp_path, setup, code)
    shards = tmp_path / "out" / "shards"
    publish = index_of(events, "rename", tmp_path / "out" / "shards.json")
    for k in range(2):
        final = shards / f"part-{k:05d}"
        named = index_of(events, "rename", final)
        staging = Path(events[named][1])
        assert index_of(events, "fsync", staging / "data.bin") < named < publish, events
