"""The ``mmap-ninja`` command (also ``python -m mmap_ninja``).

Subcommands:

- ``mmap-ninja info PATH [--json]``: what a map is (kind, length, dtype, codec, checksums, format version,
  metadata, bytes per column), from its header alone: instant whatever its size.
- ``mmap-ninja verify PATH [--deep] [--json]``: `mmap_ninja.verify`; exit 0 when sound, 1 when damaged (saying
  where), 3 when PATH holds no map.
- ``mmap-ninja head PATH [-n N]``: the first samples, shortened to fit a terminal line.
- ``mmap-ninja convert SRC DST``: copy a map written by mmap_ninja 0.9.0 into the current format (see
  `mmap_ninja.convert.convert`), or re-encode a map with ``--codec``.

A subcommand is a function ``add_<name>(subparsers)`` that declares its arguments and sets ``handler`` to a
function of the parsed arguments returning the exit status; `COMMANDS` lists them. Errors end the command with
one line on stderr and status 1 (2 for a wrong command line, as argparse does; 130 when interrupted).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, Callable, TextIO

PROG = "mmap-ninja"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _batch_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


# ---------------------------------------------------------------------------------------------- convert


def add_convert(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "convert", help="copy a 0.9.0 map into the current format, or re-encode a map with --codec",
        description="Copy the map that mmap_ninja 0.9.0 wrote in SRC into a new map in the current format at DST, "
                    "or (with --codec) a strings or ragged map into one compressed with that codec. Every sample "
                    "is read back and compared with the source before DST appears; SRC is only read.")
    parser.add_argument("src", metavar="SRC", help="the folder of the 0.9.0 map")
    parser.add_argument("dst", metavar="DST", help="where to write the new map (must not exist)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--batch-size", type=_batch_size, default=None, metavar="N",
                        help="samples held in memory at a time (default: as many as fit in 64 MiB, at most 10,000)")
    parser.add_argument("--codec", choices=["zstd", "lz4", "none"], default=None,
                        help="compress every sample with this codec (none: store uncompressed)")
    parser.set_defaults(handler=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from mmap_ninja.convert import convert

    done = convert(args.src, args.dst, verbose=not args.quiet, batch_size=args.batch_size, codec=args.codec)
    print(f"converted {args.src} ({done.kind}, {done.length} samples) into {done.path}")
    return 0


# ---------------------------------------------------------------------------------------------- info


def add_info(subparsers: Any) -> None:
    parser = subparsers.add_parser("info", help="describe a map from its header (instant at any size)",
                                   description="Print a map's kind, length, dtype, codec, checksums, format "
                                               "version, metadata and the bytes of each column, from its header.")
    parser.add_argument("path", metavar="PATH")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run_info)


def describe(path: str) -> dict[str, Any]:
    """What `info` prints, as a dict (no per-sample work)."""
    from mmap_ninja.format import read_header
    from mmap_ninja.legacy import is_legacy_map, open_legacy
    from mmap_ninja.maps import KINDS
    from mmap_ninja.storage import COLUMN_SUFFIX, absolute

    directory = absolute(path)
    if is_legacy_map(directory):
        reader = open_legacy(directory)
        return {"path": str(directory), "kind": reader.kind, "format": "mmap_ninja 0.9.0 (read-only; convert it)",
                "length": len(reader), "dtype": str(getattr(reader, "dtype", "")) or None}
    header = read_header(directory)
    layout = KINDS[header.kind].layout if header.kind in KINDS else None
    attrs = header.attrs
    info: dict[str, Any] = {
        "path": str(directory), "kind": header.kind, "format": f"{header.version[0]}.{header.version[1]}",
        "length": _count(layout, header.lengths, attrs),
        "commit": header.commit, "unfinished build": header.building,
        "requires": list(header.requires), "checksums": header.checksums or "none",
    }
    for key in ("dtype", "sample_shape", "order", "ndims"):
        if attrs.get(key) is not None:
            info[key] = attrs[key]
    if attrs.get("codec"):
        info["codec"] = attrs["codec"]
    info["metadata"] = header.metadata
    info["bytes"] = {name: os.path.getsize(directory / (name + COLUMN_SUFFIX)) for name in header.columns}
    return info


def _count(layout: Any, lengths: dict[str, int], attrs: dict[str, Any]) -> Any:
    """The number of samples the header commits, or None when the kind is unknown or the header lacks a column
    (`verify` says what is wrong)."""
    try:
        return None if layout is None else layout.count(lengths, attrs)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def run_info(args: argparse.Namespace) -> int:
    info = describe(args.path)
    if args.json:
        print(json.dumps(info))
        return 0
    for key, value in info.items():
        if key == "bytes":
            value = ", ".join(f"{name} {size:,}" for name, size in value.items())
        elif isinstance(value, (dict, list)):
            value = json.dumps(value)
        print(f"{key + ':':<18}{value}")
    return 0


# ---------------------------------------------------------------------------------------------- verify

NOT_A_MAP = 3


def add_verify(subparsers: Any) -> None:
    parser = subparsers.add_parser("verify", help="check a map (exit 0 sound, 1 damaged, 3 not a map)",
                                   description="Check a map's header, files and index; with --deep also every "
                                               "checksum. Exit status 0 when sound, 1 when damaged, 3 when PATH "
                                               "holds no map.")
    parser.add_argument("path", metavar="PATH")
    parser.add_argument("--deep", action="store_true", help="re-hash every committed byte")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    from mmap_ninja.errors import NotAMapError
    from mmap_ninja.verify import verify

    try:
        report = verify(args.path, deep=args.deep)
    except NotAMapError as error:
        print(f"{PROG} verify: not a map: {_one_line(str(error))}", file=sys.stderr)
        return NOT_A_MAP
    if args.json:
        print(json.dumps({"path": str(report.path), "ok": report.ok, "kind": report.kind, "length": report.length,
                          "deep": report.deep, "problems": report.problems, "notes": report.notes,
                          "bytes_hashed": report.bytes_hashed}))
    else:
        for note in report.notes:
            print(f"note: {note}")
        for problem in report.problems:
            print(f"damaged: {problem}")
        what = "every checksum" if report.deep else "structure (use --deep for every checksum)"
        print(f"{report.path}: {'sound' if report.ok else 'DAMAGED'} ({report.kind}, {report.length} samples; "
              f"checked {what})")
    return 0 if report.ok else 1


# ---------------------------------------------------------------------------------------------- head


def add_head(subparsers: Any) -> None:
    parser = subparsers.add_parser("head", help="show the first samples", description="Print the first samples of "
                                   "a map, one per line, shortened to fit a terminal.")
    parser.add_argument("path", metavar="PATH")
    parser.add_argument("-n", type=_batch_size, default=5, metavar="N", help="how many samples (default 5)")
    parser.set_defaults(handler=run_head)


def _short(sample: Any, width: int) -> str:
    import numpy as np

    if isinstance(sample, str):
        text = repr(sample)
    elif isinstance(sample, np.ndarray):
        body = np.array2string(sample.reshape(-1)[:32], threshold=32, edgeitems=4, max_line_width=10**6)
        text = f"{sample.dtype}{list(sample.shape)} {' '.join(body.split())}"
    else:
        text = repr(sample)
    return text if len(text) <= width else text[:width - 1] + "…"


def run_head(args: argparse.Namespace) -> int:
    from mmap_ninja.generic import open_existing

    m = open_existing(args.path, mode="r")
    width = max(40, os.get_terminal_size().columns if sys.stdout.isatty() else 100)
    for i in range(min(args.n, len(m))):
        prefix = f"[{i}] "
        print(prefix + _short(m[i], width - len(prefix)))
    print(f"({len(m):,} samples)")
    return 0


COMMANDS: list[Callable[[Any], None]] = [add_info, add_verify, add_head, add_convert]


# ---------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    from mmap_ninja import __version__

    parser = argparse.ArgumentParser(prog=PROG, description="Tools for mmap_ninja maps.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--traceback", action="store_true", help="on an error, show the full traceback")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with status 2 and a usage message on a wrong command line
    where = f"{PROG} {args.command}"

    def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                     file: TextIO | None = None, line: str | None = None) -> None:
        print(f"{where}: warning: {_one_line(str(message))}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        try:
            status: int = args.handler(args)
            return status
        except KeyboardInterrupt:
            print(f"{where}: interrupted", file=sys.stderr)
            return 130
        except Exception as error:
            if args.traceback:
                raise
            message = _one_line(str(error)) or type(error).__name__
            print(f"{where}: error: {message}", file=sys.stderr)
            return 1
