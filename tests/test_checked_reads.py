"""``verify_reads=True``: every sample read is checked against the checksums of the bytes it comes from; without
it reads are not checked."""

import pickle

import numpy as np
import pytest

from mmap_ninja import RaggedMmap, RecordsMmap, StringsMmap
from mmap_ninja.checksums import ChecksumMismatchError
from mmap_ninja.numpy import NumpyMmap, from_ndarray


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
