"""The tests' fixtures. Plain helpers shared by tests are in ``tests.support`` (``from tests.support import
snapshot``): a test module never imports ``conftest``."""

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# The test command gives the same result on every run and on any machine: Hypothesis draws its examples from a
# seed fixed by each test (a random run could fail one day and not the next), keeps no example database between
# runs, and judges nothing by time (no deadline; no health check on slow data generation, which a loaded CI machine
# fails). HYPOTHESIS_PROFILE=explore draws fresh random examples, to look for new failures on purpose.
settings.register_profile("deterministic", derandomize=True, database=None, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

pytest_plugins = [
    # --windows-semantics (and the windows_semantics marker, the windows_semantics_mode fixture): Windows'
    # refusals of renames, deletions and truncations of held files, on Linux (mmap_ninja.testing.windows_semantics).
    "mmap_ninja.testing.windows_semantics",
    "tests.support.dask_cluster",  # dask_client: a session-wide Dask cluster for the Dask tests
    "tests.support.s3_server",  # s3_server: a session-wide moto_server for the remote tests
    # big_legacy_maps, legacy_maps, legacy_reads: maps written by the real mmap_ninja 0.9.0, for the legacy and
    # convert tests
    "tests.support.legacy_090",
]


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
