"""Every exception mmap_ninja defines lives in `mmap_ninja.errors` (old import paths keep working), and every one
about a map is a `MapError` that is also the builtin a caller would catch."""

import ast
import importlib
import pathlib

import numpy as np
import pytest

import mmap_ninja
from mmap_ninja import RecordsMmap, StringsMmap, errors

PACKAGE = pathlib.Path(mmap_ninja.__file__).parent

OLD_HOMES = {
    "ChecksumMismatchError": "mmap_ninja.checksums",
    "SchemaMismatchError": "mmap_ninja.sharded",
    "ConversionError": "mmap_ninja.conversion",
    "SampleFetchError": "mmap_ninja.parallel",
    "RemoteStorageError": "mmap_ninja.adapters.remote",
    "LockingUnavailableError": "mmap_ninja.locks",
    "LegacyMapWarning": "mmap_ninja.legacy",
    "MissingSpecError": "mmap_ninja.testing.registry",
}

BUILTINS = {
    "NotAMapError": FileNotFoundError, "MapMovedError": FileNotFoundError, "ClosedMapError": ValueError,
    "MapExistsError": FileExistsError,
    "ReadOnlyMapError": PermissionError,
    "CorruptMapError": ValueError, "ChecksumMismatchError": ValueError, "FormatVersionError": ValueError,
    "UnknownFeatureError": ValueError, "MapLockedError": BlockingIOError, "UnfinishedMapError": ValueError,
    "MapInUseError": BlockingIOError,
    "KindMismatchError": TypeError, "ShardedFolderError": TypeError, "SchemaMismatchError": ValueError,
    "NoSuchFieldError": KeyError, "MissingKeyError": KeyError, "ConversionError": RuntimeError,
    "RemoteStorageError": OSError, "LockingUnavailableError": OSError,
}
NOT_ABOUT_A_MAP = {"SampleFetchError": RuntimeError, "MissingSpecError": LookupError, "LegacyMapWarning": UserWarning}


def test_every_exception_class_of_the_package_is_defined_in_errors():
    elsewhere = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = [ast.unparse(base) for base in node.bases]
                if any(b.endswith(("Error", "Exception", "Warning")) for b in bases):
                    elsewhere.append(f"{path.relative_to(PACKAGE)}: {node.name}")
    assert not elsewhere


@pytest.mark.parametrize("name", errors.__all__)
def test_each_exception_is_importable_from_errors_and_the_package_with_its_builtin(name):
    cls = getattr(errors, name)
    assert getattr(mmap_ninja, name) is cls and name in mmap_ninja.__all__
    if name in NOT_ABOUT_A_MAP:
        assert issubclass(cls, NOT_ABOUT_A_MAP[name]) and not issubclass(cls, errors.MapError)
    elif name != "MapError":
        assert issubclass(cls, errors.MapError) and issubclass(cls, BUILTINS[name]), name
    if name in OLD_HOMES:
        assert getattr(importlib.import_module(OLD_HOMES[name]), name) is cls  # the old import path still works


def test_the_builtins_are_what_the_calls_raise(tmp_path):
    StringsMmap.from_strings(tmp_path / "s", ["a"])
    with pytest.raises(errors.ReadOnlyMapError) as refused:
        StringsMmap(tmp_path / "s", mode="r").append("b")
    assert isinstance(refused.value, PermissionError)
    closed = StringsMmap(tmp_path / "s")
    closed.close()
    with pytest.raises(errors.ClosedMapError, match="closed map"):
        closed[0]
    with pytest.raises(errors.MapExistsError) as exists:
        StringsMmap.from_strings(tmp_path / "s", ["b"])
    assert isinstance(exists.value, FileExistsError)
    rec = RecordsMmap.from_generator(tmp_path / "r", [{"id": 1, "v": np.arange(2)}], 1, key="id")
    with pytest.raises(KeyError) as no_field:
        rec["nope"]
    assert isinstance(no_field.value, errors.NoSuchFieldError) and "its fields are ['id', 'v']" in str(no_field.value)
    with pytest.raises(errors.MissingKeyError) as no_key:
        rec.index_of(7)
    assert isinstance(no_key.value, KeyError) and str(no_key.value).startswith("no row of")
