"""Crash torture: SIGKILL a writer at random instants and prove that nothing committed is ever lost.

Usage::

    python stress/crash_torture.py --trials 300 --kinds strings,ragged,numpy --seed 0 [--jobs 2]

Every trial starts a fresh child *process* (``python crash_torture.py --child ...``, never a fork of the
caller) that writes a map whose every sample is derivable from its index (`sample`). The child logs, to an
append-only log file that survives the kill, ``I n`` before each extend (``n``: the length the extend
would reach) and ``C n`` after it returned. The parent kills the child's whole process group with SIGKILL
after a random delay and then checks:

* the map reopens (read-only), holds every sample of every extend that returned, byte for byte, and
  nothing else except possibly the whole batch that was in flight;
* a writer reopens it (``mode='r+'``), which cuts the uncommitted tail off the files, extends it, and the
  result reads back exactly.

Scenarios (cycled through per kind):

``build``     ``from_generator`` (``np_from_generator`` for NumPy), then extends/appends from a reopened
              writer (``np_extend`` on an open map and on a path for NumPy), killed anywhere in between;
``setitem``   in-place assignments in ``mode='r+'``: only the sample being written may differ;
``refresh``   a writer extends while a reader handle in the same process ``refresh()``-es and checks the
              new samples after every commit; killed during either;
``indexable`` ``from_indexable(n_jobs=2)``; half of the trials kill only the main process and leave its
              pool workers orphaned, which must not keep the map locked.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

import mmap_ninja
from mmap_ninja import NumpyMmap, RaggedMmap, StringsMmap

HERE = Path(__file__).resolve()
KINDS = ("strings", "ragged", "numpy")
SCENARIOS = ("build", "setitem", "refresh", "indexable")
CLASSES = {"strings": StringsMmap, "ragged": RaggedMmap, "numpy": NumpyMmap}
NUMPY_SHAPE = (3, 4)
_ALPHABET = "abcXYZ019 |\u00e9\u00df\u20ac\U0001f600\n"


# --------------------------------------------------------------------------- the deterministic content

def sample(kind: str, i: int, variant: int = 0):
    """Sample ``i`` of a map of ``kind``; ``variant=1`` is a different value of the same byte size."""
    if kind == "strings":
        r = random.Random(i)
        text = f"{i}|" + "".join(r.choice(_ALPHABET) for _ in range(r.randrange(0, 40)))
        return text[::-1] if variant else text
    if kind == "ragged":
        if i % 3 == 0:
            shape = ()
        elif i % 3 == 1:
            shape = ((i * 7) % 13,)
        else:
            shape = (1 + i % 2, 2, i % 4)
        size = int(np.prod(shape, dtype=np.int64))
        values = (np.arange(size, dtype=np.int64) + i * 100).reshape(shape)
        return -values - 1 if variant else values
    if kind == "numpy":
        values = (np.arange(12, dtype=np.int32) + i * 12).reshape(NUMPY_SHAPE)
        return -values - 1 if variant else values
    raise ValueError(kind)


def samples(kind: str, start: int, stop: int) -> list:
    return [sample(kind, i) for i in range(start, stop)]


def batch(kind: str, start: int, stop: int):
    """What a writer passes to extend: a list, or an ndarray for NumPy maps."""
    items = samples(kind, start, stop)
    if kind == "numpy":
        return np.stack(items) if items else np.empty((0, *NUMPY_SHAPE), dtype=np.int32)
    return items


class Source:
    """An indexable of ``n`` samples, for ``from_indexable`` (importable, so pool workers can use it)."""

    def __init__(self, kind: str, n: int):
        self.kind, self.n = kind, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return sample(self.kind, i)


class Mismatch(AssertionError):
    pass


def verify(kind: str, m, length: int, variants: Optional[dict[int, int]] = None,
           free: Optional[int] = None) -> None:
    """Check, byte for byte, that ``m`` holds exactly ``length`` samples with the expected content.

    ``variants`` maps an index to the variant it was last assigned; the sample at ``free`` (an in-place
    write in flight) may hold anything of its original byte size.
    """
    variants = variants or {}
    if len(m) != length:
        raise Mismatch(f"length {len(m)}, expected {length}")
    expected = [sample(kind, i, variants.get(i, 0)) for i in range(length)]
    if kind == "strings":
        encoded = [s.encode("utf-8") for s in expected]
        offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded], dtype=np.int64)])
        if not np.array_equal(m.offsets, offsets) or m.offsets.dtype != np.int64:
            raise Mismatch("offsets differ")
        values = m.values.tobytes()
        if free is not None:
            a, b = int(offsets[free]), int(offsets[free + 1])
            values = values[:a] + encoded[free] + values[b:]
        if values != b"".join(encoded):
            raise Mismatch("UTF-8 bytes differ")
        for i in range(length):
            if i != free and m[i] != expected[i]:
                raise Mismatch(f"sample {i} reads {m[i]!r}, expected {expected[i]!r}")
    elif kind == "ragged":
        for i in range(length):
            got = m[i]
            if got.dtype != np.int64 or got.shape != expected[i].shape:
                raise Mismatch(f"sample {i}: {got.dtype} {got.shape}, expected int64 {expected[i].shape}")
            if i != free and got.tobytes() != expected[i].tobytes():
                raise Mismatch(f"sample {i} differs")
        if length:
            sizes = [e.size for e in expected]
            if not np.array_equal(m.offsets, np.concatenate([[0], np.cumsum(sizes)])):
                raise Mismatch("offsets differ")
    else:
        got = np.asarray(m)
        if length == 0:
            return
        want = np.stack(expected)
        if got.dtype != np.int32 or got.shape != want.shape:
            raise Mismatch(f"array {got.dtype} {got.shape}, expected int32 {want.shape}")
        if free is not None:
            got = got.copy()
            got[free] = want[free]
        if got.tobytes() != want.tobytes():
            raise Mismatch("array bytes differ")


def committed_bytes_ok(kind: str, path: Path, length: int) -> bool:
    """After a writer opened the map: are the files cut back to exactly the committed bytes?"""
    if kind == "numpy":
        return os.path.getsize(path / "data.bin") == length * 12 * 4
    offsets = os.path.getsize(path / "offsets.bin") == (length + 1) * 8
    m = CLASSES[kind](path)
    try:
        data_bytes = int(m.offsets[-1]) * (8 if kind == "ragged" else 1)
    finally:
        m.close()
    return offsets and os.path.getsize(path / "data.bin") == data_bytes


# --------------------------------------------------------------------------- the child

class Log:
    """Append-only event log; every line is one write(2), so it survives a SIGKILL right after."""

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def __call__(self, *words) -> None:
        os.write(self.fd, (" ".join(map(str, words)) + "\n").encode())


def _log_extends(cls, log: Log) -> None:
    original = cls.extend

    def extend(self, items):
        if not isinstance(items, np.ndarray):
            items = list(items)
        log("I", len(self) + len(items))
        original(self, items)
        log("C", len(self))

    cls.extend = extend


def record_fsyncs(record_path: Path) -> None:
    """For the power-loss tests: log what every ``os.fsync`` made durable, and every published header.

    One JSON line per event: ``{"file": path, "size": bytes}`` (plus ``"content"`` for the header's temp
    file), ``{"dir": path, "header": text}`` after a directory fsync, ``{"published": text}`` after each
    header rename. Logged after the real call returns, so the log never claims more than was synced.
    """
    import stat

    from mmap_ninja import storage

    out = os.open(record_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    real_fsync, real_publish = os.fsync, storage.Store._publish

    def emit(record: dict) -> None:
        os.write(out, (json.dumps(record) + "\n").encode())

    def fsync(fd):
        real_fsync(fd)
        fd = fd if isinstance(fd, int) else fd.fileno()
        target = os.readlink(f"/proc/self/fd/{fd}")
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            emit({"dir": target, "header": (Path(target) / "header.json").read_text()})
        else:
            record = {"file": target, "size": st.st_size}
            if target.endswith(".tmp"):
                record["content"] = Path(target).read_text()
            emit(record)

    def publish(self, attrs, lengths):
        real_publish(self, attrs, lengths)
        emit({"published": (self.path / "header.json").read_text()})

    os.fsync = fsync
    storage.Store._publish = publish


def _ready() -> None:
    sys.stdout.write("READY\n")
    sys.stdout.flush()


def child(scenario: str, kind: str, path: Path, log_path: Path, seed: int, durable: bool = False) -> None:
    rng = random.Random(seed)
    log = Log(log_path)
    cls = CLASSES[kind]
    cap = 6000
    if scenario == "setitem":
        n = 400
        m = cls.from_generator(path, samples(kind, 0, n), batch_size=100) if kind != "numpy" else \
            mmap_ninja.np_from_ndarray(path, batch(kind, 0, n))
        m.close()
        m = cls(path, mode="r+")
        variants = {}
        _ready()
        while True:
            i = rng.randrange(n)
            v = 1 - variants.get(i, 0)
            log("W", i, v)
            m[i] = sample(kind, i, v)
            variants[i] = v
            log("D")
    _log_extends(cls, log)
    batch_size = rng.choice([1, 7, 50, 200])
    n_first = rng.randrange(0, 1500)
    _ready()
    if scenario == "indexable":
        m = cls.from_indexable(path, Source(kind, 3000), batch_size=rng.choice([64, 200]), n_jobs=2,
                               durable=durable)
    elif kind == "numpy":
        m = mmap_ninja.np_from_generator(path, iter(samples(kind, 0, n_first)), batch_size, durable=durable)
    else:
        m = cls.from_generator(path, iter(samples(kind, 0, n_first)), batch_size, durable=durable)
    m.close()
    m = cls(path, mode="r+", durable=durable)
    reader = cls(path) if scenario == "refresh" else None
    while len(m) < cap:
        start = len(m)
        # np_extend on a path opens and closes its own writer, which has no durable= option
        if kind == "numpy" and not durable and rng.random() < 0.2:
            m.close()
            mmap_ninja.np_extend(path, batch(kind, start, start + rng.randrange(1, 60)))
            m = cls(path, mode="r+", durable=durable)
        elif rng.random() < 0.2:
            m.append(batch(kind, start, start + 1)[0])
        else:
            m.extend(batch(kind, start, start + rng.randrange(0, 60)))
        if reader is not None:
            before = len(reader)
            reader.refresh()
            try:
                verify(kind, reader, len(m)) if rng.random() < 0.02 else None
                for i in range(before, len(reader)):
                    if np.asarray(reader[i]).tobytes() != np.asarray(sample(kind, i)).tobytes():
                        raise Mismatch(f"reader sees a wrong sample {i} after refresh")
            except Mismatch as e:
                log("E", str(e).replace("\n", " "))
                os._exit(3)
    log("DONE")
    while True:
        time.sleep(1)


# --------------------------------------------------------------------------- the parent

@dataclass
class Trial:
    kind: str
    scenario: str
    consistent: bool = False
    lost: int = 0
    failed_reopen: bool = False
    recovery_s: Optional[float] = None
    idle: bool = False  # the kill came after the child's workload had finished
    detail: str = ""


def _events(log_path: Path) -> list[list[str]]:
    try:
        text = log_path.read_text()
    except FileNotFoundError:
        return []
    return [line.split(" ", 2) for line in text.splitlines() if line]


def _spawn(args: list[str], stderr_path: Path) -> subprocess.Popen:
    # stderr goes to a file: orphaned pool workers keep their copy of it open
    with open(stderr_path, "wb") as err:
        return subprocess.Popen([sys.executable, str(HERE), "--child", *args], stdout=subprocess.PIPE,
                                stderr=err, start_new_session=True, text=True)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the child's own session: it and its pool workers


def kill_child_at_random(scenario: str, kind: str, workdir: Path, seed: int, extra: list[str] = (),
                         max_delay: float = 0.3) -> list[list[str]]:
    """Run a child in ``workdir`` (map in ``workdir/map``), SIGKILL it (and its group) at a random instant
    after it is ready; returns its event log. Raises if the child failed on its own."""
    rng = random.Random(seed)
    err_path = workdir / "stderr"
    proc = _spawn([scenario, kind, str(workdir / "map"), str(workdir / "log"), str(seed), *extra], err_path)
    try:
        if proc.stdout.readline().strip() != "READY":
            proc.wait()
            raise RuntimeError(f"child failed before READY: {err_path.read_text()[-2000:]}")
        time.sleep(rng.uniform(0, max_delay))
        _kill_group(proc)
        proc.wait()
        if proc.returncode != -signal.SIGKILL:
            raise RuntimeError(f"child exited with {proc.returncode}: {err_path.read_text()[-2000:]}")
    finally:
        _kill_group(proc)
        proc.stdout.close()
    return _events(workdir / "log")


def run_trial(kind: str, scenario: str, seed: int, workdir: Path) -> Trial:
    trial = Trial(kind, scenario)
    rng = random.Random(seed)
    path, log_path = workdir / "map", workdir / "log"
    err_path = workdir / "stderr"
    proc = _spawn([scenario, kind, str(path), str(log_path), str(seed)], err_path)
    orphan_workers = False
    try:
        if proc.stdout.readline().strip() != "READY":
            proc.wait()
            trial.detail = f"child failed before READY: {err_path.read_text()[-2000:]}"
            return trial
        time.sleep(rng.uniform(0, 0.02) if rng.random() < 0.4 else rng.uniform(0, 0.3))
        if scenario == "indexable" and rng.random() < 0.5:
            os.kill(proc.pid, signal.SIGKILL)  # the main process only: its pool workers live on
            orphan_workers = True
        else:
            _kill_group(proc)
        proc.wait()
        stderr = err_path.read_text()
        if proc.returncode != -signal.SIGKILL:
            trial.detail = f"child exited with {proc.returncode} before the kill: {stderr[-2000:]}"
            return trial
        events = _events(log_path)
        trial.idle = any(ev[0] == "DONE" for ev in events)
        check_after_crash(trial, kind, scenario, path, events)
    finally:
        if orphan_workers or proc.poll() is None:
            _kill_group(proc)
        proc.stdout.close()
    return trial


def expected_state(events: list[list[str]]) -> tuple:
    """From an extend log: (length of the last returned extend or None if none, length if the batch in
    flight was published, or None)."""
    committed, intent = None, None
    for ev in events:
        if ev[0] == "E":
            raise Mismatch(f"the child saw: {ev[1:]}")
        if ev[0] == "C":
            committed = int(ev[1])
        elif ev[0] == "I":
            intent = int(ev[1])
    in_flight = intent if intent is not None and (committed is None or intent > committed) else None
    return committed, in_flight


def check_after_crash(trial: Trial, kind: str, scenario: str, path: Path, events: list[list[str]]) -> None:
    cls = CLASSES[kind]
    variants: dict[int, int] = {}
    free = None
    try:
        if scenario == "setitem":
            pending = None
            for ev in events:
                if ev[0] == "W":
                    pending = (int(ev[1]), int(ev[2]))
                elif ev[0] == "D":
                    variants[pending[0]] = pending[1]
                    pending = None
            free = pending[0] if pending else None
            committed, in_flight = 400, None
        else:
            committed, in_flight = expected_state(events)
        try:
            m = cls(path)
        except mmap_ninja.NotAMapError:
            if committed is None:  # killed while creating the map: no extend returned, nothing to lose
                trial.consistent = True
                trial.detail = "not created"
                return
            trial.failed_reopen = True
            raise
        except Exception:
            trial.failed_reopen = True
            raise
        length = len(m)
        allowed = {committed or 0, in_flight} - {None}
        if length not in allowed:
            trial.lost = max(0, (committed or 0) - length)
            raise Mismatch(f"length {length} after the kill, expected one of {sorted(allowed)}")
        verify(kind, m, length, variants, free)
        m.close()
        t0 = time.perf_counter()
        try:
            w = cls(path, mode="r+", lock_timeout=5)
        except Exception:
            trial.failed_reopen = True
            raise
        trial.recovery_s = time.perf_counter() - t0
        if not committed_bytes_ok(kind, path, length):
            raise Mismatch("the writer did not cut the files back to the committed bytes")
        if free is not None:  # repair the torn sample, then everything must read exactly
            w[free] = sample(kind, free, variants.get(free, 0))
        k = 1 + (length % 37)
        w.extend(batch(kind, length, length + k))
        w.close()
        with cls(path) as m:
            verify(kind, m, length + k, variants)
        trial.consistent = True
    except Exception as e:  # the trial's verdict, reported in the table
        trial.detail = f"{type(e).__name__}: {e}"


def run_many(kinds, trials_per_kind: int, seed: int, jobs: int = 2, scenarios=SCENARIOS,
             progress: bool = False) -> list[Trial]:
    plan = [(kind, scenarios[t % len(scenarios)], zlib.crc32(f"{seed}/{kind}/{t}".encode()))
            for kind in kinds for t in range(trials_per_kind)]
    root = Path(tempfile.mkdtemp(prefix="crash_torture_"))

    def one(item):
        idx, (kind, scenario, s) = item
        workdir = root / f"{idx}"
        workdir.mkdir()
        trial = run_trial(kind, scenario, s, workdir)
        if trial.consistent:
            _rmtree(workdir)
        elif progress:
            print(f"  FAILED {kind}/{scenario} (seed {s}, {workdir}): {trial.detail}", file=sys.stderr)
        return trial

    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(one, enumerate(plan)))
    if all(t.consistent for t in results):
        _rmtree(root)
    return results


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def table(results: list[Trial]) -> str:
    rows = [("kind", "trials", "consistent", "samples lost", "failed reopens", "median recovery (ms)")]
    groups: dict[str, list[Trial]] = {}
    for t in results:
        groups.setdefault(t.kind, []).append(t)
        groups.setdefault(f"  {t.kind}/{t.scenario}", []).append(t)
    order = sorted(groups, key=lambda g: (g.strip().split("/")[0], g.startswith("  "), g))
    for name in order:
        ts = groups[name]
        rec = [t.recovery_s for t in ts if t.recovery_s is not None]
        rows.append((name, str(len(ts)), str(sum(t.consistent for t in ts)), str(sum(t.lost for t in ts)),
                     str(sum(t.failed_reopen for t in ts)),
                     f"{statistics.median(rec) * 1e3:.2f}" if rec else "-"))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in
                               enumerate(zip(row, widths))) for row in rows)


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--child":
        scenario, kind, path, log_path, seed = argv[1:6]
        if "--record-fsync" in argv:
            record_fsyncs(Path(argv[argv.index("--record-fsync") + 1]))
        child(scenario, kind, Path(path), Path(log_path), int(seed), durable="--durable" in argv)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100, help="trials per kind")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="trials run at once")
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    t0 = time.perf_counter()
    results = run_many(kinds, args.trials, args.seed, args.jobs, tuple(args.scenarios.split(",")), progress=True)
    print(table(results))
    print(f"{len(results)} trials in {time.perf_counter() - t0:.1f} s; "
          f"{sum(t.idle for t in results)} kills came after the workload had finished")
    ok = all(t.consistent and not t.lost and not t.failed_reopen for t in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
