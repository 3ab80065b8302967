from pathlib import Path

import numpy as np
import pytest

from mmap_ninja import RaggedMmap, StringsMmap, np_from_ndarray


def snapshot(directory: Path) -> dict:
    """Every file's bytes below ``directory`` (to check that a failed call left the disk as it was)."""
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(Path(directory).rglob("*")) if p.is_file()}


def sample_for(kind: str, i: int):
    """A deterministic sample of each kind, derivable from its index."""
    if kind == "strings":
        return f"sample {i} " + "é" * (i % 5) + "x" * (i % 7)
    if kind == "ragged":
        return np.full((i % 4 + 1, 2), i, dtype=np.int32)
    return np.full((2, 3), i, dtype=np.float32)


def build(kind: str, path: Path, n: int):
    samples = [sample_for(kind, i) for i in range(n)]
    if kind == "strings":
        return StringsMmap.from_strings(path, samples)
    if kind == "ragged":
        return RaggedMmap.from_lists(path, samples)
    return np_from_ndarray(path, np.stack(samples) if samples else np.empty((0, 2, 3), np.float32))


def equal(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


KINDS = ["strings", "ragged", "numpy"]


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def real_texts():
    """Real English documentation text (with non-ASCII) that ships with CPython."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


@pytest.fixture
def real_image_dir(tmp_path):
    """A folder of five real JPEG images of different shapes: matplotlib's bundled sample pictures, and two
    of them at half size."""
    import matplotlib
    from PIL import Image

    sample_data = Path(matplotlib.get_data_path()) / "sample_data"
    folder = tmp_path / "val2017"
    folder.mkdir()
    for name in ["grace_hopper.jpg", "logo2.png", "Minduka_Present_Blue_Pack.png"]:
        with Image.open(sample_data / name) as image:
            rgb = image.convert("RGB")
        rgb.save(folder / (Path(name).stem + ".jpg"), quality=95)
        if name.endswith(".png"):
            rgb.reduce(2).save(folder / (Path(name).stem + "_half.jpg"), quality=95)
    return folder


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path, monkeypatch):
    # Seed snippets write relative paths such as '20newsgroups'; keep them inside the test's folder.
    monkeypatch.chdir(tmp_path)
    yield


# Maps written by the real mmap_ninja 0.9.0 (tests/legacy_090.py) for the legacy and convert tests.
from conftest_dask import dask_client  # noqa: E402, F401  (a session-wide Dask cluster for tests/test_dask.py)
from legacy_090 import big_legacy_maps, legacy_maps, legacy_reads  # noqa: E402, F401
