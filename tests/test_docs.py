"""The reference documentation: it builds with warnings as errors, documents every public callable, and the
examples in docstrings run as doctests."""

from __future__ import annotations

import doctest
import importlib
import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
PUBLIC_MODULES = ["mmap_ninja"] + [f"mmap_ninja.adapters.{name}"
                                   for name in ("torch", "shards", "arrow", "ingest", "dask", "remote", "cache")]


def test_the_documentation_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-5000:]
    for page in ("index.html", "FORMAT/index.html", "reference/strings/index.html", "reference/training/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    strings = (tmp_path / "site" / "reference" / "strings" / "index.html").read_text()
    assert "from_generator" in strings and "extend" in strings  # the API reference comes from the docstrings


def _public_callables() -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if not callable(obj):
                continue
            found.append((f"{module_name}.{name}", obj))
            if inspect.isclass(obj):
                for attribute, value in vars(obj).items():
                    if attribute.startswith("_"):
                        continue
                    target = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
                    if callable(target):
                        found.append((f"{module_name}.{name}.{attribute}", target))
    return found


def test_every_public_callable_has_a_docstring() -> None:
    undocumented = [name for name, obj in _public_callables() if not (inspect.getdoc(obj) or "").strip()
                    or inspect.getdoc(obj) == inspect.getdoc(object)]
    assert not undocumented, undocumented


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_docstring_examples_run(module_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples create maps in the working directory
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for name in getattr(module, "__all__", []) for t in finder.find(getattr(module, name), name,
                                                                                 module=module, globs={})]
    tests += finder.find(module, module_name, globs={})
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {module_name}"
