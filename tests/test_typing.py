"""The types a user's checker sees (a typed script under ``mypy --strict``), and what the signatures promise at run
time: per-kind ``batch_size`` defaults, keyword errors naming the public call, ``open_existing(kind=...)``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mmap_ninja
from mmap_ninja import (
    ImagesMmap,
    KindMismatchError,
    NumpyMmap,
    RaggedMmap,
    RecordsMmap,
    StringsMmap,
    np_from_generator,
    open_existing,
)

SCRIPT = Path(__file__).parent / "data" / "typed_user_script.py"

# Checked with the typed script: each line must be reported by mypy, with this error code.
MISTAKES = '''\
from pathlib import Path

from mmap_ninja import RaggedMmap, StringsMmap

texts = StringsMmap(Path("t"))
texts.append(3)  # line 6: a str map takes str
number: int = texts[0]  # line 7: a sample is a str
rag = RaggedMmap(Path("r"))
many: str = rag[1:3]  # line 9: a slice gives a list of arrays
'''


def _mypy_config(tmp_path: Path) -> Path:
    """A configuration of the user's own, not the project's (whose ``files`` and overrides are for src/): strict,
    with mmap_ninja read as an installed package is (its own modules' findings are not the user's)."""
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nstrict = True\n\n[mypy-mmap_ninja.*]\nfollow_imports = silent\n")
    return config


def _package_root() -> str:
    return str(Path(mmap_ninja.__file__).resolve().parent.parent)


def test_a_typed_user_script_passes_mypy_strict_and_its_mistakes_are_reported(tmp_path):
    pytest.importorskip("mypy")
    pytest.importorskip("torch")
    mistakes = tmp_path / "mistakes.py"
    mistakes.write_text(MISTAKES)
    env = dict(os.environ)
    root = _package_root()
    if Path(root).name != "site-packages":  # a source checkout: check the code under test, not an installed copy
        env["MYPYPATH"] = root
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(_mypy_config(tmp_path)), "--cache-dir",
         str(tmp_path / "cache"), "--no-error-summary", "--show-error-codes", str(SCRIPT), str(mistakes)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert not [line for line in errors if SCRIPT.name in line], result.stdout + result.stderr
    reported = sorted((int(line.split(":")[1]), line.rsplit("[", 1)[-1].rstrip("]")) for line in errors)
    assert reported == [(6, "arg-type"), (7, "assignment"), (9, "assignment")], result.stdout + result.stderr


def test_the_typed_user_script_runs(tmp_path):
    """Its annotations are checked by mypy; running it checks they are what the maps give."""
    pytest.importorskip("torch")
    pytest.importorskip("PIL")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([_package_root(), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", str(SCRIPT), str(tmp_path / "maps")],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0 and "typed user script: ok" in result.stdout, result.stdout + result.stderr


def test_importing_the_core_does_not_import_torch():
    """Maps are Datasets to a type checker only: the base class comes from torch under TYPE_CHECKING."""
    code = "import sys, mmap_ninja.maps as m; print('torch' in sys.modules, *[b.__name__ for b in m.MapBase.__bases__])"
    env = {**os.environ, "PYTHONPATH": _package_root()}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.stdout.split() == ["False", "object"], result.stderr


def test_the_typing_stubs_keep_the_plain_read_fast_path():
    assert StringsMmap.plain_reads and RaggedMmap.plain_reads
    assert "__getitem__" not in StringsMmap.__dict__ and "__getitem__" not in RaggedMmap.__dict__


# -------------------------------------------------------------- batch_size defaults


def test_every_builder_has_a_per_kind_batch_size_default(tmp_path):
    images = [np.full((2, 3, 3), i, dtype=np.uint8) for i in range(3)]
    assert len(ImagesMmap.from_generator(tmp_path / "images", images)) == 3
    assert StringsMmap.from_generator(tmp_path / "strings", ["a", "b"])[1] == "b"
    assert RaggedMmap.from_indexable(tmp_path / "ragged", [[1], [2, 3]])[1].tolist() == [2, 3]
    assert len(np_from_generator(tmp_path / "numpy", (np.zeros(2) for _ in range(4)))) == 4
    assert RecordsMmap.from_generator(tmp_path / "records", [{"a": 1}, {"a": 2}])[1] == {"a": 2}
    assert RecordsMmap.from_indexable(tmp_path / "records2", [{"a": 1}])[0] == {"a": 1}
    defaults = {cls: cls.default_batch_size for cls in (StringsMmap, RaggedMmap, NumpyMmap, ImagesMmap, RecordsMmap)}
    assert all(isinstance(size, int) and size > 0 for size in defaults.values())
    assert defaults[ImagesMmap] == 256  # from_files' default, now from_generator's too


def test_batch_size_keeps_its_position_from_0_9_0(tmp_path):
    m = ImagesMmap.from_generator(tmp_path / "images", [np.zeros((2, 2, 3), dtype=np.uint8)] * 3, 2, False)
    assert len(m) == 3 and m.path == tmp_path / "images"
    assert len(NumpyMmap.from_generator(tmp_path / "numpy", [np.zeros(2)] * 3, 1, False)) == 3


# -------------------------------------------------------------- keyword errors name the public call


@pytest.mark.parametrize("build", [
    lambda p: RaggedMmap.from_lists(p, [[1, 2]], codek="zstd"),
    lambda p: RaggedMmap.from_generator(p, [[1, 2]], codek="zstd"),
    lambda p: RaggedMmap.from_indexable(p, [[1, 2]], codek="zstd"),
    lambda p: StringsMmap.from_generator(p, ["a"], codek="zstd"),
    lambda p: ImagesMmap.from_generator(p, [np.zeros((2, 2, 3), dtype=np.uint8)], codek="zstd"),
    lambda p: RecordsMmap.from_generator(p, [{"a": 1}], codek="zstd"),
    lambda p: ImagesMmap.from_files(p, [], channels=3, codek="zstd"),
    lambda p: StringsMmap.from_arrow(p, ["a"], codek="zstd"),
    lambda p: RaggedMmap.from_arrow(p, [[1]], codek="zstd"),
])
def test_a_misspelled_build_keyword_names_the_public_call_and_creates_nothing(tmp_path, build):
    with pytest.raises(TypeError) as raised:
        build(tmp_path / "m")
    message = str(raised.value)
    assert "'codek'" in message and "Layout" not in message
    assert message.split("(")[0] in {"RaggedMmap.from_lists", "RaggedMmap.from_generator",
                                     "RaggedMmap.from_indexable", "StringsMmap.from_generator",
                                     "ImagesMmap.from_generator", "RecordsMmap.from_generator",
                                     "ImagesMmap.from_files", "StringsMmap.from_arrow", "RaggedMmap.from_arrow"}
    assert not (tmp_path / "m").exists()


def test_a_misspelled_build_keyword_in_build_names_build(tmp_path):
    with pytest.raises(TypeError, match=r"^RaggedMmap\.build\(\) got an unexpected keyword argument 'dtyp'"), \
            RaggedMmap.build(tmp_path / "m", dtyp=np.int32):
        pass
    assert not (tmp_path / "m").exists()


# -------------------------------------------------------------- open_existing


def test_open_existing_checks_the_kind_it_is_told(tmp_path):
    StringsMmap.from_strings(tmp_path / "s", ["a"]).close()
    with open_existing(tmp_path / "s", kind=StringsMmap) as m:
        assert m[0] == "a"
    with pytest.raises(KindMismatchError, match=r"kind 'strings' \(StringsMmap\), not the RaggedMmap"):
        open_existing(tmp_path / "s", kind=RaggedMmap)


def test_open_existing_refuses_a_keyword_it_does_not_take_by_its_own_name(tmp_path):
    StringsMmap.from_strings(tmp_path / "s", ["a"]).close()
    with pytest.raises(TypeError, match=r"open_existing\(\) got an unexpected keyword argument 'chanels'"):
        open_existing(tmp_path / "s", chanels=3)  # type: ignore[call-overload]
    with open_existing(tmp_path / "s", mode="r", lock_timeout=1.0, durable=False) as m:  # defaults not passed on
        assert m.mode == "r"
