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

REPO = Path(__file__).resolve().parents[2]
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
    # module=False: a public class's methods are searched too, wherever the class is defined (with the module
    # given, doctest would skip the methods of a class re-exported from another module)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests: list[doctest.DocTest] = []
    seen: set[int] = set()
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name)
        if id(obj) in seen:  # an alias (StringsMmmap) runs its class's examples once
            continue
        seen.add(id(obj))
        tests += finder.find(obj, name, module=False, globs={})
    # the module's own docstring (recurse=False: its public names' examples were found above, once)
    tests += doctest.DocTestFinder(exclude_empty=True, recurse=False).find(module, module_name, globs={})
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {module_name}"


# Public classes and functions that need no example, each with its reason. Exception classes need none either
# (see _needs_an_example): the examples of the calls that raise them show them.
NO_EXAMPLE_NEEDED = {
    "mmap_ninja.adapters.torch.ShardedSampler": "deprecated name of RankSampler (which has the example)",
    "mmap_ninja.adapters.torch.shard_indices": "deprecated name of rank_indices (which has the example)",
}


def _needs_an_example() -> list[tuple[str, Any]]:
    """Every public class and function (an instance that is callable, like pad_collate, counts by its class's
    docstring); not constants (``__version__``, ``PROVENANCE_KEY``) and not exception classes."""
    found = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if not callable(obj) or (inspect.isclass(obj) and issubclass(obj, BaseException)):
                continue
            found.append((f"{module_name}.{name}", obj))
    return found


def _has_an_example(obj: Any) -> bool:
    return ">>>" in (obj.__doc__ or "")  # its own docstring, not one inherited from a base class


def test_every_public_class_and_function_has_an_example() -> None:
    missing = [name for name, obj in _needs_an_example() if name not in NO_EXAMPLE_NEEDED and not _has_an_example(obj)]
    assert not missing, f"public names without a >>> example in their docstring: {missing}"


def test_the_list_of_names_without_an_example_is_current() -> None:
    candidates = dict(_needs_an_example())
    stale = {name for name in NO_EXAMPLE_NEEDED if name not in candidates or _has_an_example(candidates[name])}
    assert not stale, f"remove from NO_EXAMPLE_NEEDED (no longer public, or has an example now): {sorted(stale)}"
