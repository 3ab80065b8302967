"""The conformance kit in the Windows-semantics mode (mmap_ninja.testing.windows_semantics), short form: two kinds,
every test, with Windows' refusals of renaming, deleting and cutting held files, in this process and in the kit's
child processes (crashes, concurrent writers). The whole kit runs in the mode with

    pytest tests/test_kit.py tests/test_kit_containers.py tests/test_remote.py tests/test_torch.py --windows-semantics

Tests that need the commit protocol that never cuts or deletes a held file (``commit.slots``, FORMAT.md) are marked
here: with the rename protocol they fail on Windows (and in the mode), and the mode makes the map kept with it
(``commit.slots``) the default, as on Windows, once the library has it.
"""

from __future__ import annotations

import sys

import pytest

from mmap_ninja.testing import MapConformance, spec_for
from mmap_ninja.testing.windows_semantics import slots_protocol_available

pytestmark = [pytest.mark.windows_semantics,
              pytest.mark.skipif(sys.platform != "linux", reason="the mode reads /proc (Windows itself needs none)")]

_NEEDS_SLOTS = pytest.mark.xfail(
    not slots_protocol_available(), strict=True, raises=(AssertionError, PermissionError),
    reason="needs commit.slots: the rename protocol cuts the uncommitted tail of a column this process maps, or "
           "deletes the files of a build a handle still maps; Windows refuses both")


class _WindowsKinds(MapConformance):
    @_NEEDS_SLOTS
    def test_a_raising_transaction_commits_nothing(self, tmp_path):  # type: ignore[no-untyped-def]
        super().test_a_raising_transaction_commits_nothing(tmp_path)

    @_NEEDS_SLOTS
    def test_bad_input_is_refused_and_changes_no_file(self, tmp_path):  # type: ignore[no-untyped-def]
        super().test_bad_input_is_refused_and_changes_no_file(tmp_path)

    @_NEEDS_SLOTS
    def test_crash_while_building(self, tmp_path):  # type: ignore[no-untyped-def]
        super().test_crash_while_building(tmp_path)


class TestStringsWindows(_WindowsKinds):
    spec = spec_for("strings")


class TestRecordsWindows(_WindowsKinds):
    spec = spec_for("records")
