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
