"""Hostile headers and damaged index columns: every failure is a `MapError` naming the file, and `verify` returns
a report (it raises only `NotAMapError`, where there is no map at all)."""

import copy
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmap_ninja import MapError, NotAMapError, RaggedMmap, RecordsMmap, StringsMmap, np_from_ndarray, open_existing
from mmap_ninja import verify as verify_map
from mmap_ninja.kinds.records import Field

from tests.support import write_header

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats(allow_nan=False)
    | st.text(max_size=8) | st.sampled_from(["<i8", "|u1", "<f4", "zstd", "lz4", "C", "F", "PNG", "JPEG", "strings",
                                             "ragged", "numpy", "images"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12)


def _png(i):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((2 + i, 3, 3), i, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    StringsMmap.from_strings(root / "strings", ["a", "bc", "def"]).close()
    StringsMmap.from_strings(root / "utf8", ["é日本" * (i + 1) for i in range(6)]).close()
    StringsMmap.from_strings(root / "zstd", ["a" * 30, "bc" * 20, "def"], codec="zstd").close()
    RaggedMmap.from_lists(root / "ragged", [np.ones((2, 3), np.float32), np.zeros((1, 3), np.float32)]).close()
    np_from_ndarray(root / "numpy", np.arange(12, dtype=np.int32).reshape(4, 3)).close()
    rows = [{"t": f"s{i}", "y": i, "tok": np.arange(i + 1, dtype=np.int16), "img": _png(i)} for i in range(3)]
    RecordsMmap.from_generator(root / "records", rows, 2, schema={"t": "strings", "y": int, "tok": ("ragged", np.int16),
                                                                    "img": Field.images()}).close()
    from mmap_ninja import ImagesMmap

    ImagesMmap.from_generator(root / "images", [_png(i) for i in range(3)], batch_size=2).close()
    return root


def paths_in(value, prefix=()):
    """Every path (a tuple of keys and indices) inside a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths_in(child, (*prefix, key))
    elif isinstance(value, list):
        for k, child in enumerate(value):
            yield from paths_in(child, (*prefix, k))


def replace_at(value, path, new):
    if not path:
        return new
    value[path[0]] = replace_at(value[path[0]], path[1:], new)
    return value


def exercise(path: Path) -> None:
    """Open and read the map every way a user would; only MapErrors may come out."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            m = open_existing(path, mode="r")
            try:
                n = len(m)
                for i in range(min(n, 3)):
                    m[i]
                if n:
                    m[0:n][:3]
                    list(m)
                    strings = isinstance(m, StringsMmap) or getattr(m, "kind", "") == "strings"
                    if hasattr(m, "get_batch") and not strings:
                        try:
                            m.get_batch([0, n - 1], pad_value=0)
                        except ValueError as e:
                            if isinstance(e, MapError) or "pad_value" not in str(e):
                                raise
            finally:
                m.close()
        except MapError:
            pass
    report = verify_map(path, deep=True)
    assert isinstance(report.problems, list)


KINDS = ["strings", "utf8", "zstd", "ragged", "numpy", "records", "images"]


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_a_hostile_header_raises_only_map_errors(originals, tmp_path_factory, data):
    kind = data.draw(st.sampled_from(KINDS))
    path = tmp_path_factory.mktemp("case") / kind
    shutil.copytree(originals / kind, path)
    content = json.loads((path / "header.json").read_text())
    content.pop("checksum", None)
    hostile = copy.deepcopy(content)
    for _ in range(data.draw(st.integers(1, 3))):
        candidates = [p for p in paths_in(hostile) if p and p[0] not in ("format", "version", "requires")]
        where = data.draw(st.sampled_from(candidates))
        hostile = replace_at(hostile, where, data.draw(JSON_VALUES))
    write_header(path, hostile)
    exercise(path)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(12))
def test_damaged_index_columns_raise_only_map_errors(originals, tmp_path, kind, seed):
    path = tmp_path / kind
    shutil.copytree(originals / kind, path)
    rng = np.random.default_rng(seed)
    for column in sorted(path.glob("*.bin")):
        if column.name.endswith(("offsets.bin", "dims.bin", "shapes.bin", "formats.bin", "dictionary.bin")):
            data = bytearray(column.read_bytes())
            if data:
                position = int(rng.integers(len(data)))
                data[position] ^= 1 << int(rng.integers(8))
                column.write_bytes(bytes(data))
    exercise(path)


def test_verify_raises_not_a_map_only_where_there_is_none(tmp_path):
    with pytest.raises(NotAMapError):
        verify_map(tmp_path / "nothing")


@pytest.mark.parametrize(("kind", "key", "value", "message"), [
    ("ragged", "dtype", "not a dtype", "'attrs.dtype' must be a NumPy dtype"),
    ("ragged", "ndims", [2, "x"], "'attrs.ndims' must be a list"),
    ("numpy", "sample_shape", [3, -1], "'attrs.sample_shape' must be a list of non-negative integers"),
    ("numpy", "order", "Z", "'attrs.order' must be"),
    ("zstd", "codec", {"name": "zstd", "level": "high"}, "'attrs.codec.level' must be an integer"),
    ("zstd", "codec", {"name": "brotli"}, "'attrs.codec.name' must be one of"),
    ("records", "fields", {"t": {"kind": "strings"}}, "'attrs.fields.t' must be an object with a 'kind' and 'attrs'"),
])
def test_attrs_are_type_checked_naming_the_attribute_and_the_file(originals, tmp_path, kind, key, value, message):
    path = tmp_path / kind
    shutil.copytree(originals / kind, path)
    content = json.loads((path / "header.json").read_text())
    content["attrs"][key] = value
    write_header(path, content)
    with pytest.raises(MapError, match=r"header\.json") as caught:
        open_existing(path)
    assert message in str(caught.value)
    report = verify_map(path)
    assert not report.ok and message in report.problems[0]


@pytest.fixture(scope="module")
def sharded_original(tmp_path_factory):
    from mmap_ninja import merge

    root = tmp_path_factory.mktemp("hostile-sharded")
    StringsMmap.from_strings(root / "a", ["a", "bc"]).close()
    StringsMmap.from_strings(root / "b", ["def"]).close()
    merge(root / "sharded", [root / "a", root / "b"]).close()
    return root / "sharded"


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_a_hostile_shards_json_raises_only_map_errors(sharded_original, tmp_path_factory, data):
    path = tmp_path_factory.mktemp("case") / "sharded"
    shutil.copytree(sharded_original, path)
    content = json.loads((path / "shards.json").read_text())
    content.pop("checksum", None)
    for _ in range(data.draw(st.integers(1, 3))):
        candidates = [p for p in paths_in(content) if p and p[0] not in ("format", "version", "requires")]
        content = replace_at(content, data.draw(st.sampled_from(candidates)), data.draw(JSON_VALUES))
    from mmap_ninja.storage.format import header_checksum

    content["checksum"] = header_checksum(content)
    (path / "shards.json").write_text(json.dumps(content))
    exercise(path)
