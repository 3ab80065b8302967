"""RaggedMmap.get_batch / NumpyMmap.get_batch, the public batch module, and the layers: importing mmap_ninja pulls
in no optional library, and the adapters use only public names."""

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mmap_ninja.kinds.batch as batch_module
from mmap_ninja import RaggedMmap, np_from_ndarray


def _reference_pad(samples, pad):
    shape = tuple(max(s.shape[d] for s in samples) for d in range(samples[0].ndim))
    out = np.full((len(samples), *shape), pad, dtype=samples[0].dtype)
    for j, s in enumerate(samples):
        out[(j, *(slice(0, d) for d in s.shape))] = s
    return out


@pytest.fixture(params=["gather", "per-sample"])
def path_choice(request, monkeypatch):
    # Exercise both the vectorized gather and the memcpy-per-sample strategy on the same data.
    if request.param == "per-sample":
        monkeypatch.setattr(batch_module, "GATHER_BELOW", 0)
        monkeypatch.setattr(batch_module, "PAD_GATHER_BELOW", 0)
    return request.param


def test_pad_1d(tmp_path, path_choice):
    rng = np.random.default_rng(0)
    samples = [rng.integers(0, 100, size=rng.integers(0, 9)).astype(np.int16) for _ in range(40)]
    m = RaggedMmap.from_lists(tmp_path / "r", samples)
    idx = [5, 0, 39, 5, -1, 17]
    padded, lengths = m.get_batch(idx, pad_value=-7)
    chosen = [samples[i] for i in idx]
    np.testing.assert_array_equal(padded, _reference_pad(chosen, -7))
    assert padded.dtype == np.int16 and padded.flags.writeable
    np.testing.assert_array_equal(lengths, [len(s) for s in chosen])
    assert lengths.shape == (len(idx),)


def test_pad_nd_pads_every_axis(tmp_path, path_choice):
    rng = np.random.default_rng(1)
    samples = [rng.random((rng.integers(1, 5), rng.integers(1, 6), 3)).astype(np.float32) for _ in range(12)]
    m = RaggedMmap.from_lists(tmp_path / "r", samples)
    idx = np.array([3, 1, 11, 0])
    padded, shapes = m.get_batch(idx, pad_value=0.5)
    chosen = [samples[i] for i in idx]
    np.testing.assert_array_equal(padded, _reference_pad(chosen, 0.5))
    np.testing.assert_array_equal(shapes, [s.shape for s in chosen])
    assert shapes.shape == (4, 3)


def test_stack_equal_shapes(tmp_path, path_choice):
    samples = [np.full((2, 3), i, dtype=np.uint8) for i in range(10)] + [np.zeros((3, 3), np.uint8)]
    m = RaggedMmap.from_lists(tmp_path / "r", samples)
    np.testing.assert_array_equal(m.get_batch([4, 2, 9]), np.stack([samples[4], samples[2], samples[9]]))
    np.testing.assert_array_equal(m.get_batch(slice(2, 6)), np.stack(samples[2:6]))  # consecutive run
    mask = np.zeros(11, bool)
    mask[[1, 7]] = True
    np.testing.assert_array_equal(m.get_batch(mask), np.stack([samples[1], samples[7]]))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 3\).*pad_value"):
        m.get_batch([0, 10])


def test_out_buffer_is_filled_and_checked(tmp_path):
    samples = [np.arange(n, dtype=np.int64) for n in (3, 1, 4)]
    m = RaggedMmap.from_lists(tmp_path / "r", samples)
    out = np.zeros((3, 6), np.int64)
    padded, _ = m.get_batch([0, 1, 2], pad_value=-1, out=out)
    assert padded is out  # a larger buffer (a fixed max length) is allowed when padding
    np.testing.assert_array_equal(out, _reference_pad([*samples, np.zeros(6, np.int64)], -1)[:3])
    same = [np.arange(4) for _ in range(3)]
    m2 = RaggedMmap.from_lists(tmp_path / "r2", same)
    buf = np.empty((3, 4), np.int64)
    assert m2.get_batch([0, 1, 2], out=buf) is buf
    with pytest.raises(TypeError, match=r"dtype float32.*int64"):
        m.get_batch([0, 1], pad_value=0, out=np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"shape \(2, 3\).*\(2, 4\)"):
        m.get_batch([0, 2], pad_value=0, out=np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="shape"):
        m2.get_batch([0, 1], out=np.zeros((2, 5), np.int64))
    with pytest.raises(ValueError, match="C-contiguous"):
        m2.get_batch([0, 1], out=np.zeros((4, 2), np.int64).T)
    with pytest.raises(TypeError, match="ndarray"):
        m2.get_batch([0, 1], out=[[0] * 4] * 2)


def test_pad_value_must_fit_the_dtype(tmp_path):
    m = RaggedMmap.from_lists(tmp_path / "r", [np.zeros(2, np.uint8), np.zeros(3, np.uint8)])
    with pytest.raises(ValueError, match="pad_value"):
        m.get_batch([0, 1], pad_value=-1)
    with pytest.raises(IndexError):
        m.get_batch([0, 2], pad_value=0)


