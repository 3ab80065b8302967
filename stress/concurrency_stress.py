"""One writer extends a map while reader processes open, read, refresh() and check every visible sample.

Usage::

    python stress/concurrency_stress.py --seconds 30 --readers 8 --kinds strings,ragged,numpy

Processes are started with the ``spawn`` method (fresh interpreters). Samples are the index-derived ones of
``crash_torture.sample``. Each reader loops: open the map read-only, check a random subset of the samples
and the newest ones, then ``refresh()`` a few times, checking every sample that appeared. It counts failed
opens and wrong samples (both must be 0) and how many refreshes saw new samples.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import crash_torture as ct


def _same(kind: str, got, i: int) -> bool:
    want = ct.sample(kind, i)
    if kind == "strings":
        return got == want
    got = np.asarray(got)
    return got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()


def writer(kind: str, path: str, seconds: float, started, result) -> None:
    cls = ct.CLASSES[kind]
    rng = random.Random(1)
    with cls(path, mode="r+") as m:
        started.set()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            start = len(m)
            m.extend(ct.batch(kind, start, start + rng.randrange(1, 40)))
        result.put(("writer", len(m)))


def reader(kind: str, path: str, stop, result, seed: int) -> None:
    cls = ct.CLASSES[kind]
    rng = random.Random(seed)
    stats = {"opens": 0, "failed_opens": 0, "checked": 0, "wrong": 0, "growing_refreshes": 0, "errors": []}

    def check(m, i):
        stats["checked"] += 1
        if not _same(kind, m[i], i):
            stats["wrong"] += 1
            if len(stats["errors"]) < 5:
                stats["errors"].append(f"sample {i} of {len(m)} is wrong")

    while True:
        last_round = stop.is_set()
        try:
            m = cls(path)
        except Exception as e:  # counted, and reported
            stats["failed_opens"] += 1
            if len(stats["errors"]) < 5:
                stats["errors"].append(f"open: {type(e).__name__}: {e}")
            continue
        stats["opens"] += 1
        try:
            n = len(m)
            for i in rng.sample(range(n), min(n, 50)):
                check(m, i)
            for i in range(max(0, n - 20), n):
                check(m, i)
            for _ in range(3):
                before = len(m)
                m.refresh()
                if len(m) < before:
                    stats["wrong"] += 1
                    stats["errors"].append(f"refresh shrank the map from {before} to {len(m)}")
                if len(m) > before:
                    stats["growing_refreshes"] += 1
                for i in range(before, len(m)):
                    check(m, i)
            if last_round:
                stats["final_length"] = len(m)
        except Exception as e:
            stats["wrong"] += 1
            if len(stats["errors"]) < 5:
                stats["errors"].append(f"read: {type(e).__name__}: {e}")
        finally:
            m.close()
        if last_round:
            break
    result.put(("reader", stats))


def run(kind: str, seconds: float, readers: int, workdir: Path) -> dict:
    """Build a small map, run the writer and the readers on it, return the merged statistics."""
    path = workdir / kind
    ct.CLASSES[kind].from_generator(path, ct.samples(kind, 0, 10), batch_size=5).close()
    ctx = mp.get_context("spawn")
    started, stop, result = ctx.Event(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=reader, args=(kind, str(path), stop, result, k)) for k in range(readers)]
    w = ctx.Process(target=writer, args=(kind, str(path), seconds, started, result))
    w.start()
    for p in procs:
        p.start()
    outputs = [result.get(timeout=seconds + 120)]  # the writer's final length comes first
    stop.set()
    outputs += [result.get(timeout=120) for _ in procs]
    for p in [*procs, w]:
        p.join(timeout=60)
    final = next(v for who, v in outputs if who == "writer")
    merged = {"kind": kind, "final_length": final, "readers": readers, "opens": 0, "failed_opens": 0,
              "checked": 0, "wrong": 0, "growing_refreshes": 0, "errors": [], "reader_final_lengths": []}
    for who, s in outputs:
        if who != "reader":
            continue
        for key in ("opens", "failed_opens", "checked", "wrong", "growing_refreshes"):
            merged[key] += s[key]
        merged["errors"] += s["errors"]
        merged["reader_final_lengths"].append(s.get("final_length"))
    merged["exit_codes"] = [p.exitcode for p in [*procs, w]]
    return merged


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--kinds", default=",".join(ct.KINDS))
    args = parser.parse_args(argv)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        print("kind     samples written  opens  failed opens  samples checked  wrong  refreshes that grew")
        for kind in args.kinds.split(","):
            s = run(kind, args.seconds, args.readers, Path(tmp))
            print(f"{kind:8} {s['final_length']:15} {s['opens']:6} {s['failed_opens']:13} {s['checked']:16} "
                  f"{s['wrong']:6} {s['growing_refreshes']:20}")
            for e in s["errors"]:
                print("   ", e)
            ok &= not s["failed_opens"] and not s["wrong"] and s["reader_final_lengths"] == \
                [s["final_length"]] * args.readers
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
