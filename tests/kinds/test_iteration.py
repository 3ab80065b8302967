"""The per-item pass ``for x in m`` (issue 21): strings decoded a chunk at a time where they are short,
N-d ragged samples shaped a chunk at a time, and the same samples, errors and snapshot as ``m[i]`` across chunk
borders, on damaged bytes and with ``verify_reads=True``."""

import numpy as np
import pytest

from mmap_ninja import CorruptMapError, RaggedMmap, StringsMmap
from mmap_ninja.kinds import layouts
from mmap_ninja.storage.checksums import ChecksumMismatchError

CHUNK = 7  # samples per chunk of offsets in these tests: every map below spans several chunks


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(layouts, "_ITER_CHUNK", CHUNK)


def _texts():
    """Chunks of every sort: short ASCII (one span), non-ASCII, long ASCII, empty strings, a chunk of only empty
    strings, and a last chunk cut short."""
    short = [f"w{i}" for i in range(CHUNK)]
    accented = ["é", "naïve", "x", "ok", "日本", "", "z"]
    long = ["a" * 1000, "b", "c" * 500, "", "d" * 150, "e", "f"]  # 236 bytes a string: decoded one by one
    empty = [""] * CHUNK
    tail = ["t1", "", "t3"]
    return [*short, *accented, *short[::-1], *long, *empty, *short, *tail]


def _reads_until_error(read):
    """What ``read(i)`` gives for i = 0, 1, ... up to its first error: (samples, error)."""
    samples = []
    i = 0
    while True:
        try:
            samples.append(read(i))
        except (IndexError, StopIteration):
            return samples, None
        except Exception as e:  # the error itself is compared
            return samples, e
        i += 1


def _iterated_until_error(m):
    it = iter(m)
    return _reads_until_error(lambda _: next(it))


def test_strings_are_the_same_as_indexing_across_chunks_of_every_sort(tmp_path):
    texts = _texts()
    m = StringsMmap.from_strings(tmp_path / "s", texts)
    assert list(m) == texts == [m[i] for i in range(len(m))]
    assert all(type(t) is str for t in m)
    view = m._view
    chunks = [chunk if isinstance(chunk, list) else list(chunk) for chunk in view._decoded_chunks(0)]
    assert [text for chunk in chunks for text in chunk] == texts
    kinds = [isinstance(chunk, list) for chunk in view._decoded_chunks(0)]
    assert kinds == [True, True, True, False, True, True, True]  # short chunks (and empty ones) as one span
    assert list(view.iterate(CHUNK + 3)) == texts[CHUNK + 3:]


def test_strings_appended_during_a_pass_are_not_in_it(tmp_path):
    texts = _texts()
    m = StringsMmap.from_strings(tmp_path / "s", texts)
    seen = []
    for i, text in enumerate(m):
        if i == 3:
            m.extend(["later"] * 20)
        seen.append(text)
    assert seen == texts  # the snapshot the pass started with
    assert list(m) == [*texts, *["later"] * 20]


def test_a_damaged_byte_in_a_chunk_of_short_strings_names_the_sample_as_indexing_does(tmp_path):
    texts = _texts()
    StringsMmap.from_strings(tmp_path / "s", texts).close()
    data = tmp_path / "s" / "data.bin"
    raw = bytearray(data.read_bytes())
    damaged = CHUNK * 2 + 4  # a sample of the third chunk, ASCII before
    start = sum(len(t.encode()) for t in texts[:damaged])
    raw[start] = 0xFF  # no longer UTF-8: the chunk is decoded string by string
    data.write_bytes(bytes(raw))
    m = StringsMmap(tmp_path / "s", mode="r")
    iterated, error = _iterated_until_error(m)
    indexed, index_error = _reads_until_error(lambda i: m[i])
    assert iterated == indexed == texts[:damaged]
    assert type(error) is type(index_error) is CorruptMapError and str(error) == str(index_error)
    assert f"sample {damaged} is not valid UTF-8" in str(error)


