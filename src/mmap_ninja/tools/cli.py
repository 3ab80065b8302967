"""The ``mmap-ninja`` command (also ``python -m mmap_ninja``).

Subcommands:

- ``mmap-ninja info PATH [--json]``: what a map is (kind, length, dtype, codec, checksums, format version,
  metadata, bytes per column), from its header alone: instant whatever its size.
- ``mmap-ninja verify PATH [--deep] [--json]``: `mmap_ninja.verify`; exit 0 when sound, 1 when damaged (saying
  where), 3 when PATH holds no map.
- ``mmap-ninja head PATH [-n N] [--json]``: the first samples, shortened to fit a terminal line.
- ``mmap-ninja convert SRC DST``: make a map out of a 0.9.0 map, a folder of images or text files, a JSON-lines,
  Parquet or Arrow file or a Hugging Face dataset folder (see `mmap_ninja.convert`); re-encode a map with
  ``--codec``.
- ``mmap-ninja cache path | ls [--json] | clear [--older-than 7d] [--url PREFIX] [--dry-run] [--json]``: the
  cache that maps at URLs are downloaded into (`mmap_ninja.adapters.cache`): where it is, what it holds, and
  deleting entries, never one a live reader holds (it is kept and reported).

Every subcommand understands single maps, sharded maps (a directory with ``shards.json``) and, for reading, maps
written by 0.9.0 and maps at URLs (``s3://bucket/path``, any fsspec URL; ``--storage-options JSON``): ``info`` reads
their headers and object sizes only, ``verify`` also their index columns (offsets and shapes, not the data),
``verify --deep``, ``head`` and ``convert`` download through the cache.

A subcommand is a function ``add_<name>(subparsers)`` that declares its arguments and sets ``handler`` to a
function of the parsed arguments returning the exit status; `COMMANDS` lists them. Errors end the command with
one line on stderr, never a traceback (``--traceback`` shows it): status 3 when PATH holds no map (a missing
path, a file, a folder without a header), 1 for any other error (a corrupt header, ...), 2 for a wrong command
line (as argparse does), 130 when interrupted, 141 (quietly) when the reader of stdout went away
(``mmap-ninja head -n 1000 PATH | head -1``).
"""

from __future__ import annotations

import argparse
import json
import math
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


def _storage_options(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r}: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r}")
    return value


def _add_url_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage-options", type=_storage_options, default=None, metavar="JSON",
                        help="for a URL: fsspec's options as a JSON object (S3: key, secret, client_kwargs with "
                             "endpoint_url, ...); default: the environment's (AWS_* variables, ~/.aws)")


# ---------------------------------------------------------------------------------------------- convert


