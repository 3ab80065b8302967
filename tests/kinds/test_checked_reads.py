"""``verify_reads=True``: every sample read is checked against the checksums of the bytes it comes from; without
it reads are not checked."""

import pickle

import numpy as np
import pytest

from mmap_ninja import RaggedMmap, RecordsMmap, StringsMmap
from mmap_ninja.kinds.numpy import NumpyMmap, from_ndarray
from mmap_ninja.storage.checksums import ChecksumMismatchError


def flip(path, position):
    raw = bytearray(path.read_bytes())
    raw[position] ^= 0x01
    path.write_bytes(bytes(raw))


def test_a_flipped_data_byte_is_caught_on_read_only_with_the_opt_in(tmp_path):
    with StringsMmap.build(tmp_path / "s") as m:  # three commits: samples 0..1, 2..3, 4
        m.extend(["alpha", "beta"])
        m.extend(["gamma", "delta"])
        m.extend(["epsilon"])
    flip(tmp_path / "s" / "data.bin", len("alphabetagamm"))  # the last byte of "gamma", the second commit
    plain = StringsMmap(tmp_path / "s", mode="r")
    assert plain[2] == "gamm`"  # unchecked: the damaged bytes are returned as they are
    checked = StringsMmap(tmp_path / "s", mode="r", verify_reads=True)
    assert checked[0] == "alpha" and checked[4] == "epsilon"  # other commits read fine
    with pytest.raises(ChecksumMismatchError, match=r"data\.bin bytes 9\.\.19 do not match their checksum: "
                                                    r"sample 3 is read from them \(they hold samples 2\.\.3\)"):
        checked[3]
    with pytest.raises(ChecksumMismatchError, match="sample 2"):
        checked[[0, 2]]
    with pytest.raises(ChecksumMismatchError):
        list(checked)
    assert pickle.loads(pickle.dumps(checked))._verify_reads  # the option survives pickling (DataLoader workers)


def test_a_flipped_offset_and_numpy_and_ragged_and_records_maps(tmp_path):
    RaggedMmap.from_lists(tmp_path / "r", [np.arange(6).reshape(2, 3), np.arange(4)])
    flip(tmp_path / "r" / "offsets.bin", 8)
    with pytest.raises(ChecksumMismatchError, match=r"offsets\.bin"):
        RaggedMmap(tmp_path / "r", verify_reads=True)[1]

    from_ndarray(tmp_path / "n", np.arange(20, dtype=np.int32).reshape(10, 2))
    flip(tmp_path / "n" / "data.bin", 8 * 7)
    checked = NumpyMmap(tmp_path / "n", verify_reads=True)
    with pytest.raises(ChecksumMismatchError, match=r"they hold samples 0\.\.9"):
        checked[7]

    RecordsMmap.from_generator(tmp_path / "rec", [{"t": "x" * 10, "v": np.arange(3)} for _ in range(4)], 2)
    flip(tmp_path / "rec" / "v.data.bin", 3 * 8 * 3)  # row 3's values, in the second commit
    checked = RecordsMmap(tmp_path / "rec", verify_reads=True)
    assert checked[0]["t"] == "x" * 10
    with pytest.raises(ChecksumMismatchError, match=r"v\.data\.bin .* \(they hold samples 2\.\.3\)"):
        checked[3]


def test_each_checksum_record_is_hashed_once_per_handle(tmp_path):
    StringsMmap.from_strings(tmp_path / "s", [f"sample {i}" for i in range(100)])
    checked = StringsMmap(tmp_path / "s", verify_reads=True)
    assert checked[5] == "sample 5"
    verified = set(checked._verified)
    assert verified and checked[6] == "sample 6" and checked._verified == verified  # cached: nothing new hashed
    checked.append("more")
    assert checked[100] == "more" and len(checked._verified) > len(verified)  # the new commit is checked too


# ------------------------------------------------------------------ every read path of a single map is checked


def _records_with_a_damaged_text_field(tmp_path):
    rows = [{"text": f"row {i:02d}", "values": np.arange(i + 1), "label": i} for i in range(6)]
    RecordsMmap.from_generator(tmp_path / "rec", rows, 3)  # two commits: rows 0..2, 3..5
    raw = bytearray((tmp_path / "rec" / "text.data.bin").read_bytes())
    raw[6 * 4 + 1] = 0xFF  # row 4's text: not UTF-8 any more
    (tmp_path / "rec" / "text.data.bin").write_bytes(bytes(raw))
    return RecordsMmap(tmp_path / "rec", mode="r", verify_reads=True)


def test_records_batches_and_field_containers_are_checked(tmp_path):
    rec = _records_with_a_damaged_text_field(tmp_path)
    assert rec.get_batch([0, 1], pad_value=0)[0]["label"].tolist() == [0, 1]  # the first commit is sound
    with pytest.raises(ChecksumMismatchError, match=r"text\.data\.bin .*sample 3"):
        rec.get_batch([3, 5], pad_value=0)
    assert rec.get_batch([3, 5], fields=["label", "values"], pad_value=0)[0]["label"].tolist() == [3, 5]
    text = rec["text"]
    assert text[0] == "row 00"
    for read in (lambda: text[4], lambda: text[3:5], lambda: text[[4]], lambda: list(text),
                 lambda: text.values, lambda: text.offsets):
        with pytest.raises(ChecksumMismatchError, match=r"text\.data\.bin"):  # never a bare UnicodeDecodeError
            read()
    assert rec["values"][4].tolist() == [0, 1, 2, 3, 4] and rec["label"].get_batch([4]).tolist() == [4]
    assert rec.field("values").get_batch([4, 5], pad_value=0)[1].tolist() == [5, 6]
    with pytest.raises(ChecksumMismatchError):
        rec.columns([4])


