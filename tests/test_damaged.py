"""Damaged bytes: flipped bits in index columns never size an allocation, and never give wrong lengths.

The reads run in a subprocess whose data segment is limited (``RLIMIT_DATA``): a batch sized from a damaged
``dims.bin`` or ``shapes.bin`` would need gigabytes; the read must fail with a `MapError` naming the sample.
"""

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mmap_ninja import CorruptMapError, ImagesMmap, RaggedMmap, RecordsMmap
from mmap_ninja.records import Field

Image = pytest.importorskip("PIL.Image")
SRC = str(Path(__file__).resolve().parents[1] / "src")


def png(i: int) -> bytes:
    array = np.full((3 + i % 3, 4, 3), i * 10, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def flip(path: Path, item: int, bit: int) -> None:
    """Flip ``bit`` of int64 item ``item`` of the column file ``path``."""
    data = np.fromfile(path, dtype="<i8")
    data[item] ^= np.int64(1) << np.int64(bit) if bit < 63 else np.int64(-(1 << 63))
    data.tofile(path)


READ_UNDER_LIMIT = textwrap.dedent("""
    import resource, sys
    import numpy as np
    import mmap_ninja
    from mmap_ninja import MapError, open_existing
    import PIL.Image
    kind, path, call = sys.argv[1], sys.argv[2], sys.argv[3]
    m = open_existing(path)
    limit = 200 << 20
    used = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (used + limit, used + limit))
    try:
        result = eval(call)
    except MapError as e:
        print("MapError", type(e).__name__, str(e))
    except MemoryError:
        print("MemoryError")
    else:
        print("returned", repr(result)[:200])
""")


def read_under_limit(path: Path, call: str) -> str:
    done = subprocess.run([sys.executable, "-c", READ_UNDER_LIMIT, "", str(path), call], capture_output=True,
                          text=True, env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"}, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    root = tmp_path_factory.mktemp("damaged")
    RaggedMmap.from_lists(root / "ragged", [np.full((i % 4 + 1, 3), i, np.int32) for i in range(40)]).close()
    RaggedMmap.from_lists(root / "flat", [np.arange(i % 5 + 1, dtype=np.int64) for i in range(40)]).close()
    ImagesMmap.from_generator(root / "images", [png(i) for i in range(16)], batch_size=4).close()
    rows = [{"image": png(i), "tokens": np.arange(i % 4 + 1, dtype=np.int32)} for i in range(16)]
    RecordsMmap.from_generator(root / "records", rows, 4,
                               schema={"image": Field.images(), "tokens": ("ragged", np.int32)}).close()
    return root


CASES = [
    # (map, column file, item, bit, the call, the sample the error must name)
    ("ragged", "dims.bin", 18, 40, "m.get_batch(list(range(8, 16)), pad_value=0)", "sample 9"),
    ("ragged", "dims.bin", 19, 28, "m.get_batch(list(range(8, 16)), pad_value=0)", "sample 9"),
    ("ragged", "dims.bin", 18, 63, "m.get_batch(list(range(8, 16)), pad_value=0)", "sample 9"),
    ("ragged", "dims.bin", 0, 30, "m.get_batch([0])", "sample 0"),
    ("ragged", "dims.bin", 0, 30, "m[0]", "sample 0"),
    ("ragged", "shape_offsets.bin", 5, 50, "m.get_batch(list(range(8)), pad_value=0)", "sample 4"),
    ("ragged", "shape_offsets.bin", 5, 1, "m.get_batch(list(range(8)), pad_value=0)", "sample 4"),
    ("flat", "dims.bin", 3, 16, "m.get_batch(list(range(32)), pad_value=0)", "sample 3"),
    ("flat", "dims.bin", 3, 63, "m.get_batch(list(range(32)), pad_value=0)", "sample 3"),
    ("images", "shapes.bin", 3 * 2, 34, "m.get_batch(list(range(8)), pad_value=0)", "image 2"),
    ("images", "shapes.bin", 3 * 2 + 1, 30, "m.get_batch(list(range(8)), pad_value=0)", "image 2"),
    ("images", "shapes.bin", 3 * 5 + 2, 40, "m.get_batch([5])", "image 5"),
    ("images", "shapes.bin", 3 * 5, 63, "m.get_batch(list(range(8)), pad_value=0)", "image 5"),
    ("records", "image.shapes.bin", 3 * 1, 36, "m.get_batch(list(range(8)), pad_value=0)", "image 1"),
    ("records", "tokens.dims.bin", 2, 33, "m.get_batch(list(range(8)), pad_value=0)", "sample 2"),
]


@pytest.mark.parametrize(("name", "column", "item", "bit", "call", "named"), CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}-{c[3]}" for c in CASES])
def test_a_flipped_bit_in_an_index_is_reported_not_allocated(maps, tmp_path, name, column, item, bit, call, named):
    path = tmp_path / name
    shutil.copytree(maps / name, path)
    flip(path / column, item, bit)
    outcome = read_under_limit(path, call)
    assert outcome.startswith("MapError CorruptMapError"), outcome
    assert named in outcome, outcome


def test_ragged_batch_lengths_agree_with_single_reads(maps, tmp_path):
    path = tmp_path / "ragged"
    shutil.copytree(maps / "flat", path)
    flip(path / "dims.bin", 2, 16)  # sample 2 now claims 65,539 elements; its offsets say 3
    m = RaggedMmap(path)
    assert len(m[1]) == 2
    with pytest.raises(CorruptMapError, match="sample 2"):
        m.get_batch([0, 1, 2], pad_value=0)
    with pytest.raises(CorruptMapError, match="sample 2"):
        m.get_batch([2], pad_value=0)


@pytest.mark.parametrize("deep", [False, True])
def test_verify_of_a_sparse_map_of_2_to_the_30_samples_scans_in_bounded_chunks(tmp_path, deep):
    """A 300-byte header over a sparse file declares 2**30 empty strings: verify must not allocate per sample."""
    from mmap_ninja import StringsMmap

    from conftest import peak_bytes_in_a_fresh_process, write_header

    path = tmp_path / "sparse"
    StringsMmap.from_strings(path, []).close()
    content = json.loads((path / "header.json").read_text())
    n = 1 << 30
    content["columns"]["offsets"]["length"] = n + 1
    content.pop("checksums", None)  # no records: deep checks the structure only (hashing 8 GiB is not the point)
    content["columns"].pop("checksums", None)
    write_header(path, content)
    os.truncate(path / "offsets.bin", (n + 1) * 8)  # all zeros: n empty strings
    peak = peak_bytes_in_a_fresh_process("import mmap_ninja", f"r = mmap_ninja.verify({str(path)!r}, deep={deep})"
                                         f"\nassert r.ok and r.length == {n}, r.problems")
    assert peak < 64 << 20


def test_verify_finds_a_decrease_next_to_the_holes_of_a_sparse_index(tmp_path):
    from mmap_ninja import StringsMmap, verify

    from conftest import write_header

    path = tmp_path / "sparse"
    StringsMmap.from_strings(path, []).close()
    content = json.loads((path / "header.json").read_text())
    n = 4 << 20
    content["columns"]["offsets"]["length"] = n + 1
    content.pop("checksums", None)
    content["columns"].pop("checksums", None)
    write_header(path, content)
    os.truncate(path / "offsets.bin", (n + 1) * 8)
    with open(path / "offsets.bin", "r+b") as f:
        f.seek(1_000_000 * 8)
        f.write(np.array([5], "<i8").tobytes())  # 0 -> 5 -> 0 (a hole follows): decreases at 1,000,000
        f.seek(2_000_000 * 8)
        f.write(np.array([5, 3], "<i8").tobytes())  # decreases at 2,000,000 (in data) and 2,000,001 (into a hole)
    report = verify(path)
    assert report.problems == ["offsets.bin decreases at sample(s) [1000000, 2000000, 2000001]"], report.problems
