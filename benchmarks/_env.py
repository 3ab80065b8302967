"""The machine, the interpreters (ours and the upstream 0.9.0 virtualenv), data preparation, subprocess runs."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKER = HERE / "_worker.py"
UPSTREAM_VENV = HERE / ".venv-upstream"
UPSTREAM_REQUIREMENT = "mmap_ninja==0.9.0"


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- machine


def machine_info() -> dict:
    import psutil

    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("pyarrow", "PIL", "matplotlib", "psutil"):
        try:
            versions[name if name != "PIL" else "pillow"] = __import__(name).__version__
        except Exception:
            versions[name] = "not installed"
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gb": psutil.virtual_memory().total / 2**30,
        "os": f"{platform.system()} {platform.release()}",
        "loadavg_at_start": os.getloadavg(),
        "versions": versions,
    }


def machine_markdown(info: dict) -> str:
    v = info["versions"]
    return (f"Machine: {info['cpu']}, {info['logical_cores']} logical cores "
            f"({info['physical_cores']} physical), {info['ram_gb']:.1f} GiB RAM, {info['os']}; "
            f"python {v['python']}, numpy {v['numpy']}, pyarrow {v.get('pyarrow')}, pillow {v.get('pillow')}; "
            f"load average at start {', '.join(f'{x:.2f}' for x in info['loadavg_at_start'])}.")


# ---------------------------------------------------------------------------------------------- interpreters


def upstream_python(install: bool) -> str | None:
    """The interpreter of the virtualenv holding mmap_ninja 0.9.0; created (from PyPI) when ``install``."""
    python = UPSTREAM_VENV / "bin" / "python"
    if python.exists() and _has_upstream(python):
        return str(python)
    if not install:
        return None
    log(f"creating {UPSTREAM_VENV} with {UPSTREAM_REQUIREMENT} (once)")
    subprocess.run([sys.executable, "-m", "venv", str(UPSTREAM_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", UPSTREAM_REQUIREMENT, "psutil", "pillow"],
                   check=True)
    return str(python) if _has_upstream(python) else None


def _has_upstream(python: Path) -> bool:
    probe = subprocess.run([str(python), "-c", "import mmap_ninja, psutil; print(mmap_ninja.__version__)"],
                           capture_output=True, text=True, env=_env(ours=False))
    return probe.returncode == 0 and probe.stdout.strip() == "0.9.0"


def _env(ours: bool, ours_src: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    if ours:
        env["PYTHONPATH"] = str(ours_src or REPO / "src")  # this working tree (or --src), whatever is installed
    env["PYTHONHASHSEED"] = "0"
    return env


class Runner:
    """Runs `_worker` tasks in fresh processes, ours or upstream; keeps a log of every call."""

    def __init__(self, upstream: str | None, profile_dir: Path | None = None,
                 ours_src: Path | None = None):
        self.upstream = upstream
        self.ours_src = ours_src
        self.calls = []
        self.profile_dir = profile_dir

    def __call__(self, spec: dict, upstream: bool = False, timeout: float = 900) -> dict:
        python = self.upstream if upstream else sys.executable
        if python is None:
            return {"skipped": "no upstream virtualenv (run without --quick once to create it)"}
        t0 = time.perf_counter()
        proc = subprocess.run([python, str(WORKER), json.dumps(spec)], capture_output=True, text=True,
                              env=_env(ours=not upstream, ours_src=self.ours_src), timeout=timeout, cwd=str(REPO))
        wall = time.perf_counter() - t0
        self.calls.append({"spec": spec, "upstream": upstream, "wall_s": wall, "rc": proc.returncode})
        if proc.returncode != 0:
            log(f"worker failed ({'upstream' if upstream else 'ours'}): {spec}\n{proc.stderr[-3000:]}")
            return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"}
        if spec.get("profile") and self.profile_dir is not None:
            name = f"profile_{spec['task']}_{spec.get('kind', '')}_{'upstream' if upstream else 'ours'}.txt"
            (self.profile_dir / name).write_text(proc.stderr)
        return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- data


def has_data(path: Path) -> bool:
    return any((path / "text").glob("*.txt")) and bool(image_paths(path / "images"))


def image_paths(image_dir: Path) -> list:
    """The pictures of a data directory: ``*.jpg`` (and ``*.png``, which scripts/get_data.py also ships)."""
    return sorted(p for p in Path(image_dir).glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def prepare_data(data: str | None, quick: bool, scratch: Path) -> tuple:
    """``(directory, how)``: the data directory with ``text/*.txt`` and ``images/*.jpg``.

    Calls the project's ``scripts/get_data.py DIR`` when it exists (it is idempotent) and falls back to
    what DIR already holds. ``--quick`` without ``--data`` makes a tiny synthetic data set instead.
    """
    if data is None and quick:
        return make_tiny_data(scratch / "tiny_data"), "synthetic tiny data set (--quick without --data)"
    path = Path(data if data is not None else REPO / "data").resolve()
    fetch = REPO / "scripts" / "get_data.py"
    if fetch.exists() and not (quick and has_data(path)):
        log(f"fetching data with {fetch.relative_to(REPO)} {path}")
        proc = subprocess.run([sys.executable, str(fetch), str(path)])
        if proc.returncode != 0:
            log(f"{fetch.name} exited with {proc.returncode}; falling back to what {path} holds")
        elif has_data(path):
            return path, f"{path} (fetched or checked by scripts/get_data.py)"
    if has_data(path):
        return path, f"{path} (existing directory)"
    raise SystemExit(f"{path} holds no text/*.txt and images/*.jpg|png; run scripts/get_data.py {path} "
                     f"or pass --data DIR")


def make_tiny_data(path: Path) -> Path:
    """A few synthetic documents (some non-ASCII) and JPEGs of several shapes, for --quick runs."""
    from PIL import Image

    if has_data(path):
        return path
    rng = np.random.default_rng(0)
    (path / "text").mkdir(parents=True, exist_ok=True)
    (path / "images").mkdir(parents=True, exist_ok=True)
    words = ["mmap", "ninja", "naïve", "café", "日本", "data", "page", "cache", "offset", "Ωmega"]
    for i in range(60):
        n = int(rng.integers(5, 400))
        text = " ".join(words[j] for j in rng.integers(0, len(words), n))
        (path / "text" / f"doc{i:03d}.txt").write_text(text, encoding="utf-8")
    for i in range(12):
        h, w = int(rng.integers(16, 80)), int(rng.integers(16, 80))
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path / "images" / f"img{i:03d}.jpg", quality=90)
    return path


def disk_usage(path: Path) -> int:
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(os.stat(p).st_blocks * 512 for p in files)


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def disk_usage_files(files) -> int:
    return sum(os.stat(p).st_blocks * 512 for p in files)
