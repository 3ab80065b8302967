import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmap_ninja.format import header_checksum
from mmap_ninja.testing import arrays_equal, spec_for

# --windows-semantics (and the windows_semantics marker, the windows_semantics_mode fixture): Windows' refusals of
# renames, deletions and truncations of held files, on Linux (mmap_ninja.testing.windows_semantics).
pytest_plugins = ["mmap_ninja.testing.windows_semantics"]


def snapshot(directory: Path) -> dict:
    """Every file's bytes below ``directory`` (to check that a failed call left the disk as it was)."""
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(Path(directory).rglob("*")) if p.is_file()}


def write_header(directory: Path, content: dict) -> None:
    """Write ``content`` as the map's header, with its checksum made anew (as a writer of that content would)."""
    content = {key: value for key, value in content.items() if key != "checksum"}
    content["checksum"] = header_checksum(content)
    (Path(directory) / "header.json").write_text(json.dumps(content))


def peak_bytes_in_a_fresh_process(setup: str, statement: str) -> int:
    """tracemalloc's peak while ``statement`` runs, in a fresh interpreter, after ``setup`` and one warm-up run of
    the statement (imports, caches). tracemalloc counts every thread's allocations: in the test process, the
    threads other tests leave running (the session's Dask client, decoding pools) would be counted too."""
    code = f"import tracemalloc\n{setup}\n{statement}\ntracemalloc.start()\n{statement}\n" \
           f"print(tracemalloc.get_traced_memory()[1])\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


def sample_for(kind: str, i: int):
    """A deterministic sample of each kind, derivable from its index (the test kit's spec of the kind)."""
    return spec_for(kind).make_sample(i)


def build(kind: str, path: Path, n: int):
    """A map of ``kind`` holding samples 0 .. n-1, built as the kit's spec says."""
    spec = spec_for(kind)
    return spec.container.from_generator(path, (spec.make_sample(i) for i in range(n)), batch_size=64,
                                         **spec.build_options)


def equal(a, b) -> bool:
    return arrays_equal(a, b)


# The kinds the hand-written tests cover; every registered kind (these, records, images, ...) also runs the
# kit's conformance tests in test_kit.py, which checks that none is left out.
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
from conftest_s3 import s3_server  # noqa: E402, F401  (a session-wide moto_server for tests/test_remote.py)
from legacy_090 import big_legacy_maps, legacy_maps, legacy_reads  # noqa: E402, F401
