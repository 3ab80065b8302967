"""The per-item pass (``for x in m``) beside pyarrow in ONE process, alternating, in CPU time: issue 21's iteration
rows measured so that the machine's load hits both sides alike (on a busy 2-core machine the separate processes of
``bench_iteration_ab.py`` move by 10-30 % between runs).

    python -m benchmarks --only iteration --data DATA --no-upstream --work WORK --keep   # builds WORK's maps once
    python benchmarks/bench_iteration_ab.py --work WORK --kinds tokens --short-strings  # adds WORK's short strings
    PYTHONPATH=src python benchmarks/bench_iteration_cpu.py --work WORK [--passes 15]

Each pass is the one `_peers.task_iterate` times (the same functions: every item copied into one preallocated buffer,
strings summing ``len()``; pyarrow record batch by record batch with the offsets as a Python list). Both sides are
read once untimed first (and must give the same characters), then ``--passes`` times each, ours and pyarrow
alternating (the first of each pair switching every round). Printed: per kind the median and the minimum of the CPU
time of a pass (``time.process_time``) in µs per item, and ours / pyarrow (< 1: ours takes less CPU; target <= 1).

Kinds: ``tokens`` (WORK/tokens_ours beside WORK/peer_tokens.arrow), ``strings`` (the text corpus: text_ours beside
peer_strings.arrow), ``short_ascii`` and ``short_utf8`` (200,000 strings of mean length 32 bytes, ASCII, or with
characters of one to four UTF-8 bytes, that ``bench_iteration_ab.py --short-strings`` builds; their Arrow files are
written here from the maps, 65,536 rows a record batch).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

HERE = Path(__file__).resolve().parent
KINDS = {"tokens": ("tokens_ours", "peer_tokens.arrow"), "strings": ("text_ours", "peer_strings.arrow"),
         "short_ascii": ("short_strings_32", "short_strings_32.arrow"),
         "short_utf8": ("short_utf8_32", "short_utf8_32.arrow")}


def _arrow_file_of_strings(ours: Path, arrow: Path) -> None:
    """Write the strings of our map ``ours`` as an Arrow IPC file of ``large_string`` (65,536 rows a batch)."""
    import pyarrow as pa
    import pyarrow.ipc

    from mmap_ninja import StringsMmap

    table = pa.table({"text": pa.array(list(StringsMmap(ours, mode="r")), type=pa.large_string())})
    with pa.ipc.new_file(str(arrow), table.schema) as writer:
        for batch in table.to_batches(max_chunksize=65_536):
            writer.write_batch(batch)


def measure(kind: str, work: Path, passes: int) -> Optional[tuple[list[float], list[float], int]]:
    """CPU seconds of each pass of ours and of pyarrow over ``kind``, and the number of items; None if the files of
    ``kind`` are not in ``work``."""
    import pyarrow as pa
    import pyarrow.ipc

    from benchmarks._peers import _arrow_pass, _ours_pass, open_ours
    from benchmarks.peers import map_facts

    ours_name, arrow_name = KINDS[kind]
    ours_path, arrow_path = work / ours_name, work / arrow_name
    if not (ours_path / "header.json").exists():
        return None
    if not arrow_path.exists():
        _arrow_file_of_strings(ours_path, arrow_path)
    dtype, largest, count = map_facts(ours_path)
    buf = np.zeros(largest, dtype=np.dtype(dtype))
    pass_kind = "tokens" if kind == "tokens" else "strings"
    m = open_ours("ragged" if kind == "tokens" else "strings", str(ours_path))
    reader = pa.ipc.open_file(pa.memory_map(str(arrow_path), "r"))
    sides: list[Callable[[], int]] = [_ours_pass(m, pass_kind, buf), _arrow_pass(reader, pass_kind, buf)]
    read = [side() for side in sides]  # untimed: the pages read in, and both sides must give the same
    if read[0] != read[1]:
        raise SystemExit(f"{kind}: ours and pyarrow read different characters ({read[0]} and {read[1]})")
    times: list[list[float]] = [[], []]
    for round_ in range(passes):
        for side in ((0, 1) if round_ % 2 == 0 else (1, 0)):
            start = time.process_time()
            sides[side]()
            times[side].append(time.process_time() - start)
    return times[0], times[1], count


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="the --work folder of a kept benchmarks run")
    parser.add_argument("--passes", type=int, default=15, help="timed passes of each side per kind")
    parser.add_argument("--kinds", default=",".join(KINDS))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    import mmap_ninja

    print(f"# bench_iteration_cpu: {args.passes} passes a side, alternating in one process; load average "
          f"{os.getloadavg()[0]:.1f} at the start, {os.cpu_count()} CPUs; mmap_ninja from "
          f"{Path(mmap_ninja.__file__).parent}")
    print("\nCPU time of a pass, µs per item\n")
    print("| kind | items | ours median | pyarrow median | ours / pyarrow (median) | ours min | pyarrow min | "
          "ours / pyarrow (min) |")
    print("|:--|--:|--:|--:|--:|--:|--:|--:|")
    for kind in [k for k in args.kinds.split(",") if k]:
        result = measure(kind, args.work, args.passes)
        if result is None:
            print(f"| {kind} | not in {args.work} | | | | | | |")
            continue
        ours, arrow, count = result
        med = [statistics.median(ours), statistics.median(arrow)]
        low = [min(ours), min(arrow)]
        us = [seconds / max(1, count) * 1e6 for seconds in (*med, *low)]
        print(f"| {kind} | {count:,} | {us[0]:.3g} | {us[1]:.3g} | {med[0] / med[1]:.2f} | {us[2]:.3g} | {us[3]:.3g} | "
              f"{low[0] / low[1]:.2f} |", flush=True)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
