#!/usr/bin/env python
"""Run mmap_ninja 0.9.0's own test suite, unmodified, against this library, and print pass/fail per test.

    python scripts/run_090_suite.py [--python PY] [--src DIR] [--keep DIR] [--min-ratio 0.9]

Downloads 0.9.0's source distribution with pip, extracts its ``tests/`` folder and runs it with pytest, with
this repository's ``src/`` first on ``PYTHONPATH`` (so ``import mmap_ninja`` is this library). The tests import
joblib: it is pip-installed into the interpreter when missing. The pass ratio's denominator is every test of the
folder except those calling 0.9.0's private helpers (``base._*``, ``numpy._empty``: not part of its API), which
are listed by name. Exits 1 if ``--min-ratio`` is given and not reached.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REQUIREMENT = "mmap-ninja==0.9.0"


def download_tests(workdir: Path, python: str) -> Path:
    """0.9.0's ``tests/`` folder, extracted from its sdist into ``workdir``."""
    subprocess.run([python, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-binary",
                    ":all:", "--no-deps", REQUIREMENT, "-d", str(workdir)], check=True)
    archives = sorted(workdir.glob("mmap_ninja-0.9.0.tar.gz")) + sorted(workdir.glob("mmap-ninja-0.9.0.tar.gz"))
    if not archives:
        raise SystemExit(f"pip download left no mmap_ninja 0.9.0 source archive in {workdir}")
    with tarfile.open(archives[0]) as archive:
        members = [m for m in archive.getmembers() if m.isfile() and "/tests/" in f"/{m.name}"]
        for member in members:
            relative = member.name.split("/tests/", 1)[1]
            target = workdir / "tests" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None
            target.write_bytes(source.read())
    return workdir / "tests"


def private_helper_tests(tests_dir: Path) -> dict[str, str]:
    """``{test function name: the private helpers it calls}`` for the tests that use 0.9.0's private helpers:
    an attribute starting with one underscore (``base._str_to_file``, ``np_ninja._empty``) of a name
    imported from mmap_ninja."""
    found: dict[str, str] = {}
    for file in sorted(tests_dir.glob("test_*.py")):
        tree = ast.parse(file.read_text())
        modules: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mmap_ninja"):
                modules.update(alias.asname or alias.name for alias in node.names)
            elif isinstance(node, ast.Import):
                modules.update((alias.asname or alias.name).split(".")[0] for alias in node.names
                               if alias.name.startswith("mmap_ninja"))
        for function in tree.body:
            if not isinstance(function, ast.FunctionDef) or not function.name.startswith("test"):
                continue
            helpers = sorted({f"{node.value.id}.{node.attr}" for node in ast.walk(function)
                              if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                              and node.value.id in modules and node.attr.startswith("_")
                              and not node.attr.startswith("__")})
            if helpers:
                found[f"{file.stem}::{function.name}"] = ", ".join(helpers)
    return found


def ensure_joblib(python: str) -> None:
    if subprocess.run([python, "-c", "import joblib"], capture_output=True).returncode != 0:
        print(f"installing joblib into {python} (0.9.0's tests import it)", file=sys.stderr)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "joblib"],
                       check=True)


def run_suite(python: str, src: Path, tests_dir: Path, report: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME",)}
    env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [os.environ.get("PYTHONPATH")])])
    probe = subprocess.run([python, "-c", "import mmap_ninja; print(mmap_ninja.__file__)"], capture_output=True,
                           text=True, env=env)
    if not probe.stdout.strip().startswith(str(src)):
        raise SystemExit(f"{python} does not import mmap_ninja from {src}:\n{probe.stdout}{probe.stderr}")
    subprocess.run([python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-o", "addopts=",
                    "--continue-on-collection-errors", "--rootdir",
                    str(tests_dir), f"--junitxml={report}", str(tests_dir)], cwd=str(tests_dir), env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=1800)


def test_functions(file: Path) -> list[str]:
    return [node.name for node in ast.parse(file.read_text()).body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test")]


def results(report: Path, tests_dir: Path) -> list[tuple[str, str, str]]:
    """``(module::test[params], outcome, one-line reason)`` for every test case of the JUnit report. A module
    that fails to import is reported by pytest as one error: each of its test functions gets that error."""
    rows = []
    for case in ET.parse(report).getroot().iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        outcome, reason, details = "PASS", "", ""
        for tag, label in (("failure", "FAIL"), ("error", "ERROR"), ("skipped", "SKIP")):
            element = case.find(tag)
            if element is not None:
                outcome = label
                reason = " ".join((element.get("message") or element.text or "").split())
                details = element.text or ""
                break
        if not module and outcome == "ERROR":  # a collection error: name is the module's dotted path
            module = (case.get("name") or "").rsplit(".", 1)[-1]
            error_lines = [line[1:].strip() for line in details.splitlines() if line.startswith("E ")]
            error = error_lines[-1] if error_lines else reason
            for function in test_functions(tests_dir / f"{module}.py"):
                rows.append((f"{module}::{function}", "ERROR", f"the module does not import: {error}"))
            continue
        rows.append((f"{module}::{case.get('name')}", outcome, reason))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter to run the tests with (default: this)")
    parser.add_argument("--src", type=Path, default=REPO / "src",
                        help="the folder holding the mmap_ninja package to test (default: this repository's src)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary folder)")
    parser.add_argument("--min-ratio", type=float, help="exit 1 unless at least this share of the tests pass")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mmap_ninja_090_suite_") as temporary:
        workdir = args.keep or Path(temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        ensure_joblib(args.python)
        tests_dir = download_tests(workdir, args.python)
        excluded = private_helper_tests(tests_dir)
        report = workdir / "report.xml"
        run_suite(args.python, args.src.resolve(), tests_dir, report)
        rows = results(report, tests_dir)

    counted = [row for row in rows if re.sub(r"\[.*\]$", "", row[0]) not in excluded]
    width = max(len(name) for name, _, _ in rows)
    print(f"mmap_ninja 0.9.0's tests against {args.src}\n")
    for name, outcome, reason in rows:
        note = "  (private helper: not counted)" if re.sub(r"\[.*\]$", "", name) in excluded else ""
        line = f"{outcome:5} {name:{width}}{note}"
        if outcome != "PASS" and reason:
            line += f"  {reason[:220]}"
        print(line)
    passed = sum(outcome == "PASS" for _, outcome, _ in counted)
    ratio = passed / len(counted) if counted else 0.0
    print(f"\nexcluded, calling 0.9.0's private helpers ({len(excluded)} tests, "
          f"{len(rows) - len(counted)} cases):")
    for name, helpers in excluded.items():
        print(f"  {name}: {helpers}")
    print(f"\npassed {passed} of {len(counted)} public-API tests: {ratio:.1%}")
    if args.min_ratio is not None and ratio < args.min_ratio:
        print(f"below the required {args.min_ratio:.0%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