@pytest.mark.parametrize("replacement", [ord("Z"), 0xFF], ids=["still-ascii", "not-utf8"])
def test_with_verify_reads_a_pass_fails_where_indexing_fails(tmp_path, replacement):
    texts = _texts()
    with StringsMmap.build(tmp_path / "s") as m:
        for first in range(0, len(texts), 10):  # several commits: several checksum records
            m.extend(texts[first:first + 10])
    data = tmp_path / "s" / "data.bin"
    raw = bytearray(data.read_bytes())
    damaged = 37  # in the fourth commit (samples 30..39), and the sixth chunk (of short ASCII strings)
    start = sum(len(t.encode()) for t in texts[:damaged])
    raw[start] = replacement
    data.write_bytes(bytes(raw))
    iterated, error = _iterated_until_error(StringsMmap(tmp_path / "s", mode="r", verify_reads=True))
    checked = StringsMmap(tmp_path / "s", mode="r", verify_reads=True)
    indexed, index_error = _reads_until_error(lambda i: checked[i])
    assert iterated == indexed and len(indexed) <= damaged
    assert type(error) is type(index_error) is ChecksumMismatchError and str(error) == str(index_error)


def _arrays(ndim):
    rng = np.random.default_rng(ndim)
    if ndim == 0:
        return [np.uint8(i) for i in range(40)]
    shapes = [tuple(int(d) for d in rng.integers(0, 4, size=ndim)) for _ in range(40)]
    return [rng.integers(0, 255, size=shape, dtype=np.uint8) for shape in shapes]


@pytest.mark.parametrize("ndim", [0, 2, 3])
def test_n_d_samples_are_read_only_views_equal_to_indexing(tmp_path, ndim):
    arrays = _arrays(ndim)
    m = RaggedMmap.from_lists(tmp_path / "r", arrays)
    iterated = list(m)
    assert len(iterated) == len(arrays)
    for i, (x, expected) in enumerate(zip(iterated, arrays)):
        assert x.shape == np.shape(expected) == m[i].shape and x.dtype == m.dtype
        np.testing.assert_array_equal(x, expected)
        assert not x.flags.writeable and (x.size == 0 or np.shares_memory(x, m.values))
    assert [x.shape for x in m._view.iterate(CHUNK + 2)] == [np.shape(a) for a in arrays[CHUNK + 2:]]
    offsets = m.offsets[CHUNK:2 * CHUNK + 1].tolist()  # a chunk's shapes: one vectorized lookup, checked
    assert m._view._chunk_shapes(CHUNK, offsets) == [list(np.shape(a)) for a in arrays[CHUNK:2 * CHUNK]]


def test_samples_of_several_numbers_of_dimensions_are_iterated(tmp_path):
    arrays = [np.arange(3), np.zeros((2, 2)), np.arange(4), np.float64(1)] * 5
    m = RaggedMmap.from_lists(tmp_path / "mixed", arrays)
    assert [x.shape for x in m] == [np.shape(a) for a in arrays]


def test_a_damaged_shape_in_a_chunk_names_the_sample_where_indexing_names_it(tmp_path):
    arrays = _arrays(3)
    m = RaggedMmap.from_lists(tmp_path / "r", arrays)
    damaged = next(i for i in range(CHUNK * 2, len(arrays)) if arrays[i].size)  # in the third chunk
    first = int(m._view.shape_offsets[damaged])
    m.close()
    dims = np.fromfile(tmp_path / "r" / "dims.bin", dtype="<i8")
    dims[first] += 1  # the shape no longer holds the sample's elements
    dims.tofile(tmp_path / "r" / "dims.bin")
    m = RaggedMmap(tmp_path / "r", mode="r")
    iterated, error = _iterated_until_error(m)
    indexed, index_error = _reads_until_error(lambda i: m[i])
    assert len(iterated) == len(indexed) == damaged
    assert all(np.array_equal(a, b) and a.shape == b.shape for a, b in zip(iterated, indexed))
    assert type(error) is type(index_error) is CorruptMapError and str(error) == str(index_error)
    assert f"sample {damaged} has the shape" in str(error)