def test_different_ndims_are_refused(tmp_path):
    m = RaggedMmap.from_lists(tmp_path / "r", [np.zeros(2), np.zeros((2, 2))])
    with pytest.raises(ValueError, match="dimensions"):
        m.get_batch([0, 1], pad_value=0)
    np.testing.assert_array_equal(m.shapes([1]), [[2, 2]])


def test_empty_selection(tmp_path):
    m = RaggedMmap.from_lists(tmp_path / "r", [np.zeros(2, np.float32)])
    padded, lengths = m.get_batch([], pad_value=0)
    assert padded.shape[0] == 0 and lengths.shape == (0,)
    assert m.get_batch([]).shape[0] == 0


def test_numpy_get_batch(tmp_path):
    arr = np.arange(5 * 2 * 3, dtype=np.int32).reshape(5, 2, 3)
    m = np_from_ndarray(tmp_path / "n", arr)
    np.testing.assert_array_equal(m.get_batch([4, 0, -2]), arr[[4, 0, -2]])
    out = np.empty((2, 2, 3), np.int32)
    assert m.get_batch([1, 1], out=out) is out
    np.testing.assert_array_equal(out, arr[[1, 1]])
    batch, lengths = m.get_batch([0, 3], pad_value=0)
    np.testing.assert_array_equal(batch, arr[[0, 3]])
    np.testing.assert_array_equal(lengths, [[2, 3], [2, 3]])
    big = np.zeros((2, 3, 4), np.int32)
    batch, _ = m.get_batch([0, 3], pad_value=-1, out=big)
    np.testing.assert_array_equal(batch, _reference_pad([arr[0], arr[3], np.zeros((3, 4), np.int32)], -1)[:2])
    with pytest.raises(TypeError, match="dtype"):
        m.get_batch([0], out=np.empty((1, 2, 3), np.int64))
    fortran = np_from_ndarray(tmp_path / "f", np.asfortranarray(np.arange(24.0).reshape(2, 3, 4)))
    np.testing.assert_array_equal(fortran.get_batch([1, 0]), np.arange(24.0).reshape(2, 3, 4)[[1, 0]])
    vec = np_from_ndarray(tmp_path / "v", np.arange(12).reshape(4, 3))
    assert vec.get_batch([0, 1], pad_value=0)[1].tolist() == [3, 3]


def test_importing_mmap_ninja_imports_no_optional_library(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "import mmap_ninja, mmap_ninja.generic, mmap_ninja.ragged, mmap_ninja.string, mmap_ninja.numpy\n"
        "import mmap_ninja.adapters\n"
        f"m = mmap_ninja.RaggedMmap.from_lists({str(tmp_path / 'r')!r}, [np.arange(3), np.arange(2)])\n"
        "m.get_batch([0, 1], pad_value=0); m.__getitems__([0, 1])\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'pyarrow', 'datasets', 'pandas'))\n"
        "assert not bad, bad\n"
        "print('clean')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


def test_pad_value_is_never_rounded(tmp_path):
    m = RaggedMmap.from_lists(tmp_path / "r", [np.zeros(1), np.zeros(2)])
    with pytest.raises(ValueError, match="9007199254740993"):
        m.get_batch([0, 1], pad_value=2**53 + 1)  # float64 would round it to 2**53
    with pytest.raises(ValueError, match="Python int too large"):
        m.get_batch([0, 1], pad_value=10**300)  # NumPy can only round it
    assert m.get_batch([0, 1], pad_value=2**53)[0][0, 1] == 2**53
    small = RaggedMmap.from_lists(tmp_path / "f", [np.zeros(1, np.float32), np.zeros(2, np.float32)])
    assert small.get_batch([0, 1], pad_value=0.1)[0][0, 1] == np.float32(0.1)  # float rounding is allowed
    with pytest.raises(ValueError, match="overflows float32"):
        small.get_batch([0, 1], pad_value=1e300)


def test_check_batch_size_is_public():
    assert batch_module.check_batch_size(np.int64(3)) == 3
    for bad in (0, -1, True, 2.0, "8", None):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            batch_module.check_batch_size(bad)
    assert set(batch_module.__all__) >= {"assemble", "check_batch_size", "check_out", "pad_scalar"}
    for name in batch_module.__all__:
        if callable(getattr(batch_module, name)):
            assert getattr(batch_module, name).__doc__, name


def test_adapters_import_only_public_names_of_the_core():
    adapters = Path(batch_module.__file__).parents[1] / "adapters"
    imported = []
    for source in sorted(adapters.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mmap_ninja"):
                imported += [(source.name, node.module, alias.name) for alias in node.names]
            elif isinstance(node, ast.Import):
                imported += [(source.name, alias.name, "") for alias in node.names
                             if alias.name.startswith("mmap_ninja")]
    assert imported  # the adapters do use the core
    # An adapter may use its own package's private helpers (adapters/_tokens.py behind adapters/torch.py, say);
    # what it takes from the core must be public.
    core = [item for item in imported if not item[1].startswith("mmap_ninja.adapters")]
    private = [item for item in core if any(part.startswith("_") for part in f"{item[1]}.{item[2]}".split("."))]
    assert not private, private
