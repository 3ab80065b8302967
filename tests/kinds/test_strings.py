import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmap_ninja import StringsMmap, StringsMmmap
from mmap_ninja.kinds.strings import StringsMmmap as seed_spelling

from tests.support import snapshot

# Any text UTF-8 can hold: every code point but lone surrogates, NUL included.
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
settings_fast = settings(max_examples=60, deadline=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@given(strings=st.lists(texts, max_size=30), extra=st.lists(texts, max_size=10), batch=st.integers(1, 7))
@settings_fast
def test_round_trip(tmp_path_factory, strings, extra, batch):
    path = tmp_path_factory.mktemp("s") / "m"
    m = StringsMmap.from_generator(path, iter(strings), batch_size=batch)
    m.extend(extra)
    m.close()
    reopened = StringsMmap(path)
    assert list(reopened) == strings + extra
    assert reopened[:] == strings + extra
    assert reopened.offsets[0] == 0 and reopened.offsets.dtype == np.dtype("<i8")
    assert bytes(reopened.values) == "".join(strings + extra).encode()


def test_seed_spellings_are_aliases():
    assert StringsMmmap is StringsMmap and seed_spelling is StringsMmap


def test_empty_list_and_all_empty_strings(tmp_path):
    assert len(StringsMmap.from_strings(tmp_path / "a", [])) == 0
    m = StringsMmap.from_strings(tmp_path / "b", ["", "", ""])
    assert m[:] == ["", "", ""] and m[1] == ""
    assert list(m.offsets) == [0, 0, 0, 0]


def test_non_ascii_and_nul(tmp_path):
    strings = ["\x00", "naïve café", "数据集", "emoji 🤖 text", "a\x00b"]
    m = StringsMmap.from_strings(tmp_path / "m", strings)
    assert [m[i] for i in range(5)] == strings


@pytest.mark.parametrize("bad, error, message", [
    ([b"bytes"], TypeError, "item 1 is bytes, expected str"),
    ([None], TypeError, "item 1 is NoneType"),
    ([3], TypeError, "item 1 is int"),
    (["fine", "lone \ud800 surrogate"], ValueError, "item 2 cannot be stored as UTF-8"),
    ("abc", TypeError, "use append"),
    ([bytearray(b"raw")], TypeError, r"item 1 is bytearray, expected str: decode it first .*extend_utf8"),
    (bytearray(b"raw"), TypeError, r"extend\(\) takes a sequence of str, not a single bytearray \(3 bytes\): decode"),
    (memoryview(b"raw"), TypeError, r"extend\(\) takes a sequence of str, not a single memoryview \(3 bytes\)"),
])
def test_bad_strings_leave_the_map_unchanged(tmp_path, bad, error, message):
    m = StringsMmap.from_strings(tmp_path / "m", ["keep"])
    before = snapshot(tmp_path / "m")
    with pytest.raises(error, match=message):
        m.extend(bad)
    assert snapshot(tmp_path / "m") == before and m[:] == ["keep"]


@pytest.mark.parametrize("given", [b"raw", bytearray(b"raw"), memoryview(b"raw")], ids=["bytes", "bytearray",
                                                                                       "memoryview"])
def test_from_strings_refuses_bytes_like_input_before_writing_anything(tmp_path, given):
    with pytest.raises(TypeError, match=rf"from_strings\(\) takes a sequence of str, not a single "
                                        rf"{type(given).__name__} \(3 bytes\): decode it first \(value.decode"):
        StringsMmap.from_strings(tmp_path / "m", given)
    with pytest.raises(TypeError, match=rf"item 0 is {type(given).__name__}, expected str: decode it first"):
        StringsMmap.from_strings(tmp_path / "items", [given])
    assert not (tmp_path / "m").exists()


def test_in_place_assignment_needs_same_byte_size(tmp_path):
    m = StringsMmap.from_strings(tmp_path / "m", ["abc", "défg", "xyz"])
    m[1] = "DÉFG"
    m[[0, 2]] = ["ABC", "XYZ"]
    with pytest.raises(ValueError, match="item 1 holds 5 UTF-8 bytes and the new value 4"):
        m[1] = "defg"
    with pytest.raises(ValueError, match="cannot assign 1 values to 2"):
        m[0:2] = ["abc"]
    before = snapshot(tmp_path / "m")
    with pytest.raises(ValueError):  # the second value is bad: the first must not be written either
        m[[0, 2]] = ["QQQ", "toolong"]
    assert snapshot(tmp_path / "m") == before
    m.close()
    assert StringsMmap(tmp_path / "m")[:] == ["ABC", "DÉFG", "XYZ"]


def test_extend_utf8_appends_encoded_strings(tmp_path):
    m = StringsMmap.from_strings(tmp_path / "m", ["a"])
    m.extend_utf8("héllo wörld".encode(), [6, 0, 7])
    assert m[:] == ["a", "héllo", "", " wörld"]
    before = snapshot(tmp_path / "m")
    with pytest.raises(ValueError, match="item 4 is not valid UTF-8"):
        m.extend_utf8("é".encode(), [1, 1])  # splits a character
    with pytest.raises(ValueError, match="add up to 1, but 2 were given"):
        m.extend_utf8(b"ab", [1])
    assert snapshot(tmp_path / "m") == before