def _token_sequences(count):
    """``count`` int32 sequences of 1 to 5 tokens, every third one empty, as a token map holds them."""
    rng = np.random.default_rng(count)
    lengths = rng.integers(1, 6, size=count)
    lengths[::3] = 0
    return [rng.integers(0, 50_000, size=int(n), dtype=np.int32) for n in lengths]


@pytest.mark.parametrize("count", [1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 1])
def test_token_sequences_are_read_only_views_equal_to_indexing_across_chunks(tmp_path, count):
    sequences = _token_sequences(count)
    m = RaggedMmap.from_lists(tmp_path / "tokens", sequences)
    assert m.ndims == [1] and m._view.flat  # the 1-D pass, without shapes
    iterated = list(m)
    assert len(iterated) == count
    for i, (x, expected) in enumerate(zip(iterated, sequences)):
        assert type(x) is np.ndarray and x.dtype == np.int32 and x.shape == expected.shape == m[i].shape
        np.testing.assert_array_equal(x, expected)
        assert not x.flags.writeable and x.flags.c_contiguous
        assert x.size == 0 or np.shares_memory(x, m.values)  # a view of the map, as m[i] is
    for start in sorted({0, 1, CHUNK - 1, CHUNK, CHUNK + 1, count - 1, count}):
        tail = list(m._view.iterate(start))
        assert [x.tolist() for x in tail] == [s.tolist() for s in sequences[start:]]


def test_a_token_map_of_only_empty_sequences_is_iterated(tmp_path):
    m = RaggedMmap.from_lists(tmp_path / "tokens", [np.empty(0, np.int64)] * (2 * CHUNK + 3))
    assert [(x.shape, x.dtype) for x in m] == [((0,), np.dtype(np.int64))] * (2 * CHUNK + 3)


@pytest.mark.parametrize("kind", ["strings", "ragged", "ragged with a dtype"])
def test_a_pass_over_an_empty_map_gives_nothing(tmp_path, kind):
    if kind == "strings":
        m = StringsMmap.from_strings(tmp_path / "m", [])
    else:
        m = RaggedMmap.from_lists(tmp_path / "m", [], dtype=np.int32 if "dtype" in kind else None)
    assert list(m) == [] and list(m._view.iterate(0)) == []
    reopened = type(m)(tmp_path / "m", mode="r")
    assert list(reopened) == []


def test_offsets_that_decrease_in_a_token_map_stop_the_pass_at_their_chunk(tmp_path):
    sequences = _token_sequences(3 * CHUNK)
    RaggedMmap.from_lists(tmp_path / "tokens", sequences).close()
    offsets = np.fromfile(tmp_path / "tokens" / "offsets.bin", dtype="<i8")
    damaged = 2 * CHUNK + 3  # in the third chunk
    offsets[damaged + 1] = offsets[damaged] - 1
    offsets.tofile(tmp_path / "tokens" / "offsets.bin")
    m = RaggedMmap(tmp_path / "tokens", mode="r")
    iterated, error = _iterated_until_error(m)
    assert [x.tolist() for x in iterated] == [s.tolist() for s in sequences[:2 * CHUNK]]
    assert type(error) is CorruptMapError and f"sample(s) {2 * CHUNK}..{3 * CHUNK - 1} decrease" in str(error)
    with pytest.raises(CorruptMapError, match=f"sample\\(s\\) {damaged} decrease"):
        m[damaged]


def test_with_verify_reads_a_token_pass_fails_where_indexing_fails(tmp_path):
    sequences = [np.arange(i % 4 + 1, dtype=np.int32) + i for i in range(40)]
    with RaggedMmap.build(tmp_path / "tokens") as m:
        for first in range(0, len(sequences), 10):  # several commits: several checksum records
            m.extend(sequences[first:first + 10])
    damaged = 24  # in the third commit and the fourth chunk
    data = tmp_path / "tokens" / "data.bin"
    raw = bytearray(data.read_bytes())
    raw[sum(s.nbytes for s in sequences[:damaged])] ^= 0x01
    data.write_bytes(bytes(raw))
    iterated, error = _iterated_until_error(RaggedMmap(tmp_path / "tokens", mode="r", verify_reads=True))
    checked = RaggedMmap(tmp_path / "tokens", mode="r", verify_reads=True)
    indexed, index_error = _reads_until_error(lambda i: checked[i])
    assert len(iterated) == len(indexed) <= damaged
    assert all(np.array_equal(a, b) for a, b in zip(iterated, indexed))
    assert type(error) is type(index_error) is ChecksumMismatchError and str(error) == str(index_error)


