"""`convert`: make a map out of something else, without touching the source, publishing it at the destination
only once it is complete.

Sources (`source_kind` tells which one a path is):

- a map written by mmap_ninja 0.9.0 (its folder holds ``type.ninja``): copied into the current format, every
  sample read back and compared;
- a map in the current format, re-encoded with ``codec=``; a sharded map (``shards.json``) of strings, ragged or
  numpy samples, copied into one map (re-encoded too with ``codec=``); either one at a URL (``s3://...``),
  downloaded through the cache; their metadata is kept;
- a folder of images (every file, in sub-folders too, has an image suffix): an `ImagesMmap` of the files' bytes
  as they are, in the order of their sorted relative paths; with ``records=True`` and the ``root/<class>/<file>``
  layout, `RecordsMmap.from_image_folder` (image and label fields) instead;
- a folder of text files (a folder with no image file): a `StringsMmap`, one sample per file decoded as UTF-8, in the
  order of their sorted relative paths (hidden files and folders are skipped);
- a JSON-lines file (``.jsonl`` / ``.ndjson``): lines that are objects become the rows of a `RecordsMmap` (the
  schema inferred from the first batch), lines that are strings a `StringsMmap`; ``field=NAME`` keeps that one
  field of each object, as a `StringsMmap` if it holds strings, else a one-field records map;
- a Parquet file (``.parquet``) or an Arrow IPC file (``.arrow`` / ``.feather``): a `RecordsMmap`, read a batch
  of rows at a time (memory stays bounded by the batch);
- a Hugging Face dataset folder written by ``Dataset.save_to_disk`` (``state.json`` and ``dataset_info.json``):
  a `RecordsMmap` read through ``datasets.load_from_disk``, a batch at a time.

``codec=`` compresses strings and ragged samples (of records maps too: every strings and ragged field).
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple, NoReturn

import numpy as np

from mmap_ninja.errors import ConversionError, MapExistsError
from mmap_ninja.kinds.legacy import (
    NATIVE_HEADER_FILE,
    NotAMapError,
    PathLike,
    is_legacy_map,
    open_legacy,
)
from mmap_ninja.storage.dirs import make_folders, stage, sweep, unmake_folders

_BATCH_BYTES = 64 << 20  # a batch of about this many bytes is held in memory (and committed) at a time
_MAX_BATCH = 10_000


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
"""File suffixes (any case) that make a folder a folder of images."""
JSON_LINES_SUFFIXES = frozenset({".jsonl", ".ndjson"})
PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})
ARROW_SUFFIXES = frozenset({".arrow", ".feather", ".ipc"})
_DEFAULT_ROWS = {"images": 256, "image-folder": 256, "text": 1024, "json-lines": 4096, "parquet": 16_384,
                 "arrow": 16_384, "huggingface": 16_384}


class Converted(NamedTuple):
    """What `convert` wrote: the new map's directory, its kind and number of samples."""

    path: Path
    kind: str
    length: int


