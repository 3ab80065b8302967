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
from mmap_ninja.kinds.records import Field

Image = pytest.importorskip("PIL.Image")
SRC = str(Path(__file__).resolve().parents[2] / "src")


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
    RaggedMmap.from_lists(root / "empties", [np.zeros((i % 3, 4), np.int16) for i in range(12)]).close()
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
    ("empties", "dims.bin", 7, 40, "m.get_batch(list(range(6)), pad_value=0)", "sample 3"),
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

    from tests.support import peak_bytes_in_a_fresh_process, write_header

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

    from tests.support import write_header

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


def test_new_zstd_maps_write_frame_checksums_and_old_ones_keep_their_frames(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    from mmap_ninja import StringsMmap

    texts = [f"text number {i} " * 20 for i in range(50)]
    m = StringsMmap.from_strings(tmp_path / "new", texts, codec="zstd")
    m.close()
    header = json.loads((tmp_path / "new" / "header.json").read_text())
    assert header["attrs"]["codec"]["checksum"] is True
    assert "codec.zstd" in header["requires"] and not any("checksum" in r for r in header["requires"])
    data = (tmp_path / "new" / "data.bin").read_bytes()
    offsets = np.fromfile(tmp_path / "new" / "offsets.bin", "<i8")
    assert zstandard.get_frame_parameters(data[offsets[3]:offsets[4]]).has_checksum
    # A map written before frame checksums (no "checksum" in its codec) keeps writing frames without them.
    from mmap_ninja.kinds.codecs import Zstd

    StringsMmap.from_strings(tmp_path / "old", texts[:10], codec=Zstd(checksum=False)).close()
    assert "checksum" not in json.loads((tmp_path / "old" / "header.json").read_text())["attrs"]["codec"]
    old = StringsMmap(tmp_path / "old")
    old.extend(texts[10:])
    old.close()
    data = (tmp_path / "old" / "data.bin").read_bytes()
    offsets = np.fromfile(tmp_path / "old" / "offsets.bin", "<i8")
    assert not zstandard.get_frame_parameters(data[offsets[40]:offsets[41]]).has_checksum
    assert list(StringsMmap(tmp_path / "old")) == texts


def test_flipped_bits_in_zstd_frames_never_decode_to_wrong_strings(tmp_path):
    pytest.importorskip("zstandard")
    from mmap_ninja import MapError, StringsMmap

    texts = [f"sample {i}: " + "lorem ipsum dolor " * (i % 7 + 3) for i in range(200)]
    StringsMmap.from_strings(tmp_path / "m", texts, codec="zstd").close()
    data_path = tmp_path / "m" / "data.bin"
    pristine = data_path.read_bytes()
    offsets = np.fromfile(tmp_path / "m" / "offsets.bin", "<i8")
    rng = np.random.default_rng(0)
    wrong = 0
    for _ in range(200):
        sample = int(rng.integers(len(texts)))
        byte = int(rng.integers(offsets[sample], offsets[sample + 1]))
        damaged = bytearray(pristine)
        damaged[byte] ^= 1 << int(rng.integers(8))
        data_path.write_bytes(bytes(damaged))
        m = StringsMmap(tmp_path / "m")
        try:
            wrong += m[sample] != texts[sample]
        except MapError as e:
            assert f"sample {sample}" in str(e)
        m.close()
    assert wrong == 0


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_a_crafted_frame_size_is_refused_before_allocating(tmp_path, codec):
    pytest.importorskip("zstandard" if codec == "zstd" else "lz4")
    from mmap_ninja import StringsMmap

    StringsMmap.from_strings(tmp_path / "m", ["a" * 70_000, "b" * 50], codec=codec).close()
    data_path = tmp_path / "m" / "data.bin"
    data = bytearray(data_path.read_bytes())
    if codec == "lz4":
        data[0:4] = (1_500_000_000).to_bytes(4, "little")
    else:  # a single-segment frame with an 8-byte content size field: frame header descriptor 0xE0 (FCS 8, single)
        offsets = np.fromfile(tmp_path / "m" / "offsets.bin", "<i8")
        descriptor = data[4]
        field_size = {0: 1, 1: 2, 2: 4, 3: 8}[descriptor >> 6]
        assert field_size == 4  # 70,000 bytes
        position = 5 + (0 if descriptor & 0x20 else 1) + {0: 0, 1: 1, 2: 2, 3: 4}[descriptor & 3]
        data[position:position + field_size] = (4_000_000_000).to_bytes(field_size, "little")
        assert offsets[0] == 0
    data_path.write_bytes(bytes(data))
    outcome = read_under_limit(tmp_path / "m", "m[0]")
    assert outcome.startswith("MapError CorruptMapError") and "sample 0" in outcome, outcome