@pytest.mark.parametrize("where", [0, CHUNK // 2, CHUNK - 1], ids=["first", "middle", "last"])
def test_a_short_chunk_with_one_non_ascii_string_is_decoded_as_one_span(tmp_path, where):
    texts = [f"s{i}" for i in range(3 * CHUNK)]
    texts[CHUNK + where] = "añ"  # the second chunk: short, all ASCII but for one character
    m = StringsMmap.from_strings(tmp_path / "s", texts)
    assert list(m) == texts
    kinds = [isinstance(chunk, list) for chunk in m._view._decoded_chunks(0)]
    assert kinds == [True, True, True]


def test_short_strings_of_one_to_four_byte_characters_are_the_same_as_indexing(tmp_path):
    pieces = ["a", "é", "ÿ", "Ā", "日本", "€", "😀", "𝄞x", "", "z😀é"]
    texts = [pieces[i % len(pieces)] + pieces[(3 * i) % len(pieces)] for i in range(4 * CHUNK + 2)]
    texts[CHUNK:CHUNK + 3] = ["", "", ""]
    m = StringsMmap.from_strings(tmp_path / "s", texts)
    iterated = list(m)
    assert iterated == texts == [m[i] for i in range(len(m))]
    assert all(type(t) is str for t in iterated)
    assert all(isinstance(chunk, list) for chunk in m._view._decoded_chunks(0))
    for start in (1, CHUNK, CHUNK + 2, len(texts) - 1):
        assert list(m._view.iterate(start)) == texts[start:]


def test_an_offset_inside_a_character_names_the_sample_as_indexing_does(tmp_path):
    texts = [f"s{i}é" for i in range(3 * CHUNK)]  # every string ends in a 2-byte character
    StringsMmap.from_strings(tmp_path / "s", texts).close()
    offsets = np.fromfile(tmp_path / "s" / "offsets.bin", dtype="<i8")
    damaged = CHUNK + 2  # the second chunk: its bytes as a whole are still valid UTF-8
    offsets[damaged + 1] -= 1  # the end of sample `damaged`, the start of the next: inside its "é"
    offsets.tofile(tmp_path / "s" / "offsets.bin")
    m = StringsMmap(tmp_path / "s", mode="r")
    iterated, error = _iterated_until_error(m)
    indexed, index_error = _reads_until_error(lambda i: m[i])
    assert iterated == indexed == texts[:damaged]
    assert type(error) is type(index_error) is CorruptMapError and str(error) == str(index_error)
    assert f"sample {damaged} is not valid UTF-8" in str(error)


@pytest.mark.parametrize("byte", [0x80, 0xC3, 0xFF], ids=["lone-continuation", "cut-lead", "never-utf8"])
def test_a_damaged_last_byte_of_a_short_ascii_chunk_names_its_sample(tmp_path, byte):
    texts = [f"s{i}" for i in range(3 * CHUNK)]
    StringsMmap.from_strings(tmp_path / "s", texts).close()
    data = tmp_path / "s" / "data.bin"
    raw = bytearray(data.read_bytes())
    damaged = 2 * CHUNK - 1  # the last string of the second chunk
    raw[sum(len(t) for t in texts[:damaged + 1]) - 1] = byte
    data.write_bytes(bytes(raw))
    m = StringsMmap(tmp_path / "s", mode="r")
    iterated, error = _iterated_until_error(m)
    indexed, index_error = _reads_until_error(lambda i: m[i])
    assert iterated == indexed == texts[:damaged]
    assert type(error) is type(index_error) is CorruptMapError and str(error) == str(index_error)
    assert f"sample {damaged} is not valid UTF-8" in str(error)
