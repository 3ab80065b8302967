"""The conformance kit on maps kept with ``commit="slots"`` (FORMAT.md, "A commit that never renames over a file
a reader holds"): every kind's spec with the option, and ``$MMAP_NINJA_COMMIT=slots`` for the maps a test creates
by a first write and for the crash and writer children (they inherit the environment)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmap_ninja.testing import MapConformance, spec_for
from mmap_ninja.testing.registry import KindSpec


def slots_spec(name: str) -> KindSpec:
    """The kit's spec ``name`` building slot maps."""
    spec = spec_for(name)
    return dataclasses.replace(spec, name=f"{spec.name}-slots", build_options={**spec.build_options, "commit": "slots"})


class _SlotsKit(MapConformance):
    @pytest.fixture(autouse=True)
    def _slots_everywhere(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
        monkeypatch.setenv("MMAP_NINJA_COMMIT", "slots")
        yield
        # Every map the test made is a slot map: nothing fell back to the rename protocol unnoticed.
        headers = list(tmp_path.rglob("header.json"))
        plain = [h for h in headers if (h.parent / ".lock").exists() and not (h.parent / "header.slots").exists()]
        assert not plain, f"maps made without commit.slots: {plain}"


class TestStringsSlots(_SlotsKit):
    spec = slots_spec("strings")


class TestRaggedSlots(_SlotsKit):
    spec = slots_spec("ragged")


class TestNumpySlots(_SlotsKit):
    spec = slots_spec("numpy")


class TestRecordsSlots(_SlotsKit):
    spec = slots_spec("records")


class TestImagesSlots(_SlotsKit):
    spec = slots_spec("images")


class TestRecordsImagesSlots(_SlotsKit):
    spec = slots_spec("records-images")
