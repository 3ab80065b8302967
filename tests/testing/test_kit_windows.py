"""The conformance kit in the Windows-semantics mode (mmap_ninja.testing.windows_semantics), short form: two kinds,
every test, with Windows' refusals of renaming, deleting and cutting held files, in this process and in the kit's
child processes (crashes, concurrent writers). The whole kit runs in the mode with

    pytest tests/testing/test_kit.py tests/testing/test_kit_containers.py tests/adapters/test_remote.py
    tests/adapters/test_torch.py --windows-semantics

In the mode new maps are slot maps (``commit.slots``), as on Windows. The tests below the classes run the kit's
tests that need that protocol on ``"rename"`` maps, and check that the mode fails them, as Windows would.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mmap_ninja.testing import MapConformance, spec_for
from mmap_ninja.testing.windows_semantics import COMMIT_VARIABLE, slots_protocol_available

pytestmark = [pytest.mark.windows_semantics,
              pytest.mark.skipif(sys.platform != "linux", reason="the mode reads /proc (Windows itself needs none)")]

# What a "rename" map cannot do on Windows: cut a failed write's uncommitted tail from a column this process maps
# (a raising transaction, a refused batch), and replace an unfinished build while a handle maps it.
NEEDS_SLOTS = ["test_a_raising_transaction_commits_nothing", "test_bad_input_is_refused_and_changes_no_file",
               "test_crash_while_building"]


class TestStringsWindows(MapConformance):
    spec = spec_for("strings")


class TestRecordsWindows(MapConformance):
    spec = spec_for("records")


def test_the_mode_makes_new_maps_slot_maps() -> None:
    import os

    assert os.environ.get(COMMIT_VARIABLE) == ("slots" if slots_protocol_available() else None)


@pytest.mark.parametrize("name", NEEDS_SLOTS)
def test_the_rename_protocol_fails_where_windows_would(name: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(COMMIT_VARIABLE, "rename")
    with pytest.raises((AssertionError, PermissionError)) as failed:
        getattr(MapConformance, name)(TestStringsWindows(), tmp_path)
    assert "changed a file" in str(failed.value) or "WinError" in str(failed.value), failed.value
