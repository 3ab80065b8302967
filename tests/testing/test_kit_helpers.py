"""The kit's helpers for a user's own tests: `KindSpec.build` makes a map holding a spec's first samples."""

import pytest

from mmap_ninja import open_existing
from mmap_ninja.testing import assert_holds, spec_for, specs


@pytest.mark.parametrize("name", [spec.name for spec in specs()])
def test_a_spec_builds_a_map_of_its_first_samples(tmp_path, name):
    spec = spec_for(name)
    m = spec.build(tmp_path / "m", 70, batch_size=32)
    assert isinstance(m, spec.container)
    assert_holds(spec, m, 70)
    assert_holds(spec, open_existing(tmp_path / "m"), 70, "the map reopened")


def test_a_spec_builds_an_empty_map(tmp_path):
    m = spec_for("strings").build(tmp_path / "empty", 0)
    assert len(m) == 0
