"""Every builder takes ``commit="slots"`` (README, "Slot maps"; `MapBase.build`): the convenience builders too."""

import numpy as np
import pytest

from mmap_ninja import RaggedMmap, RecordsMmap, StringsMmap, np_from_ndarray
from mmap_ninja.storage.format import read_header

BUILDERS = {
    "RaggedMmap.from_lists": lambda path, **o: RaggedMmap.from_lists(path, [np.arange(3), np.arange(1)], **o),
    "StringsMmap.from_strings": lambda path, **o: StringsMmap.from_strings(path, ["a", "bc"], **o),
    "np_from_ndarray": lambda path, **o: np_from_ndarray(path, np.arange(6).reshape(2, 3), **o),
    "RecordsMmap.from_dict": lambda path, **o: RecordsMmap.from_dict(path, {"label": np.arange(2)}, **o),
}


@pytest.mark.parametrize("builder", sorted(BUILDERS))
def test_the_builder_makes_a_slot_map_when_asked(tmp_path, builder):
    with BUILDERS[builder](tmp_path / "slots", commit="slots") as m:
        assert len(m) == 2
    assert "commit.slots" in read_header(tmp_path / "slots").requires
    with BUILDERS[builder](tmp_path / "renamed", commit="rename") as m:
        assert len(m) == 2
    assert "commit.slots" not in read_header(tmp_path / "renamed").requires


@pytest.mark.parametrize("builder", sorted(BUILDERS))
@pytest.mark.parametrize("mode", ["r", "rb"])
def test_mode_r_builds_the_map_and_returns_a_read_only_handle(tmp_path, builder, mode):
    # `mode` is the returned handle's, as in 0.9.0 (and `MapClass(path, mode="r")`): the build itself writes.
    from mmap_ninja.errors import ReadOnlyMapError

    for overwrite in (False, True):
        with BUILDERS[builder](tmp_path / "m", mode=mode, overwrite=overwrite) as m:
            assert m.mode == "r" and len(m) == 2
            with pytest.raises(ReadOnlyMapError, match="mode='r'"):
                m.append(m[0])
        assert not read_header(tmp_path / "m").building
    with BUILDERS[builder](tmp_path / "m", mode="r+", overwrite=True) as m:
        m.append(m[0])
        assert m.mode == "r+" and len(m) == 3
