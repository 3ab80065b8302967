"""The import paths of earlier releases and of the documentation keep working after the modules moved into their
layers' folders (ARCHITECTURE.md, "Layers as folders"): every compatibility module re-exports the very objects of the
module it names, pickles naming the old paths load, and the functions the package exports keep their names."""

import ast
import importlib
import pathlib
import pickle
import subprocess
import sys

import pytest

import mmap_ninja

PACKAGE = pathlib.Path(mmap_ninja.__file__).parent
FOUNDATION = {"__init__", "__main__", "_version", "errors", "extras"}
SHIMS = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in FOUNDATION)


def _real_module(shim: str) -> str:
    for node in ast.parse((PACKAGE / f"{shim}.py").read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module != "mmap_ninja.errors":
            return node.module
    raise AssertionError(f"mmap_ninja.{shim} imports nothing")


def test_the_old_paths_are_there():
    for old in ["base", "generic", "numpy", "parallel", "ragged", "string", "images", "records", "sharded",
                "blend", "order", "block_order", "verify", "conversion", "codecs", "maps", "checksums", "legacy",
                "locks"]:
        assert old in SHIMS, old


@pytest.mark.parametrize("shim", SHIMS)
def test_a_compatibility_module_re_exports_the_objects_of_its_module(shim):
    old = importlib.import_module(f"mmap_ninja.{shim}")
    real = importlib.import_module(_real_module(shim))
    assert old.__all__, shim
    for name in old.__all__:
        assert getattr(old, name) is getattr(real, name), f"mmap_ninja.{shim}.{name}"
    assert real.__name__ in (old.__doc__ or ""), "its docstring names the module it re-exports"


@pytest.mark.parametrize("shim", [s for s in SHIMS if s != "base"])
def test_a_pickle_naming_a_class_by_its_old_path_loads(shim):
    old = importlib.import_module(f"mmap_ninja.{shim}")
    classes = [getattr(old, n) for n in old.__all__ if isinstance(getattr(old, n), type)]
    for cls in classes:
        # pickle's own reference to a class: GLOBAL with the module and name it was saved under
        data = b"c" + f"mmap_ninja.{shim}\n{cls.__qualname__}\n".encode() + b"."
        assert pickle.loads(data) is cls


def test_the_functions_named_like_modules_stay_functions_after_their_old_module_is_imported():
    code = ("import mmap_ninja, mmap_ninja.verify, mmap_ninja.blend\n"
            "assert callable(mmap_ninja.verify) and not hasattr(mmap_ninja.verify, '__path__')\n"
            "assert mmap_ninja.verify is mmap_ninja.verify.__globals__['verify']\n"
            "assert callable(mmap_ninja.blend)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_storage_is_the_storage_layer_and_keeps_its_names():
    from mmap_ninja.storage import Store
    from mmap_ninja.storage.store import Store as real

    assert Store is real