def add_convert(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "convert", help="make a map from a 0.9.0 map, a folder of images or text files, a JSON-lines, Parquet or "
                        "Arrow file or a Hugging Face dataset; re-encode a map with --codec",
        description="Make a new map at DST out of SRC: a map written by mmap_ninja 0.9.0 (copied into the current "
                    "format, every sample compared), a map or sharded map (copied into one map, with --codec "
                    "re-encoded), a folder of images (an images map of the files as they are, in sorted path "
                    "order; --records: a records map with image and label fields from root/<class>/<file>), a "
                    "folder of text files (a strings map, one sample per file, UTF-8, sorted path order), a "
                    "JSON-lines file (objects: a records map; strings: a strings map; --field NAME: that field "
                    "only), a Parquet or Arrow file or a Hugging Face dataset folder from save_to_disk (a records "
                    "map, read a batch at a time). DST appears only once complete; SRC is only read.")
    parser.add_argument("src", metavar="SRC", help="what to convert (a folder or a file)")
    parser.add_argument("dst", metavar="DST", help="where to write the new map (must not exist)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--batch-size", type=_batch_size, default=None, metavar="N",
                        help="samples (rows) held in memory at a time (default: as many as fit in about 64 MiB "
                             "for maps, folders and JSON lines, at most 10,000 samples, 256 images, 1,024 text "
                             "files or 4,096 lines; Parquet, Arrow and Hugging Face: 16,384 rows)")
    parser.add_argument("--codec", choices=["zstd", "lz4", "none"], default=None,
                        help="compress every string and ragged sample (records: field) with this codec (none: "
                             "store uncompressed; default: a 0.9.0 or sharded map keeps its codec, other sources "
                             "are stored uncompressed)")
    parser.add_argument("--records", action="store_true",
                        help="a folder of images laid out as root/<class>/<file> becomes a records map with the "
                             "image and its class label (without it: an images map of every file, no labels)")
    parser.add_argument("--baseline-jpeg", action="store_true",
                        help="a folder of images: store progressive JPEGs as baseline ones with the same "
                             "coefficients (the same pixels, decoded 2-3x faster; needs mmap_ninja[baseline])")
    parser.add_argument("--field", metavar="NAME", default=None,
                        help="JSON lines: keep only this field of each object (strings: a strings map)")
    _add_url_options(parser)
    parser.set_defaults(handler=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from mmap_ninja.tools.conversion import convert

    done = convert(args.src, args.dst, verbose=not args.quiet, batch_size=args.batch_size, codec=args.codec,
                   records=args.records, field=args.field, baseline_jpeg=args.baseline_jpeg,
                   storage_options=args.storage_options)
    print(f"converted {args.src} ({done.kind}, {done.length} samples) into {done.path}")
    return 0


# ---------------------------------------------------------------------------------------------- info


def add_info(subparsers: Any) -> None:
    parser = subparsers.add_parser("info", help="describe a map from its header (instant at any size)",
                                   description="Print a map's kind, length, dtype, codec, checksums, format "
                                               "version, metadata and the bytes of each column, from its header.")
    parser.add_argument("path", metavar="PATH")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    _add_url_options(parser)
    parser.set_defaults(handler=run_info)


def describe(path: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """What `info` prints, as a dict, from headers alone: no sample is read and no data file is opened or mapped
    (the bytes per column come from the files' sizes), so it is instant whatever the number of samples. A sharded
    map reads ``shards.json`` and each shard's header. ``path`` may be a URL (``s3://...``, any fsspec URL): its
    headers are fetched and its objects' sizes listed, nothing else is downloaded."""
    from mmap_ninja.containers.sharded import ShardedMap, is_sharded
    from mmap_ninja.kinds.legacy import is_legacy_map, open_legacy
    from mmap_ninja.storage.format import read_header
    from mmap_ninja.storage.store import absolute, is_url

    if is_url(path):
        return _describe_url(path, storage_options)
    directory = absolute(path)
    if is_legacy_map(directory):
        reader = open_legacy(directory)
        legacy: dict[str, Any] = {"path": str(directory), "kind": reader.kind,
                                  "format": "mmap_ninja 0.9.0 (read-only; convert it)", "length": len(reader),
                                  "dtype": str(getattr(reader, "dtype", "")) or None}
        if reader.kind == "strings":
            level = getattr(reader, "zstd_level", None)
            legacy["codec"] = "none" if level is None else {
                "name": "zstd", "level": level, **({"dictionary": True} if getattr(reader, "zstd_dict", None) else {})}
        return legacy
    if is_sharded(directory):
        top = ShardedMap(directory, mode="r")
        parts = []
        for shard in top.shards:
            header = read_header(directory / shard.path)
            parts.append((header, _column_bytes(directory / shard.path, header)))
        return _describe_sharded(str(directory), top.kind, top.attrs, len(top), top.metadata, parts)
    header = read_header(directory)
    return _describe_map(str(directory), header, _column_bytes(directory, header))


def _describe_url(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    from mmap_ninja.adapters.remote_check import remote_listing
    from mmap_ninja.adapters.remote_objects import column_objects
    from mmap_ninja.errors import CorruptMapError

    listing = remote_listing(url, storage_options)
    parts = []
    for entry in listing.maps:
        if entry.header is None:
            raise CorruptMapError(entry.problem or f"{entry.url} has no readable header")
        objects = column_objects(entry.header, entry.url)
        parts.append((entry.header, {name: entry.sizes.get(objects[name], 0) for name in entry.header.columns}))
    if not listing.sharded:
        return _describe_map(listing.url, *parts[0])
    assert listing.kind is not None
    return _describe_sharded(listing.url, listing.kind, listing.attrs, sum(info.length for info in listing.shards),
                             listing.metadata, parts)


def _describe_sharded(where: str, kind: str, attrs: dict[str, Any], length: int, metadata: dict[str, Any],
                      parts: list[tuple[Any, dict[str, int]]]) -> dict[str, Any]:
    """`info` of a sharded map from its top header and each shard's (header, bytes per column)."""
    info: dict[str, Any] = {"path": where, "kind": kind, "format": "sharded 1.0", "length": length,
                            "shards": len(parts)}
    algorithms: set[str] = set()
    sizes: dict[str, int] = {}
    formats: list[str] = []  # an images map's, kept by each shard's header
    for header, column_bytes in parts:
        algorithms.add(header.checksums or "none")
        formats += [name for name in header.attrs.get("formats", []) if name not in formats]
        for name, size in column_bytes.items():
            sizes[name] = sizes.get(name, 0) + size
    info["checksums"] = ", ".join(sorted(algorithms)) or "none"
    info.update(_attributes(kind, {**attrs, "formats": formats}, length))
    info["metadata"] = metadata
    info["bytes"] = sizes
    return info


def _describe_map(where: str, header: Any, column_bytes: dict[str, int]) -> dict[str, Any]:
    """`info` of a single map from its header and the bytes of each column."""
    attrs = header.attrs
    length = _count(header.kind, header.lengths, attrs)
    info = {
        "path": where, "kind": header.kind, "format": f"{header.version[0]}.{header.version[1]}",
        "length": length, "commit": header.commit, "unfinished_build": header.building,
        "requires": list(header.requires), "checksums": header.checksums or "none",
    }
    info.update(_attributes(header.kind, attrs, length))
    info["metadata"] = header.metadata
    info["bytes"] = column_bytes
    return info


def _column_bytes(directory: Any, header: Any) -> dict[str, int]:
    """Each column's file size (0 for a missing file: `verify` says what is wrong)."""
    sizes = {}
    for name in header.columns:
        try:
            sizes[name] = os.path.getsize(directory / header.file_of(name))
        except OSError:
            sizes[name] = 0
    return sizes


def _attributes(kind: str, attrs: dict[str, Any], length: Any) -> dict[str, Any]:
    """The dtype, codec and shape summary a header keeps (numpy: the whole array's shape; ragged: the numbers
    of dimensions; records: the key field, and each field's kind and summary)."""
    out: dict[str, Any] = {}
    if attrs.get("dtype") is not None:
        out["dtype"] = attrs["dtype"]
    if kind == "records":
        key = attrs.get("key")
        if isinstance(key, dict) and key.get("field") is not None:
            out["key"] = key["field"]
        out["fields"] = {name: {"kind": spec.get("kind", "?"),
                                **_attributes(spec.get("kind", "?"), spec.get("attrs", {}), length)}
                         for name, spec in attrs.get("fields", {}).items() if isinstance(spec, dict)}
        return out
    if kind in ("strings", "ragged"):
        out["codec"] = attrs.get("codec") or "none"
    if kind == "images":
        out["formats"] = attrs.get("formats", [])
    if attrs.get("sample_shape") is not None:
        out["sample_shape"] = attrs["sample_shape"]
        if isinstance(length, int):
            out["shape"] = [length, *attrs["sample_shape"]]
    for key in ("order", "ndims"):
        if attrs.get(key) is not None:
            out[key] = attrs[key]
    return out


def _count(kind: str, lengths: dict[str, int], attrs: dict[str, Any]) -> Any:
    """The number of samples the header commits, or None when the kind is unknown or the header lacks a column
    (`verify` says what is wrong)."""
    from mmap_ninja.kinds.maps import KINDS

    try:
        return None if kind not in KINDS else KINDS[kind].layout.count(lengths, attrs)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def run_info(args: argparse.Namespace) -> int:
    info = describe(args.path, args.storage_options)
    if args.json:
        print(json.dumps(info))
        return 0
    for key, value in info.items():
        if key == "bytes":
            value = ", ".join(f"{name} {size:,}" for name, size in value.items())
        elif key == "fields":
            value = "; ".join(f"{name}: " + ", ".join(f"{k} {json.dumps(v)}" for k, v in spec.items())
                              for name, spec in value.items())
        elif isinstance(value, (dict, list)):
            value = json.dumps(value)
        print(f"{key.replace('_', ' ') + ':':<18}{value}")
    return 0


# ---------------------------------------------------------------------------------------------- verify

NOT_A_MAP = 3
BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool stopped by a closed pipe


def add_verify(subparsers: Any) -> None:
    parser = subparsers.add_parser("verify", help="check a map (exit 0 sound, 1 damaged, 3 not a map)",
                                   description="Check a map's header, files and index; with --deep also every "
                                               "checksum. Exit status 0 when sound, 1 when damaged, 3 when PATH "
                                               "holds no map.")
    parser.add_argument("path", metavar="PATH")
    parser.add_argument("--deep", action="store_true",
                        help="re-hash every committed byte (and look every key of a keyed records map up)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar (shown for --deep on a terminal)")
    _add_url_options(parser)
    parser.set_defaults(handler=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    from mmap_ninja.containers.verify import verify

    report = verify(args.path, deep=args.deep, progress=args.deep and not args.quiet and sys.stderr.isatty(),
                    storage_options=args.storage_options)
    if args.json:
        print(json.dumps({"path": str(report.path), "ok": report.ok, "kind": report.kind, "length": report.length,
                          "deep": report.deep, "problems": report.problems, "notes": report.notes,
                          "bytes_hashed": report.bytes_hashed, "checksums_missing": report.checksums_missing}))
    else:
        for note in report.notes:
            print(f"note: {note}")
        for problem in report.problems:
            print(f"damaged: {problem}")
        if not report.deep:
            what = "structure (use --deep for every checksum)"
        elif report.checksums_missing:
            what = "structure only: it has no checksums"
        else:
            what = "every checksum"
        what_map = "kind unknown" if report.kind is None else report.kind
        if report.length is not None:
            what_map += f", {report.length:,} samples"
        print(f"{report.path}: {'sound' if report.ok else 'DAMAGED'} ({what_map}; checked {what})")
    return 0 if report.ok else 1


# ---------------------------------------------------------------------------------------------- head


def add_head(subparsers: Any) -> None:
    parser = subparsers.add_parser("head", help="show the first samples", description="Print the first samples of "
                                   "a map, one per line, shortened to fit a terminal.")
    parser.add_argument("path", metavar="PATH")
    parser.add_argument("-n", type=_batch_size, default=5, metavar="N", help="how many samples (default 5)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object: the length and the samples (strings cut at 1,000 characters, "
                             "arrays as dtype, shape and their first 32 values; NaN and infinities as the strings "
                             "nan, inf, -inf)")
    _add_url_options(parser)
    parser.set_defaults(handler=run_head)


def _short(sample: Any, width: int) -> str:
    import numpy as np

    if isinstance(sample, str):
        text = repr(sample)
    elif isinstance(sample, np.ndarray):
        body = np.array2string(sample.reshape(-1)[:32], threshold=32, edgeitems=4, max_line_width=10**6)
        text = f"{sample.dtype}{list(sample.shape)} {' '.join(body.split())}"
    elif isinstance(sample, np.generic):  # a records scalar field: 0, not np.int64(0)
        text = repr(sample.item())
    elif isinstance(sample, dict):
        text = "{" + ", ".join(f"{key!r}: {_short(value, width)}" for key, value in sample.items()) + "}"
    else:
        text = repr(sample)
    return text if len(text) <= width else text[:width - 1] + "…"


_JSON_TEXT = 1000
_JSON_VALUES = 32


def _jsonable(sample: Any) -> Any:
    """A sample as JSON for `head --json`: a string (cut at 1,000 characters), an array as its dtype, shape and
    first 32 values (``truncated`` says whether there are more), a record as an object of its fields; NaN and the
    infinities as the strings "nan", "inf" and "-inf"."""
    import numpy as np

    if isinstance(sample, str):
        return sample[:_JSON_TEXT]
    if isinstance(sample, dict):
        return {str(key): _jsonable(value) for key, value in sample.items()}
    if isinstance(sample, (np.ndarray, np.generic)):
        array = np.asarray(sample)
        flat = array.reshape(-1)[:_JSON_VALUES]
        values = [_json_number(v) for v in flat.tolist()] if array.dtype.kind in "biuf" else [str(v) for v in flat]
        if array.ndim == 0:
            return values[0]
        return {"dtype": str(array.dtype), "shape": list(array.shape), "values": values,
                "truncated": bool(array.size > _JSON_VALUES)}
    if isinstance(sample, (bytes, bytearray, memoryview)):
        return bytes(sample)[:_JSON_VALUES].hex()
    if sample is None or isinstance(sample, (bool, int, float)):
        return _json_number(sample)
    return repr(sample)[:_JSON_TEXT]


def _json_number(value: Any) -> Any:
    """A number as JSON has it: NaN and the infinities (which JSON lacks) as the strings "nan", "inf", "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def run_head(args: argparse.Namespace) -> int:
    from mmap_ninja.containers.generic import open_existing
    from mmap_ninja.storage.store import is_url

    m = open_existing(args.path, mode="r",
                      **({"storage_options": args.storage_options} if is_url(args.path) else {}))
    try:
        count = min(args.n, len(m))
        if args.json:
            where = args.path if is_url(args.path) else str(m.path)  # a URL, not the cache entry it was read from
            print(json.dumps({"path": where, "length": len(m),
                              "samples": [_jsonable(m[i]) for i in range(count)]}, allow_nan=False))
            return 0
        width = max(40, os.get_terminal_size().columns if sys.stdout.isatty() else 100)
        for i in range(count):
            prefix = f"[{i}] "
            print(prefix + _short(m[i], width - len(prefix)))
        print(f"({len(m):,} samples)")
        return 0
    finally:
        m.close()


# ---------------------------------------------------------------------------------------------- cache


def _duration(text: str) -> float:
    from mmap_ninja.adapters.cache import parse_duration

    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_cache(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "cache", help="show or clear the cache of maps read from URLs",
        description="The local cache that maps at URLs are downloaded into: where it is (path), what it holds "
                    "(ls) and deleting entries (clear). An entry a live reader maps is never deleted.")
    actions = parser.add_subparsers(dest="cache_command", metavar="ACTION", required=True)

    def action(name: str, help: str, description: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = actions.add_parser(name, help=help, description=description)
        sub.add_argument("--cache-dir", metavar="DIR", default=None,
                         help="the cache (default: $MMAP_NINJA_CACHE, else $XDG_CACHE_HOME/mmap_ninja, else "
                              "~/.cache/mmap_ninja)")
        return sub

    path = action("path", "print the cache directory", "Print the cache directory (it may not exist yet).")
    path.add_argument("--json", action="store_true", help="print one JSON object")
    path.set_defaults(handler=run_cache_path)
    listing = action("ls", "list the cache's entries", "List the cache's entries, least recently used first: key, "
                     "size, last use, whether a live reader holds it, and the URL it was downloaded from.")
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    listing.set_defaults(handler=run_cache_ls)
    clearing = action("clear", "delete cache entries (never one a live reader holds)",
                      "Delete the cache's entries that match every filter given (none: all of them). An entry a "
                      "live reader holds is kept and reported.")
    clearing.add_argument("--older-than", type=_duration, default=None, metavar="DURATION",
                          help="only entries last used longer ago than this: 90s, 30m, 12h, 7d, 2w")
    clearing.add_argument("--url", metavar="PREFIX", default=None,
                          help="only entries downloaded from PREFIX or from under it (a path prefix: s3://b/data "
                               "matches s3://b/data and its shards, not s3://b/data2)")
    clearing.add_argument("--dry-run", action="store_true", help="delete nothing; say what would be deleted")
    clearing.add_argument("--json", action="store_true", help="print one JSON object")
    clearing.set_defaults(handler=run_cache_clear)


def _bytes(size: int) -> str:
    """``size`` for a person: bytes below 1 KiB, else KiB, MiB, GiB or TiB with one decimal."""
    if size < 1024:
        return f"{size} B"
    value, unit = size / 1024, "KiB"
    for larger in ("MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{value:.1f} {unit}"


def _entries(count: int) -> str:
    return f"{count} entry" if count == 1 else f"{count} entries"


def _when(timestamp: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def run_cache_path(args: argparse.Namespace) -> int:
    from mmap_ninja.adapters.cache import cache_dir

    where = cache_dir(args.cache_dir)
    print(json.dumps({"cache_dir": str(where), "exists": where.is_dir()}) if args.json else where)
    return 0


def run_cache_ls(args: argparse.Namespace) -> int:
    from mmap_ninja.adapters.cache import cache_dir, list_entries

    entries = list_entries(args.cache_dir)
    total = sum(entry.size for entry in entries)
    if args.json:
        print(json.dumps({"cache_dir": str(cache_dir(args.cache_dir)), "total_bytes": total,
                          "entries": [entry.as_json() for entry in entries]}))
        return 0
    rows = [(entry.key, _bytes(entry.size), _when(entry.last_used), "held" if entry.held else "-",
             entry.url or "(unknown)") for entry in entries]
    widths = [max([len(heading)] + [len(row[k]) for row in rows])
              for k, heading in enumerate(("KEY", "SIZE", "LAST USED", "HELD"))]
    for row in [("KEY", "SIZE", "LAST USED", "HELD", "URL"), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])
    print(f"{_entries(len(entries))}, {_bytes(total)} in {cache_dir(args.cache_dir)}")
    return 0


def run_cache_clear(args: argparse.Namespace) -> int:
    from mmap_ninja.adapters.cache import cache_dir, clear

    report = clear(args.cache_dir, older_than=args.older_than, url_prefix=args.url, dry_run=args.dry_run)
    if args.json:
        print(json.dumps({"cache_dir": str(cache_dir(args.cache_dir)), "dry_run": report.dry_run,
                          "freed_bytes": report.freed, "removed": [entry.as_json() for entry in report.removed],
                          "held": [entry.as_json() for entry in report.held]}))
        return 0
    verb = "would remove" if report.dry_run else "removed"
    for entry in report.removed:
        print(f"{verb} {entry.key}  {_bytes(entry.size)}  {entry.url or '(unknown URL)'}")
    for entry in report.held:
        print(f"kept {entry.key}  {_bytes(entry.size)}  {entry.url or '(unknown URL)'}  (held by a live reader)")
    print(f"{verb} {_entries(len(report.removed))} ({_bytes(report.freed)}), kept {len(report.held)} held by a "
          f"live reader")
    return 0


COMMANDS: list[Callable[[Any], None]] = [add_info, add_verify, add_head, add_convert, add_cache]


# ---------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    from mmap_ninja import __version__

    parser = argparse.ArgumentParser(
        prog=PROG, description="Tools for mmap_ninja maps.",
        epilog="An error is one line on stderr (nothing on stdout, also with --json): exit status 3 when PATH (or "
               "SRC) holds no map, 1 for any other error or a damaged map (verify), 2 for a wrong command line, "
               "130 when interrupted.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--traceback", action="store_true", help="on an error, show the full traceback")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(subparsers)
    for sub in subparsers.choices.values():  # also after the command; SUPPRESS keeps a --traceback given before it
        sub.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                         help="on an error, show the full traceback")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    from mmap_ninja.errors import NotAMapError

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
        except BrokenPipeError:  # the reader of stdout went away (| head): stop quietly, as other tools do
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so that flushing stdout at exit does not fail again
            os.close(devnull)
            return BROKEN_PIPE
        except NotAMapError as error:
            if args.traceback:
                raise
            print(f"{where}: not a map: {_one_line(str(error))}", file=sys.stderr)
            return NOT_A_MAP
        except Exception as error:
            if args.traceback:
                raise
            message = _one_line(str(error)) or type(error).__name__
            print(f"{where}: error: {message}", file=sys.stderr)
            return 1
