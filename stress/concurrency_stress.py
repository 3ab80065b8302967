"""Writers extend a map while reader processes open, read, refresh() and check every sample they see.

Usage::

    python stress/concurrency_stress.py --seconds 30 --readers 8 --kinds strings,ragged,numpy
    python stress/concurrency_stress.py --appenders 4 --readers 8 --seconds 30

Processes are started with the ``spawn`` method (fresh interpreters).

Without ``--appenders`` (or with ``--appenders 0``) one writer extends the map with the index-derived samples
of ``crash_torture.sample``. Each reader loops: open the map read-only, check a random subset of the samples
and the newest ones, then ``refresh()`` a few times, checking every sample that appeared. It counts failed
opens and wrong samples (both must be 0) and how many refreshes saw new samples.

With ``--appenders N`` N processes append to the map at once, each its own numbered batches of 1 to 39
samples (one in five as a transaction of single appends) whose samples encode (writer, batch number,
position in batch, batch size); see ``crash_torture.tagged_sample``. Readers check each sample they read
against its encoded identity, that the first and last samples of its batch are there in the same snapshot,
and that every snapshot ends on a batch boundary. At the end the whole map is read: 0 lost (every batch an
appender saw return is there), 0 duplicated, 0 torn samples (wrong content, or outside a whole contiguous
batch), each appender's batches in order.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import crash_torture as ct
import numpy as np

READER_STATS = ("opens", "failed_opens", "checked", "wrong", "growing_refreshes")
# Waits on other processes bound a hang only: on a loaded machine a spawned interpreter may need minutes to start.
HANG_SECONDS = ct.HANG_SECONDS


def _wait_for_readers(ready: list[Any]) -> None:
    """Return once every reader has started (imports done, about to open the map)."""
    for event in ready:
        if not event.wait(HANG_SECONDS):
            raise RuntimeError(f"a reader did not start within {HANG_SECONDS} s")


def _writing(deadline: float, grew: list[Any]) -> bool:
    """Whether a writer goes on: until ``deadline`` and, past it, until every reader saw the map grow in a refresh
    (so that the readers ran while it was written, however the machine's load spread the processes' turns; the
    bound of `HANG_SECONDS` only ends a hang)."""
    now = time.monotonic()
    return now < deadline or (now < deadline + HANG_SECONDS and not all(event.is_set() for event in grew))


def _same(kind: str, got: Any, i: int) -> bool:
    want = ct.sample(kind, i)
    if kind == "strings":
        return bool(got == want)
    got = np.asarray(got)
    return bool(got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes())


def writer(kind: str, path: str, seconds: float, started: Any, result: Any, ready: list[Any],
           grew: list[Any]) -> None:
    """The single writer: extends with the index-derived samples for ``seconds`` once every reader has started,
    and on until every reader saw the map grow."""
    cls = ct.CLASSES[kind]
    rng = random.Random(1)
    with cls(path) as m:
        started.set()
        _wait_for_readers(ready)
        deadline = time.monotonic() + seconds
        while _writing(deadline, grew):
            start = len(m)
            m.extend(ct.batch(kind, start, start + rng.randrange(1, 40)))
        result.put(("writer", len(m)))


def appender(kind: str, path: str, writer_id: int, seconds: float, result: Any, ready: list[Any],
             grew: list[Any]) -> None:
    """One of several appenders: batches 0, 1, 2, ... of ``writer_id`` for ``seconds`` once every reader has
    started, and on until every reader saw the map grow; reports their sizes."""
    cls = ct.CLASSES[kind]
    rng = random.Random(100 + writer_id)
    sizes: list[int] = []
    error: str | None = None
    try:
        with cls(path, lock_timeout=HANG_SECONDS) as m:  # the others hold the lock in turns, however slowly
            _wait_for_readers(ready)
            deadline = time.monotonic() + seconds
            while _writing(deadline, grew):
                size = rng.randrange(1, 40)
                items = ct.tagged_batch(kind, writer_id, len(sizes), size)
                if rng.random() < 0.2:
                    with m.transaction():
                        for item in items:
                            m.append(item)
                else:
                    m.extend(items)
                sizes.append(size)
    except Exception as e:  # reported, and fails the run
        error = f"appender {writer_id}: {type(e).__name__}: {e}"
    result.put(("appender", writer_id, sizes, error))


class _Checker:
    """How a reader checks one sample ``i`` of a snapshot ``m``; counts into ``stats``."""

    def __init__(self, kind: str, tagged: bool, stats: dict[str, Any]):
        self.kind, self.tagged, self.stats = kind, tagged, stats

    def fail(self, message: str) -> None:
        self.stats["wrong"] += 1
        if len(self.stats["errors"]) < 5:
            self.stats["errors"].append(message)

    def sample(self, m: Any, i: int) -> None:
        self.stats["checked"] += 1
        if not self.tagged:
            if not _same(self.kind, m[i], i):
                self.fail(f"sample {i} of {len(m)} is wrong")
            return
        ident = ct.identity(self.kind, m[i])
        if ident is None:
            self.fail(f"sample {i} of {len(m)} is not what its tag says")
            return
        w, b, p, size = ident
        first, last = i - p, i - p + size - 1
        if first < 0 or last >= len(m) or ct.identity(self.kind, m[first]) != (w, b, 0, size) or \
                ct.identity(self.kind, m[last]) != (w, b, size - 1, size):
            self.fail(f"sample {i} of {len(m)}: batch {b} of writer {w} is not whole in this snapshot")

    def snapshot_end(self, m: Any) -> None:
        """A snapshot ends on a batch boundary (nothing of a batch is visible before all of it is)."""
        n = len(m)
        if self.tagged and n:
            ident = ct.identity(self.kind, m[n - 1])
            if ident is None or ident[2] != ident[3] - 1:
                self.fail(f"the snapshot of length {n} ends inside a batch ({ident})")


def reader(kind: str, path: str, stop: Any, result: Any, seed: int, tagged: bool = False, ready: Any = None,
           grew: Any = None) -> None:
    """Open, check and refresh the map until ``stop`` is set (then one last round); sets ``ready`` on starting
    and ``grew`` once a refresh saw the map grow."""
    if ready is not None:
        ready.set()
    cls = ct.CLASSES[kind]
    rng = random.Random(seed)
    stats: dict[str, Any] = {"opens": 0, "failed_opens": 0, "checked": 0, "wrong": 0, "growing_refreshes": 0,
                             "errors": []}
    check = _Checker(kind, tagged, stats)
    while True:
        last_round = stop.is_set()
        try:
            m = cls(path, mode="r")
        except Exception as e:  # counted, and reported
            stats["failed_opens"] += 1
            if len(stats["errors"]) < 5:
                stats["errors"].append(f"open: {type(e).__name__}: {e}")
            continue
        stats["opens"] += 1
        try:
            n = len(m)
            check.snapshot_end(m)
            for i in rng.sample(range(n), min(n, 50)):
                check.sample(m, i)
            for i in range(max(0, n - 20), n):
                check.sample(m, i)
            for _ in range(3):
                before = len(m)
                m.refresh()
                if len(m) < before:
                    check.fail(f"refresh shrank the map from {before} to {len(m)}")
                if len(m) > before:
                    stats["growing_refreshes"] += 1
                    if grew is not None:
                        grew.set()
                    check.snapshot_end(m)
                for i in range(before, len(m)):
                    check.sample(m, i)
            if last_round:
                stats["final_length"] = len(m)
        except Exception as e:
            check.fail(f"read: {type(e).__name__}: {e}")
        finally:
            m.close()
        if last_round:
            break
    result.put(("reader", stats))


def _merge_readers(outputs: list[Any], merged: dict[str, Any]) -> None:
    merged.update({key: 0 for key in READER_STATS})
    merged["errors"], merged["reader_final_lengths"] = [], []
    for output in outputs:
        if output[0] != "reader":
            continue
        s = output[1]
        for key in READER_STATS:
            merged[key] += s[key]
        merged["errors"] += s["errors"]
        merged["reader_final_lengths"].append(s.get("final_length"))


def run(kind: str, seconds: float, readers: int, workdir: Path) -> dict[str, Any]:
    """Build a small map, run the single writer and the readers on it, return the merged statistics."""
    path = workdir / kind
    ct.CLASSES[kind].from_generator(path, ct.samples(kind, 0, 10), batch_size=5).close()
    ctx = mp.get_context("spawn")
    started, stop, result = ctx.Event(), ctx.Event(), ctx.Queue()
    ready, grew = [ctx.Event() for _ in range(readers)], [ctx.Event() for _ in range(readers)]
    procs = [ctx.Process(target=reader, args=(kind, str(path), stop, result, k, False, ready[k], grew[k]))
             for k in range(readers)]
    w = ctx.Process(target=writer, args=(kind, str(path), seconds, started, result, ready, grew))
    w.start()
    for p in procs:
        p.start()
    outputs = [result.get(timeout=seconds + 3 * HANG_SECONDS)]  # the writer's final length comes first
    stop.set()
    outputs += [result.get(timeout=HANG_SECONDS) for _ in procs]
    for p in [*procs, w]:
        p.join(timeout=HANG_SECONDS)
    final = next(v[1] for v in outputs if v[0] == "writer")
    merged: dict[str, Any] = {"kind": kind, "final_length": final, "readers": readers}
    _merge_readers(outputs, merged)
    merged["exit_codes"] = [p.exitcode for p in [*procs, w]]
    return merged


def run_appenders(kind: str, seconds: float, appenders: int, readers: int, workdir: Path) -> dict[str, Any]:
    """Start from a small map of tagged batches, run ``appenders`` appender and ``readers`` reader processes,
    then audit the whole map; returns the merged statistics (see `ok`)."""
    path = workdir / kind
    prebuilt = {b: 5 for b in range(2)}
    items = [s for b, size in prebuilt.items() for s in ct.tagged_batch(kind, ct.PREBUILT_WRITER, b, size)]
    ct.CLASSES[kind].from_generator(path, items, batch_size=5).close()
    ctx = mp.get_context("spawn")
    stop, result = ctx.Event(), ctx.Queue()
    ready, grew = [ctx.Event() for _ in range(readers)], [ctx.Event() for _ in range(readers)]
    procs = [ctx.Process(target=reader, args=(kind, str(path), stop, result, k, True, ready[k], grew[k]))
             for k in range(readers)]
    writers = [ctx.Process(target=appender, args=(kind, str(path), w, seconds, result, ready, grew))
               for w in range(appenders)]
    for p in [*writers, *procs]:
        p.start()
    outputs = [result.get(timeout=seconds + 3 * HANG_SECONDS) for _ in writers]  # appenders finish first
    stop.set()
    outputs += [result.get(timeout=HANG_SECONDS) for _ in procs]
    for p in [*procs, *writers]:
        p.join(timeout=HANG_SECONDS)
    committed: dict[int, dict[int, int]] = {ct.PREBUILT_WRITER: prebuilt}
    merged: dict[str, Any] = {"kind": kind, "appenders": appenders, "readers": readers}
    _merge_readers(outputs, merged)
    for output in outputs:
        if output[0] == "appender":
            _, w, sizes, error = output
            committed[w] = dict(enumerate(sizes))
            if error:
                merged["errors"].append(error)
                merged["wrong"] += 1
    t0 = time.perf_counter()
    with ct.CLASSES[kind](path, mode="r") as m:
        merged["final_length"] = len(m)
        scan = ct.scan_tagged(kind, m)
    audit = ct.audit(scan, committed, {})
    merged.update(batches=sum(len(c) for w, c in committed.items() if w != ct.PREBUILT_WRITER),
                  lost=audit.lost, duplicated=audit.duplicated, torn=scan.torn, unexpected=audit.unexpected,
                  out_of_order=audit.out_of_order, audit_s=time.perf_counter() - t0,
                  exit_codes=[p.exitcode for p in [*procs, *writers]])
    merged["errors"] += scan.notes + audit.notes
    return merged


def ok(stats: dict[str, Any]) -> bool:
    """Every check of a run (either kind) passed."""
    clean = not stats["failed_opens"] and not stats["wrong"] and set(stats["exit_codes"]) == {0} and \
        stats["reader_final_lengths"] == [stats["final_length"]] * stats["readers"]
    if "appenders" in stats:
        clean = clean and not (stats["lost"] or stats["duplicated"] or stats["torn"] or stats["unexpected"]
                               or stats["out_of_order"])
    return bool(clean)


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in
                               enumerate(zip(row, widths))) for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--appenders", type=int, default=0,
                        help="appender processes (0: the single writer of index-derived samples)")
    parser.add_argument("--kinds", default=",".join(ct.KINDS))
    args = parser.parse_args(argv)
    all_ok = True
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds.split(","):
            if args.appenders:
                s = run_appenders(kind, args.seconds, args.appenders, args.readers, Path(tmp))
            else:
                s = run(kind, args.seconds, args.readers, Path(tmp))
            results.append(s)
            all_ok &= ok(s)
    rows: list[tuple[str, ...]]
    if args.appenders:
        rows = [("kind", "appenders", "readers", "batches committed", "samples", "reader opens", "failed opens",
                 "samples checked", "refreshes that grew", "wrong reads", "lost", "duplicated", "torn",
                 "out of order")]
        rows += [(s["kind"], str(s["appenders"]), str(s["readers"]), str(s["batches"]), str(s["final_length"]),
                  str(s["opens"]), str(s["failed_opens"]), str(s["checked"]), str(s["growing_refreshes"]),
                  str(s["wrong"]), str(s["lost"]), str(s["duplicated"]), str(s["torn"]), str(s["out_of_order"]))
                 for s in results]
    else:
        rows = [("kind", "samples written", "opens", "failed opens", "samples checked", "wrong",
                 "refreshes that grew")]
        rows += [(s["kind"], str(s["final_length"]), str(s["opens"]), str(s["failed_opens"]), str(s["checked"]),
                  str(s["wrong"]), str(s["growing_refreshes"])) for s in results]
    print(_table(rows))
    for s in results:
        for e in s["errors"]:
            print(f"    {s['kind']}: {e}")
    print(f"{args.seconds:g} s per kind; {'all checks passed' if all_ok else 'FAILED'}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
