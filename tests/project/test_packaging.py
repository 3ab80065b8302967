"""The package as a team adopts it: the wheel and sdist build, `twine check` accepts them, the metadata names the
licence, and the sdist carries tests that collect."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: the build uses this environment's setuptools (no download), as a pinned CI would.
    done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def _one(dist: Path, pattern: str) -> Path:
    found = sorted(dist.glob(pattern))
    assert len(found) == 1, (pattern, sorted(p.name for p in dist.iterdir()))
    return found[0]


def test_twine_accepts_the_wheel_and_the_sdist(dist: Path) -> None:
    files = [str(_one(dist, "*.whl")), str(_one(dist, "*.tar.gz"))]
    done = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *files],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PASSED") == 2, done.stdout


def test_the_wheel_declares_its_licence_classifiers_and_urls(dist: Path) -> None:
    with zipfile.ZipFile(_one(dist, "*.whl")) as wheel:
        names = wheel.namelist()
        metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(wheel.read(metadata_name).decode())
        licence_files = [n for n in names if ".dist-info/licenses/" in n]
        assert [Path(n).name for n in licence_files] == ["LICENSE"]
        assert "Apache License" in wheel.read(licence_files[0]).decode()
        assert any(n.endswith("mmap_ninja/py.typed") for n in names)
    assert metadata["License-Expression"] == "Apache-2.0"
    classifiers = metadata.get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers
    assert any(c.startswith("Programming Language :: Python :: 3.") for c in classifiers)
    assert any(c.startswith("Operating System ::") for c in classifiers)
    urls = dict(entry.split(", ", 1) for entry in metadata.get_all("Project-URL") or [])
    assert {"Homepage", "Source", "Issues", "Changelog"} <= set(urls), urls


def test_the_sdist_carries_tests_that_collect(dist: Path, tmp_path: Path) -> None:
    with tarfile.open(_one(dist, "*.tar.gz")) as sdist:
        sdist.extractall(tmp_path, filter="data") if hasattr(tarfile, "data_filter") else sdist.extractall(tmp_path)
    root = next(tmp_path.iterdir())
    for needed in ("LICENSE", "CHANGELOG.md", "FORMAT.md", "tests/conftest.py", "constraints/ci.txt",
                   "stress/crash_torture.py", "benchmarks/__init__.py", "examples/demo.py"):
        assert (root / needed).exists(), needed
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                          cwd=root, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(root / "src")})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert "collected" in summary and "error" not in summary, summary