def source_kind(src: PathLike) -> str:
    """What `convert` makes of ``src``: ``"legacy"``, ``"map"``, ``"sharded"``, ``"huggingface"``,
    ``"huggingface-dict"``, ``"images"``, ``"text"``, ``"json-lines"``, ``"parquet"`` or ``"arrow"``. Raises
    `NotAMapError` if ``src`` does not exist or is a file of none of these kinds, ValueError for a folder that
    mixes image files with other files or holds an entry that is not a regular file (a FIFO, a broken link)."""
    from mmap_ninja.containers.sharded import SHARDS_FILE

    path = Path(src)
    if path.is_dir():
        if (path / NATIVE_HEADER_FILE).exists():
            return "map"
        if (path / SHARDS_FILE).exists():
            return "sharded"
        if is_legacy_map(path):
            return "legacy"
        if (path / "dataset_dict.json").is_file():
            return "huggingface-dict"
        if (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
            return "huggingface"
        files = _folder_files(path)
        if not files:
            why = "only hidden files and folders, which are skipped, or empty folders" if any(path.iterdir()) \
                else "it is empty"
            raise NotAMapError(f"{path} holds no map written by mmap_ninja 0.9.0 or later and no files to convert "
                               f"({why})")
        images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
        if len(images) == len(files):
            return "images"
        if images:
            other = next(f for f in files if f.suffix.lower() not in IMAGE_SUFFIXES)
            raise ValueError(f"{path} holds images (e.g. {images[0].relative_to(path)}) and other files (e.g. "
                             f"{other.relative_to(path)}); convert takes a folder of images only, or of text files "
                             f"only: move the other files out (hidden files are skipped)")
        return "text"
    if not path.exists():
        raise NotAMapError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix in JSON_LINES_SUFFIXES:
        return "json-lines"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in ARROW_SUFFIXES:
        return "arrow"
    raise NotAMapError(f"{path} is a file convert cannot read: it takes a map, a folder (of images or text files, "
                       f"a Hugging Face dataset), a JSON-lines (.jsonl), Parquet (.parquet) or Arrow (.arrow) file")


def convert(src: PathLike, dst: PathLike, *, verbose: bool = True, batch_size: int | None = None,
            codec: Any = None, records: bool = False, field: str | None = None,
            baseline_jpeg: bool = False, storage_options: dict[str, Any] | None = None,
            cache_dir: PathLike | None = None) -> Converted:
    """Make a new map at ``dst`` out of ``src`` (see the module's docstring for the sources); ``codec=``
    (``"zstd"``, ``"lz4"``, a `mmap_ninja.kinds.codecs.Codec`, or ``"none"``) compresses strings and ragged samples.
    ``records=True`` turns a ``root/<class>/<file>`` folder of images into a records map with a label field;
    ``field=`` keeps one field of a JSON-lines file's objects. ``baseline_jpeg=True`` stores a folder's
    progressive JPEGs as baseline ones, losslessly (see `ImagesMmap.from_files`).

    The map is built in a temporary directory next to ``dst`` and renamed to ``dst`` only when complete (and
    checked by `mmap_ninja.verify`): nothing appears at ``dst`` otherwise, and a failure leaves no temporary
    directory behind. What a conversion killed outright (SIGKILL, a power cut) left there is removed by the next
    conversion to the same ``dst``. ``src`` is only read. ``dst`` must not exist; its missing parent folders are
    created, as every builder does (and removed again if the conversion fails). ``batch_size`` is how many
    samples (rows) are held in memory at a time. ``verbose`` shows progress bars.

    Maps: a map mmap_ninja 0.9.0 wrote is copied into the current format (zstd-compressed strings stay
    zstd-compressed, at the same level); a map or sharded map in the current format (strings, ragged or numpy
    samples; records and images maps are refused) is copied into one map, re-encoded with ``codec=`` (a sharded
    map keeps its shards' codec when no ``codec=`` is given), keeping the map's metadata (a sharded map's, or the
    metadata its shards share when it has none). Their samples are streamed (by default as many as
    fit in 64 MiB at a time, at most 10,000), read back and compared with the source one by one before the
    rename.

    ``src`` may be the URL of a map or sharded map (``s3://bucket/path``, any fsspec URL; ``storage_options`` and
    ``cache_dir`` as for `mmap_ninja.open_existing`): it is downloaded through the cache and copied into one local
    map (re-encoded with ``codec=``, when given).

    Raises NotAMapError if ``src`` is none of the sources above (missing, a file of another kind, an empty folder),
    ValueError for an option that does not apply to the source (``codec=`` on images, ``field=`` on anything but
    JSON lines, ``records=True`` and ``baseline_jpeg=True`` on anything but images, no ``codec=`` on a map already
    in the current format) or
    for bad input (naming the file, line, row or field), FileExistsError if ``dst`` exists, and the errors of
    `mmap_ninja.kinds.legacy.open_legacy` for damaged 0.9.0 maps.

    Example:

        >>> from pathlib import Path
        >>> from mmap_ninja import convert, open_existing
        >>> _ = Path("lines.jsonl").write_text('{"text": "a", "label": 1}\\n{"text": "b", "label": 2}\\n')
        >>> convert("lines.jsonl", "lines", verbose=False)
        Converted(path=PosixPath('lines'), kind='records', length=2)
        >>> open_existing("lines")[1]
        {'text': 'b', 'label': np.int64(2)}
    """
    from mmap_ninja.storage.store import is_url

    remote = is_url(src)
    source_dir, target = Path(src), Path(dst)  # (a URL's source_dir is only a name for messages)
    kind = "url" if remote else source_kind(source_dir)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if kind == "huggingface-dict":
        splits = sorted(p.name for p in source_dir.iterdir() if p.is_dir())
        raise ValueError(f"{source_dir} is a Hugging Face DatasetDict; convert one split at a time, e.g. "
                         f"{source_dir / (splits[0] if splits else 'train')} (its splits: {', '.join(splits)})")
    if records and kind not in ("images", "text"):
        raise ValueError(f"records=True (--records) is for a root/<class>/<file> folder of images, and {source_dir} "
                         f"is a {kind} source")
    if baseline_jpeg and kind != "images":
        raise ValueError(f"baseline_jpeg=True (--baseline-jpeg) is for a folder of images, and {source_dir} is a "
                         f"{kind} source")
    if field is not None and kind != "json-lines":
        raise ValueError(f"field= (--field) picks a field of a JSON-lines file's objects, and {source_dir} is a "
                         f"{kind} source")
    if kind == "map" and codec is None:
        raise ValueError(f"{source_dir} is already in the current format (it has a {NATIVE_HEADER_FILE}); there is "
                         f"nothing to convert (pass a codec to re-encode it)")
    parent, created = _check_target(None if remote else source_dir, target)
    try:
        # What conversions to the same destination killed outright left (their lock files are free), then ours.
        sweep(parent, lambda entry: entry.startswith(f".{target.name}{_CONVERTING}"), guarded=True)
        staged = stage(parent / target.name, _CONVERTING, guarded=True)
    except BaseException:  # Ctrl-C included (stage leaves nothing of its own)
        unmake_folders(created, parent, only_empty=True)
        raise
    temporary = staged.path
    try:
        if kind in ("map", "sharded", "legacy", "url"):
            legacy: Any = open_legacy(source_dir) if kind == "legacy" else \
                _NativeSource(str(src) if remote else source_dir, storage_options, cache_dir)
            size = batch_size if batch_size is not None else _default_batch_size(legacy)
            _build(legacy, temporary, size, verbose, codec)
            _verify(legacy, temporary, size, verbose)
            result_kind, length = legacy.kind, len(legacy)
        else:
            size = batch_size if batch_size is not None else _default_rows(kind, source_dir)
            built = _build_from(kind, source_dir, temporary, size, verbose, codec, records, field, baseline_jpeg)
            result_kind, length = built.layout.kind, len(built)
            built.close()
            _check_built(temporary)
        if os.path.lexists(target):  # appeared while we were converting
            raise MapExistsError(f"{target} appeared while {src} was being converted; nothing was replaced")
        staged.publish()
    except BaseException:
        staged.discard()
        unmake_folders(created, parent, only_empty=True)
        raise
    staged.release()
    return Converted(target, result_kind, length)


# A conversion builds in ``.DST.converting-ID`` and holds a lock on the file ``.DST.converting-ID.lock`` beside
# it while it runs (`mmap_ninja.storage.dirs.stage` with ``guarded=True``). A process killed there (SIGKILL, a power
# cut)
# leaves both behind, possibly many gigabytes; the kernel has dropped its lock, so the next conversion to DST can
# tell them from a live one's and removes them (`mmap_ninja.storage.dirs.sweep`).
_CONVERTING = ".converting-"


def _check_target(source: Path | None, target: Path) -> tuple[Path, Path | None]:
    """Refuse a destination that exists or lies inside the source; create its missing parent folders (as every
    builder does). Returns its parent and the outermost folder created (removed again if the conversion fails)."""
    if os.path.lexists(target):
        raise MapExistsError(f"{target} already exists; convert writes a new map and never replaces anything")
    parent = target.absolute().parent
    if source is not None:  # (None: the source is a URL)
        source_abs, target_abs = source.resolve(), parent.resolve() / target.name
        if target_abs == source_abs or source_abs in target_abs.parents:
            raise ValueError(f"{target} is inside the source {source}; convert never writes into the source")
    if os.path.lexists(parent) and not parent.is_dir():
        raise NotADirectoryError(f"{parent}, which would hold {target.name}, is not a folder")
    return parent, make_folders(parent)


def _check_built(directory: Path) -> None:
    from mmap_ninja.containers.verify import verify

    report = verify(directory)
    if not report.ok:
        raise ConversionError(f"the converted map failed its check: {report.problems[0]}")


# ---------------------------------------------------------------------------------------------- other sources


def _folder_files(root: Path) -> list[Path]:
    """The files under ``root`` (sub-folders too), hidden ones skipped, sorted by relative path. A ValueError
    names an entry that is not a regular file (or a link to one): reading a FIFO would wait for a writer."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(folder) / name for name in files if not name.startswith(".")]
    for path in found:
        _check_regular(path)
    return sorted(found, key=lambda p: p.relative_to(root).parts)


def _check_regular(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ValueError(f"{path} is a broken link (to {os.readlink(path)}); convert reads regular files") \
            from None
    if not stat.S_ISREG(mode):
        what = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise ValueError(f"{path} is {what}, not a regular file; convert reads regular files (move it out)")


def _build_from(kind: str, src: Path, temporary: Path, batch_size: int, verbose: bool, codec: Any, records: bool,
                field: str | None, baseline_jpeg: bool = False) -> Any:
    codec = None if codec == "none" else codec
    if kind == "images":
        return _from_images(src, temporary, batch_size, verbose, codec, records, baseline_jpeg)
    if kind == "text":
        if records:
            raise ValueError(f"records=True (--records) is for a root/<class>/<file> folder of images; {src} holds "
                             f"other files (e.g. {_first_other(src)})")
        from mmap_ninja.kinds.strings import StringsMmap

        files = _folder_files(src)
        texts = (_read_text(path) for path in files)
        return StringsMmap.from_generator(temporary, _progress_over(texts, len(files), src.name, verbose),
                                          batch_size, verbose=False, codec=codec)
    if kind == "json-lines":
        return _from_json_lines(src, temporary, batch_size, verbose, codec, field)
    from mmap_ninja.adapters.ingest import records_from_batches  # the fields from the Arrow types

    bar = None
    try:  # pyarrow's messages and the map's ("row 2, field 's' is null") do not name the file
        tables, total, arrow_schema, metadata = _arrow_tables(kind, src, batch_size)
        bar = _progress(total or 0, f"converting {src.name}", verbose)
        return records_from_batches(temporary, arrow_schema, _counted(tables, bar), metadata=metadata, codec=codec)
    except (ValueError, TypeError) as e:  # pyarrow.ArrowInvalid is a ValueError
        _raise_at(lambda _: str(src), e)
    finally:
        if bar is not None:
            bar.close()


def _counted(tables: Iterator[Any], bar: Any) -> Iterator[Any]:
    """The record batches of ``tables``, counted on ``bar``."""
    for table in tables:
        for batch in table.to_batches():
            yield batch
            if bar is not None:
                bar.update(batch.num_rows)


def _first_other(src: Path) -> str:
    return next((str(f.relative_to(src)) for f in _folder_files(src) if f.suffix.lower() not in IMAGE_SUFFIXES), "?")


def _from_images(src: Path, temporary: Path, batch_size: int, verbose: bool, codec: Any, records: bool,
                 baseline_jpeg: bool) -> Any:
    if codec is not None:
        raise ValueError("images keep their own encoding (JPEG, PNG, ...); a codec does not apply to them")
    if records:
        from mmap_ninja.kinds.records import RecordsMmap

        from_image_folder = getattr(RecordsMmap, "from_image_folder", None)
        if from_image_folder is None:
            raise ValueError("records=True (--records) needs RecordsMmap.from_image_folder, which this mmap_ninja "
                             "does not have")
        return from_image_folder(temporary, src, batch_size=batch_size, verbose=verbose, baseline_jpeg=baseline_jpeg)
    from mmap_ninja.kinds.images import ImagesMmap

    return ImagesMmap.from_files(temporary, _folder_files(src), batch_size, verbose=verbose,
                                 baseline_jpeg=baseline_jpeg)


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason}); convert reads each file of a "
                         f"folder of text files as one UTF-8 string") from None


def _progress_over(items: Iterator[Any], total: int | None, desc: str, verbose: bool) -> Iterator[Any]:
    if not verbose:
        return items
    from tqdm.auto import tqdm

    return iter(tqdm(items, total=total, desc=f"converting {desc}", unit=" samples"))


def _json_lines(src: Path) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each non-blank line."""
    with open(src, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line.rstrip(b"\r\n"))
            except json.JSONDecodeError as e:  # its line and column are within this line
                raise ValueError(f"{src} line {number} column {e.colno} is not valid JSON: {e.msg}") from None
            except UnicodeDecodeError as e:
                raise ValueError(f"{src} line {number} is not valid JSON: {e}") from None


class _SourceError(ValueError):
    """Bad input that the message already places in the source (not prefixed again)."""


class _Lines:
    """The line of the file each of the last ``window`` samples came from, to place in the file an error that
    names a sample (``row N`` or ``item N``, numbered in the map) of the batch being written."""

    def __init__(self, src: Path, window: int):
        self.src = src
        self.recent: deque[tuple[int, int]] = deque(maxlen=window)  # (sample number, line)
        self.count = 0

    def add(self, line: int) -> None:
        self.recent.append((self.count, line))
        self.count += 1

    def where(self, error: Exception) -> str:
        found = re.search(r"\b(?:row|item) (\d+)\b", str(error))
        if found is not None:
            wanted = int(found.group(1))
            for number, line in self.recent:
                if number == wanted:
                    return f"{self.src} line {line}"
        if not self.recent:
            return str(self.src)
        low, high = self.recent[0][1], self.recent[-1][1]
        return f"{self.src} line {low}" if low == high else f"{self.src} lines {low}..{high}"


def _from_json_lines(src: Path, temporary: Path, batch_size: int, verbose: bool, codec: Any,
                     field: str | None) -> Any:
    from itertools import chain

    from mmap_ninja.kinds.records import RecordsMmap
    from mmap_ninja.kinds.strings import StringsMmap

    lines = _json_lines(src)
    first = next(lines, None)
    if first is None:
        raise ValueError(f"{src} has no JSON lines: there is nothing to convert")
    values: Iterator[tuple[int, Any]] = chain([first], lines)
    if field is not None:
        values = ((number, _pick(src, number, value, field)) for number, value in values)
        first = (first[0], _pick(src, first[0], first[1], field))
    book = _Lines(src, batch_size)
    if isinstance(first[1], str):
        strings = _alike(values, str, "a string", first[0], book)
        try:
            return StringsMmap.from_generator(temporary, _progress_over(strings, None, src.name, verbose),
                                              batch_size, verbose=False, codec=codec)
        except (ValueError, TypeError) as e:
            _raise_at(book.where, e)
    if field is not None:
        values = ((number, {field: value}) for number, value in values)
    elif not isinstance(first[1], dict):
        raise ValueError(f"{src} line {first[0]} holds {type(first[1]).__name__}; convert takes JSON lines that are "
                         f"objects (the rows of a records map) or strings")
    rows = _alike(values, dict, "an object", first[0], book)
    return _records_from_batches(_batched(rows, batch_size), None, temporary, src.name, verbose, codec,
                                 RecordsMmap, book.where)


def _alike(values: Iterator[tuple[int, Any]], kind: type, described: str, first_line: int, book: _Lines
           ) -> Iterator[Any]:
    """The values of numbered lines, each noted in ``book``; one that is not a ``kind`` like the first line's
    stops the conversion, naming its line."""
    for number, value in values:
        if not isinstance(value, kind):
            raise _SourceError(f"{book.src} line {number} holds {type(value).__name__}, not {described} like line "
                               f"{first_line}")
        book.add(number)
        yield value


def _pick(src: Path, number: int, value: Any, field: str) -> Any:
    if not isinstance(value, dict) or field not in value:
        raise ValueError(f"{src} line {number} has no field {field!r}"
                         + ("" if isinstance(value, dict) else f" (it holds {type(value).__name__}, not an object)"))
    return value[field]


def _batched(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _arrow_tables(kind: str, src: Path, batch_size: int) -> tuple[Iterator[Any], int | None, Any,
                                                                  dict[str, Any] | None]:
    """The source as an iterator of ``pyarrow.Table`` of at most ``batch_size`` rows, its number of rows (None
    when unknown), its Arrow schema and the metadata to give the map (a dataset's class label names)."""
    try:
        import pyarrow as pa
    except ImportError:
        raise ImportError("converting Parquet, Arrow and Hugging Face sources needs pyarrow: "
                          "pip install 'mmap_ninja[arrow]'") from None
    if kind == "parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(src, pre_buffer=False)  # pre-buffering would read ahead without bound
        return ((pa.Table.from_batches([b]) for b in parquet.iter_batches(batch_size=batch_size)),
                parquet.metadata.num_rows, parquet.schema_arrow, None)
    if kind == "arrow":
        source = pa.memory_map(str(src))
        try:
            reader: Any = pa.ipc.open_file(source)
            batches: Iterator[Any] = (reader.get_batch(i) for i in range(reader.num_record_batches))
        except pa.ArrowInvalid:
            source.seek(0)
            reader = pa.ipc.open_stream(source)
            batches = iter(reader)
        return ((pa.Table.from_batches([piece]) for batch in batches for piece in _slices(batch, batch_size)), None,
                reader.schema, None)
    try:
        import datasets
    except ImportError:
        raise ImportError("converting a Hugging Face dataset needs the 'datasets' package: pip install datasets") \
            from None
    dataset = datasets.load_from_disk(str(src))
    labels = {name: list(feature.names) for name, feature in dataset.features.items()
              if type(feature).__name__ == "ClassLabel"}
    return (iter(dataset.with_format("arrow").iter(batch_size=batch_size)), len(dataset), dataset.data.schema,
            {"class_labels": labels} if labels else None)


def _slices(batch: Any, size: int) -> Iterator[Any]:
    for start in range(0, batch.num_rows, size):
        yield batch.slice(start, size)


def _records_from_batches(batches: Iterator[Any], total: int | None, temporary: Path, name: str, verbose: bool,
                          codec: Any, cls: Any, where: Callable[[Exception], str] | None = None) -> Any:
    """Build a records map from batches (lists of rows or dicts of columns), the schema inferred from the first
    batch (with ``codec`` on every strings and ragged field), one commit per batch. ``where(error)`` names the
    place in the source of what the map refused (prefixed to the error)."""
    from dataclasses import replace

    from mmap_ninja.kinds.records import infer_schema

    first = next(batches, None)
    if first is None:
        raise ValueError(f"{name} holds no rows: there is nothing to convert")
    try:
        schema = infer_schema(first)
    except (ValueError, TypeError) as e:
        _raise_at(where, e)
    if codec is not None:
        schema = {key: replace(f, codec=codec) if f.kind in ("strings", "ragged") else f
                  for key, f in schema.items()}
    bar = _progress(total or 0, f"converting {name}", verbose)
    try:
        with cls.build(temporary, schema=schema) as built:
            for batch in _chain_one(first, batches):
                try:
                    built.extend(batch)
                except (ValueError, TypeError) as e:
                    _raise_at(where, e)
                if bar is not None:
                    bar.update(len(batch) if not isinstance(batch, dict) else len(next(iter(batch.values()), ())))
    finally:
        if bar is not None:
            bar.close()
    return built


def _raise_at(where: Callable[[Exception], str] | None, error: Exception) -> NoReturn:
    """Raise ``error`` again, prefixed with ``where(error)`` (the place in the source), unless it is placed."""
    if where is None or isinstance(error, _SourceError):
        raise error
    raise (TypeError if isinstance(error, TypeError) else ValueError)(f"{where(error)}: {error}") from None


def _chain_one(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


class _NativeSource:
    """A map in the current format, local or at a URL, read like a 0.9.0 one (for re-encoding it with another
    codec, or copying it into one local map)."""

    def __init__(self, path: Path | str, storage_options: dict[str, Any] | None = None,
                 cache_dir: PathLike | None = None):
        from mmap_ninja.containers.generic import open_existing
        from mmap_ninja.containers.sharded import ShardedMap

        remote = isinstance(path, str)
        options: dict[str, Any] = {"storage_options": storage_options, "cache_dir": cache_dir} if remote else {}
        self.path: Any = PurePosixPath(path) if remote else path  # .name for progress bars and messages
        self.opened: Any = open_existing(path, mode="r", **options)
        # a single map at a URL: the local copy in the cache (the RemoteMap, kept open, holds it there)
        self.map: Any = self.opened if isinstance(self.opened, ShardedMap) or not remote else self.opened.local
        self.kind = self.map.kind if isinstance(self.map, ShardedMap) else self.map.layout.kind
        if self.kind not in ("strings", "ragged", "numpy"):
            raise ValueError(f"{path} holds {'an' if self.kind[0] in 'aeiou' else 'a'} {self.kind} map; convert "
                             f"copies (and re-encodes with a codec) maps of strings, ragged or numpy samples")
        self.dtype = getattr(self.map, "dtype", None)
        self.sample_shape = None
        if self.kind == "numpy":
            self.sample_shape = tuple(self.map.attrs["sample_shape"]) if isinstance(self.map, ShardedMap) \
                else np.asarray(self.map).shape[1:]
        self.nbytes = sum(f.stat().st_size for f in Path(path).rglob("*.bin")) if not remote else \
            _local_bytes(self.map)
        self.compressed = False
        # the codec a sharded map's shards share, kept when no codec is given (a single map needs one)
        self.codec_spec: dict[str, Any] | None = self.map.attrs.get("codec") if isinstance(self.map, ShardedMap) \
            else None
        self.metadata = _metadata_of(self.map)

    def __len__(self) -> int:
        return len(self.map)

    def get_many(self, positions: np.ndarray[Any, Any]) -> list[Any]:
        return list(self.map[positions])


def _metadata_of(opened: Any) -> dict[str, Any]:
    """The metadata a conversion of the map ``opened`` keeps: a single map's own; a sharded map's, or when it has
    none, the metadata its shards all share (as `merge` without ``metadata=`` leaves them)."""
    from mmap_ninja.containers.sharded import ShardedMap

    metadata: dict[str, Any] = dict(opened.metadata)
    if metadata or not isinstance(opened, ShardedMap) or not opened.shards:
        return metadata
    shared = [opened.shard(k).metadata for k in range(len(opened.shards))]
    return dict(shared[0]) if all(m == shared[0] for m in shared) else {}


def _local_bytes(opened: Any) -> int:
    """The bytes of a map read from a URL, as far as its local copies tell (a sharded map: by its first shard,
    downloaded now, scaled to all samples)."""
    from mmap_ninja.containers.sharded import ShardedMap

    if not isinstance(opened, ShardedMap):
        return sum(f.stat().st_size for f in Path(opened.path).rglob("*.bin"))
    if not opened.shards or not len(opened):
        return 0
    first = next((k for k, info in enumerate(opened.shards) if info.length), 0)
    shard = opened.shard(first)
    return sum(f.stat().st_size for f in Path(shard.path).rglob("*.bin")) * len(opened) // max(1, len(shard))


def _default_rows(kind: str, src: Path) -> int:
    """How many samples (rows) of a source are read at a time by default: for a folder (a JSON-lines file), as
    many files (lines) as fit in about 64 MiB by their mean size, at most the usual count, so that big files
    (rows) keep memory bounded."""
    rows = _DEFAULT_ROWS[kind]
    if kind in ("images", "text"):
        files = _folder_files(src)
        mean = max(1, sum(f.stat().st_size for f in files) // max(1, len(files)))
        rows = int(min(rows, max(1, _BATCH_BYTES // mean)))
    elif kind == "json-lines":  # the mean length of the lines in the first MiB (or the first line, if longer)
        with open(src, "rb") as f:
            head = f.read(1 << 20)
            lines = head.count(b"\n")
            mean = len(head) // lines if lines else len(head) + len(f.readline())
        rows = int(min(rows, max(1, _BATCH_BYTES // max(1, mean))))
    return rows


def _default_batch_size(legacy: Any) -> int:
    if not len(legacy):
        return 1
    sample_bytes = max(1, legacy.nbytes // len(legacy))
    if legacy.kind == "strings" and legacy.compressed:
        sample_bytes *= 8  # roughly what a compressed string takes once decompressed
    return int(min(_MAX_BATCH, max(1, _BATCH_BYTES // sample_bytes)))


def _progress(total: int, desc: str, verbose: bool) -> Any:
    if not verbose:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=" samples")


def _samples(legacy: Any, batch_size: int, bar: Any) -> Iterator[Any]:
    for start in range(0, len(legacy), batch_size):
        batch = legacy.get_many(np.arange(start, min(start + batch_size, len(legacy)), dtype=np.int64))
        yield from batch
        if bar is not None:
            bar.update(len(batch))


def _build(legacy: Any, temporary: Path, batch_size: int, verbose: bool, codec: Any) -> None:
    bar = _progress(len(legacy), f"converting {legacy.path.name}", verbose)
    samples = _samples(legacy, batch_size, bar)
    keep = codec is None  # no codec given: 0.9.0's zstd strings stay zstd, so does a sharded map's codec
    codec = None if codec == "none" else codec  # "none": stored uncompressed
    if keep and getattr(legacy, "codec_spec", None):
        from mmap_ninja.kinds.codecs import codec_from_spec

        codec = codec_from_spec(legacy.codec_spec)
    if codec is not None and legacy.kind not in ("strings", "ragged"):
        raise ValueError(f"codecs compress strings and ragged maps; a {legacy.kind} map cannot be re-encoded")
    metadata = getattr(legacy, "metadata", None) or None  # a map's metadata survives its conversion
    try:
        if legacy.kind == "strings":
            from mmap_ninja.kinds.strings import StringsMmap

            if keep and legacy.compressed:
                built: Any = StringsMmap.from_generator(temporary, samples, batch_size, verbose=False,
                                                        zstd_level=legacy.zstd_level, metadata=metadata)
            else:
                built = StringsMmap.from_generator(temporary, samples, batch_size, verbose=False, codec=codec,
                                                   metadata=metadata)
        elif legacy.kind == "ragged":
            from mmap_ninja.kinds.ragged import RaggedMmap

            built = RaggedMmap.from_generator(temporary, samples, batch_size, verbose=False, dtype=legacy.dtype,
                                              codec=codec, metadata=metadata)
        else:
            from mmap_ninja.kinds.numpy import from_generator

            built = from_generator(temporary, samples, batch_size, verbose=False, dtype=legacy.dtype,
                                   sample_shape=legacy.sample_shape, metadata=metadata)
        built.close()
    finally:
        if bar is not None:
            bar.close()


def _verify(legacy: Any, temporary: Path, batch_size: int, verbose: bool) -> None:
    """Read the new map back from disk and compare every sample with the source's, bit for bit."""
    if legacy.kind == "strings":
        from mmap_ninja.kinds.strings import StringsMmap

        converted: Any = StringsMmap(temporary, mode="r")
    elif legacy.kind == "ragged":
        from mmap_ninja.kinds.ragged import RaggedMmap

        converted = RaggedMmap(temporary, mode="r")
    else:
        from mmap_ninja.kinds.numpy import open_existing

        converted = open_existing(temporary, mode="r")
    bar = _progress(len(legacy), f"verifying {legacy.path.name}", verbose)
    try:
        if len(converted) != len(legacy):
            raise ConversionError(f"the converted map holds {len(converted)} samples, the source {len(legacy)}")
        for start in range(0, len(legacy), batch_size):
            stop = min(start + batch_size, len(legacy))
            if legacy.kind == "numpy":
                want = legacy.array[start:stop] if hasattr(legacy, "array") else \
                    np.stack(legacy.get_many(np.arange(start, stop, dtype=np.int64)))
                _compare_arrays(start, np.asarray(converted)[start:stop], want, "samples")
            else:
                expected = legacy.get_many(np.arange(start, stop, dtype=np.int64))
                for offset, (got, want) in enumerate(zip(converted[start:stop], expected)):
                    if isinstance(want, str):
                        if got != want:
                            raise ConversionError(f"sample {start + offset} reads back as {got!r}, not {want!r}")
                    else:
                        _compare_arrays(start + offset, got, want, "sample")
            if bar is not None:
                bar.update(stop - start)
    finally:
        converted.close()
        if bar is not None:
            bar.close()


def _compare_arrays(position: int, got: Any, want: Any, what: str) -> None:
    got = np.asarray(got)
    if got.shape != want.shape or got.dtype != want.dtype or got.tobytes() != want.tobytes():
        raise ConversionError(f"{what} {position} read{'s' if what == 'sample' else ''} back as {got.dtype} of shape "
                              f"{got.shape}, which differs from the source's {want.dtype} of shape {want.shape} or "
                              f"its values")