def test_a_records_dataset_batch_is_checked(tmp_path):
    from mmap_ninja.adapters.torch import RecordsDataset

    dataset = RecordsDataset(_records_with_a_damaged_text_field(tmp_path), pad_value=0)
    assert len(dataset.__getitems__([0, 1])["label"]) == 2
    with pytest.raises(ChecksumMismatchError):
        dataset.__getitems__([2, 3])


def test_every_read_path_of_a_numpy_map_is_checked(tmp_path):
    from_ndarray(tmp_path / "n", np.arange(40, dtype=np.int64).reshape(20, 2), overwrite=True)
    NumpyMmap(tmp_path / "n").extend(np.zeros((5, 2), dtype=np.int64))  # a second commit: samples 20..24
    flip(tmp_path / "n" / "data.bin", 16 * 21)
    checked = NumpyMmap(tmp_path / "n", mode="r", verify_reads=True)
    assert checked.get_batch([0, 19]).tolist() == [[0, 1], [38, 39]] and checked.shape == (25, 2)
    mask = np.zeros(25, dtype=bool)
    mask[21] = True
    reads = [lambda: checked.get_batch([3, 21]), lambda: checked.get_batch([21], pad_value=0),
             lambda: checked[20:22], lambda: checked[[21]], lambda: checked[mask], lambda: list(checked),
             lambda: np.asarray(checked), lambda: checked.array, lambda: checked + 1, lambda: checked.sum()]
    for read in reads:
        with pytest.raises(ChecksumMismatchError, match=r"data\.bin bytes 320\.\.400"):
            read()


def test_whole_column_reads_of_strings_and_ragged_maps_are_checked(tmp_path):
    StringsMmap.from_strings(tmp_path / "s", ["alpha", "beta"])
    RaggedMmap.from_lists(tmp_path / "r", [np.arange(3), np.arange(2)])
    flip(tmp_path / "s" / "data.bin", 1)
    flip(tmp_path / "r" / "data.bin", 1)
    for m in (StringsMmap(tmp_path / "s", verify_reads=True), RaggedMmap(tmp_path / "r", verify_reads=True)):
        assert len(m) == 2
        for name in ("values", "offsets"):
            with pytest.raises(ChecksumMismatchError, match=r"data\.bin bytes 0\.\."):
                getattr(m, name)
        with pytest.raises(ChecksumMismatchError, match=r"data\.bin bytes 0\.\."):
            m.to_arrow()
    with pytest.raises(ChecksumMismatchError):
        RaggedMmap(tmp_path / "r", verify_reads=True).get_batch([1, 0], pad_value=0)


# ------------------------------------------------------------------ checked reads and in-place writes


@pytest.mark.parametrize("kind", ["strings", "numpy"])
def test_an_in_place_write_by_another_handle_is_not_damage(tmp_path, kind):
    if kind == "strings":
        StringsMmap.from_strings(tmp_path / "m", ["alpha", "beta", "gamma"])  # one commit: one checksum record
        reader, writer = StringsMmap(tmp_path / "m", mode="r", verify_reads=True), StringsMmap(tmp_path / "m")
        new, first = "BETA", "alpha"
    else:
        from_ndarray(tmp_path / "m", np.arange(6, dtype=np.int64).reshape(3, 2))
        reader, writer = NumpyMmap(tmp_path / "m", mode="r", verify_reads=True), NumpyMmap(tmp_path / "m")
        new, first = np.array([7, 7]), [0, 1]
    writer[1] = new  # rewrites the bytes and the checksum record covering samples 0..2, in place
    assert np.array_equal(reader[0], first)  # an untouched neighbour under the same record reads fine
    assert np.array_equal(reader[1], new) and np.array_equal(reader.get_batch([2, 1])[1], new) if kind == "numpy" \
        else reader[1] == new
    flip(tmp_path / "m" / "data.bin", 0)  # real damage in the same record is still reported
    reader.refresh()  # ... once the handle forgets that it had checked the record
    with pytest.raises(ChecksumMismatchError, match=r"data\.bin bytes 0\.\."):
        reader[0]


def test_refresh_forgets_what_was_checked(tmp_path):
    StringsMmap.from_strings(tmp_path / "s", ["alpha", "beta"])
    checked = StringsMmap(tmp_path / "s", mode="r", verify_reads=True)
    assert checked[0] == "alpha"  # the record is checked once, then trusted by this handle
    flip(tmp_path / "s" / "data.bin", 0)
    assert checked[0] == "`lpha"  # still trusted: no second hashing per read
    assert checked.refresh() == 0
    with pytest.raises(ChecksumMismatchError):
        checked[0]


def test_every_read_path_of_an_images_map_is_checked(tmp_path):
    from mmap_ninja import ImagesMmap

    ImagesMmap.from_generator(tmp_path / "i", [np.full((4, 4, 3), k, np.uint8) for k in range(3)], 3)
    flip(tmp_path / "i" / "data.bin", 10)
    checked = ImagesMmap(tmp_path / "i", verify_reads=True)
    for read in (lambda: checked[0], lambda: checked.get_batch([0, 1]), lambda: checked.get_batch([2], pad_value=0),
                 lambda: list(checked), lambda: checked.raw(0), lambda: checked[0:2]):
        with pytest.raises(ChecksumMismatchError, match=r"data\.bin"):
            read()
