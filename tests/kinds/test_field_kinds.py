"""A new kind of records field is one `FieldKind` registered by its own module: records maps, `get_batch`,
`to_arrow`, `verify` and field containers take it without any edit of their code."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import mmap_ninja.kinds.fields as fields_module
from mmap_ninja import Field, RecordsMmap, verify
from mmap_ninja.errors import UnknownFeatureError
from mmap_ninja.kinds.fields import field_kind, field_kinds
from mmap_ninja.kinds.ragged import RaggedField, RaggedMmap
from mmap_ninja.storage.format import register_feature


class AudioField(RaggedField):
    """A test kind: mono waveforms, stored as 1-D float32 ragged samples."""

    name = "audio"
    takes_dtype = False
    takes_codec = False
    records_feature = "records.audio"

    def layout_attrs(self, field: Field) -> dict[str, Any]:
        return self.layout.attrs(dtype=np.float32)

    def from_attrs(self, attrs: dict[str, Any]) -> Field:
        return Field(self.name)

    def describe(self, field: Field) -> str:
        return "a 1-D float32 waveform"

    def check_values(self, name: str, field: Field, values: Any, first: int) -> Any:
        for k, value in enumerate(values):
            if np.ndim(value) != 1:
                raise ValueError(f"row {first + k}, field {name!r}: expected {field.describe()}, got "
                                 f"{np.ndim(value)} dimensions")
        return values


@pytest.fixture
def audio(monkeypatch):
    register_feature(AudioField.records_feature)
    monkeypatch.setitem(fields_module._FIELD_KINDS, "audio", AudioField())
    return field_kind("audio")


def _rows(n):
    return [{"clip": np.linspace(0, 1, 3 + i % 4, dtype=np.float32), "label": i} for i in range(n)]


def test_a_registered_kind_is_a_field_everywhere(audio, tmp_path):
    assert "audio" in field_kinds()
    rec = RecordsMmap.from_generator(tmp_path / "rec", _rows(10), schema={"clip": Field("audio"), "label": int},
                                     batch_size=4)
    assert rec.schema["clip"] == Field("audio")
    assert "records.audio" in rec._store.header.requires
    np.testing.assert_array_equal(rec[5]["clip"], np.linspace(0, 1, 4, dtype=np.float32))
    field = rec["clip"]
    assert isinstance(field, RaggedMmap) and len(field) == 10
    batch, lengths = rec.get_batch([1, 2, 3], pad_value=0.0)
    assert batch["clip"].shape == (3, 6) and lengths["clip"].tolist() == [4, 5, 6]
    assert batch["label"].tolist() == [1, 2, 3]
    table = rec.to_arrow()
    assert table.column("clip").to_pylist()[0] == pytest.approx([0.0, 0.5, 1.0])
    report = verify(tmp_path / "rec", deep=True)
    assert report.ok, report.problems


def test_a_registered_kind_checks_its_values_naming_the_row(audio, tmp_path):
    rows = _rows(3)
    rows[2]["clip"] = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match=r"row 2, field 'clip': expected a 1-D float32 waveform, got 2 dim"):
        RecordsMmap.from_generator(tmp_path / "rec", rows, schema={"clip": Field("audio"), "label": int})
    assert not (tmp_path / "rec").exists()


def test_a_kind_refuses_options_it_does_not_take(audio):
    with pytest.raises(TypeError, match="a audio field has no dtype"):
        Field("audio", np.dtype(np.float32))
    with pytest.raises(TypeError, match="audio fields are not compressed"):
        Field("audio", codec="zstd")


def test_a_reader_without_the_kind_refuses_the_map_by_its_feature(audio, tmp_path, monkeypatch):
    RecordsMmap.from_generator(tmp_path / "rec", _rows(3), schema={"clip": Field("audio"), "label": int})
    monkeypatch.delitem(fields_module._FIELD_KINDS, "audio")
    import mmap_ninja.storage.format as format_module

    monkeypatch.setattr(format_module, "_FEATURES", format_module._FEATURES - {"records.audio"})
    with pytest.raises(UnknownFeatureError, match=r"records\.audio"):
        RecordsMmap(tmp_path / "rec", mode="r")


def test_unknown_kinds_are_named():
    with pytest.raises(ValueError, match=r"a field's kind is one of \['images', 'numpy', 'ragged', 'strings'"):
        Field("video")
