"""mapped_on_first_use: computed once, then a plain attribute stored without touching the instance's __dict__
(which on CPython 3.11+ would slow every later attribute read of a view, hence every m[i])."""

from mmap_ninja.kinds._lazy import mapped_on_first_use
from mmap_ninja.kinds.ragged_layout import RaggedView


class Probe:
    computed = 0

    @property  # type: ignore[misc]
    def __dict__(self):  # functools.cached_property reads this; setattr does not
        raise AssertionError("the instance's __dict__ was read")

    @mapped_on_first_use
    def column(self) -> list:
        Probe.computed += 1
        return [1, 2, 3]


def test_computed_once_then_an_attribute_set_without_reading_dict():
    probe = Probe()
    assert probe.column == [1, 2, 3]
    assert probe.column is probe.column
    assert Probe.computed == 1
    assert isinstance(Probe.column, mapped_on_first_use)


def test_ragged_view_maps_its_shape_columns_this_way():
    for name in ("shape_offsets", "dims", "shape_starts", "shape_stops", "dim_items"):
        assert isinstance(RaggedView.__dict__[name], mapped_on_first_use), name
