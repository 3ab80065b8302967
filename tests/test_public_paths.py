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


def _pickled_call(module: str, name: str, args: tuple) -> bytes:
    """A pickle that calls ``module.name(*args)``, as a ``__reduce__`` of an earlier release wrote it."""
    body = pickle.dumps(args, protocol=2)[2:-1]  # the arguments' tuple, without PROTO and STOP
    return b"\x80\x02" + f"c{module}\n{name}\n".encode() + body + b"R."


def test_pickles_written_before_the_relayout_load(tmp_path):
    # 0.9.x and 1.0 before the relayout pickled maps through reconstructors of the modules they lived in
    # (``mmap_ninja.maps._reopen``, ...): pickles saved then (a DataLoader's dataset, a cached experiment) load.
    import numpy as np

    from mmap_ninja import RaggedMmap, RecordsMmap, merge
    from mmap_ninja.containers.blend import BlendedMap
    from mmap_ninja.containers.order import Order
    from mmap_ninja.containers.sharded_map import ShardedMap

    ragged = RaggedMmap.from_lists(tmp_path / "r", [np.arange(3), np.arange(2)])
    options = {"wrapper_fn": None, "mode": "r+", "copy_before_wrapper_fn": True}
    back = pickle.loads(_pickled_call("mmap_ninja.maps", "_reopen", (RaggedMmap, str(ragged.path), options)))
    assert isinstance(back, RaggedMmap) and back[0].tolist() == [0, 1, 2]

    rec = RecordsMmap.from_dict(tmp_path / "rec", {"label": np.array([4, 5])})
    field = pickle.loads(_pickled_call("mmap_ninja.records_fields", "open_field", (rec, "label")))
    assert field[1] == 5

    for name in ("a", "b"):
        RaggedMmap.from_lists(tmp_path / name, [np.arange(4)]).close()
    sharded = merge(tmp_path / "sh", [tmp_path / "a", tmp_path / "b"])
    back_sharded = pickle.loads(_pickled_call("mmap_ninja.sharded_map", "_reopen", (str(sharded.path), {})))
    assert isinstance(back_sharded, ShardedMap) and len(back_sharded) == 2

    order = pickle.loads(_pickled_call("mmap_ninja.order", "_rebuild", (10, 1, 0, True)))
    assert isinstance(order, Order) and sorted(order.take(range(10)).tolist()) == list(range(10))

    mixed = mmap_ninja.blend([ragged, ragged], [0.5, 0.5], length=4)
    _, args = mixed.__reduce__()
    blended = pickle.loads(_pickled_call("mmap_ninja.blend", "_rebuild", args))
    assert isinstance(blended, BlendedMap) and len(blended) == 4


def test_the_command_of_an_install_made_before_the_relayout_runs():
    # A console script generated by an earlier (editable) install imports ``mmap_ninja.cli:main``.
    code = "import sys; from mmap_ninja.cli import main; sys.argv = ['mmap-ninja', '--version']; main()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and mmap_ninja.__version__ in done.stdout + done.stderr, done.stderr
