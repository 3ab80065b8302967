"""The ``mmap-ninja`` command (also ``python -m mmap_ninja``).

Subcommands:

- ``mmap-ninja convert SRC DST``: copy a map written by mmap_ninja 0.9.0 into the current format (see
  `mmap_ninja.convert.convert`).

A subcommand is a function ``add_<name>(subparsers)`` that declares its arguments and sets ``handler`` to a
function of the parsed arguments returning the exit status; `COMMANDS` lists them. Errors end the command with
one line on stderr and status 1 (2 for a wrong command line, as argparse does; 130 when interrupted).
"""

from __future__ import annotations

import argparse
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
        "convert", help="copy a map written by mmap_ninja 0.9.0 into the current format",
        description="Copy the map that mmap_ninja 0.9.0 wrote in SRC into a new map in the current format at DST. "
                    "Every sample is read back and compared with the source before DST appears; SRC is only read.")
    parser.add_argument("src", metavar="SRC", help="the folder of the 0.9.0 map")
    parser.add_argument("dst", metavar="DST", help="where to write the new map (must not exist)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--batch-size", type=_batch_size, default=None, metavar="N",
                        help="samples held in memory at a time (default: as many as fit in 64 MiB, at most 10,000)")
    parser.set_defaults(handler=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from mmap_ninja.convert import convert

    done = convert(args.src, args.dst, verbose=not args.quiet, batch_size=args.batch_size)
    print(f"converted {args.src} ({done.kind}, {done.length} samples) into {done.path}")
    return 0


COMMANDS: list[Callable[[Any], None]] = [add_convert]


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
