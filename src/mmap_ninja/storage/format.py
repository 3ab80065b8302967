"""Reading, checking and writing a map's header. The format itself is specified in FORMAT.md (and only there).

A header is small JSON; `read_header` checks its size, its keys and their types before anything else trusts it,
so a damaged or hostile header gives a `CorruptMapError` naming the file, never a wrong read or a huge
allocation. `Header` keeps the fields a newer minor version added that this code does not know, so they survive
every commit.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mmap_ninja.errors import CorruptMapError, FormatVersionError, NotAMapError, UnknownFeatureError
from mmap_ninja.storage import header_slots

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "HEADER_FILE",
    "MAX_HEADER_BYTES",
    "MAX_METADATA_BYTES",
    "SHARDS_FILE",
    "Column",
    "Header",
    "check_metadata",
    "dtype_from_json",
    "dtype_to_json",
    "encode_header",
    "header_checksum",
    "parse_header",
    "plain_header",
    "read_header",
    "register_feature",
]

FORMAT_NAME = "mmap_ninja"
FORMAT_VERSION = (2, 0)
HEADER_FILE = "header.json"
SHARDS_FILE = "shards.json"
"""The top-level header of a sharded map (see `mmap_ninja.containers.sharded`), in place of a single map's
``header.json``."""
# A header is a few hundred bytes plus the user's metadata; anything this large is damage or an attack.
MAX_HEADER_BYTES = 16 << 20
MAX_METADATA_BYTES = 4 << 20
MAX_METADATA_KEY_LENGTH = 256

_SUFFIX = re.compile(r"[0-9a-f]{1,32}")
_COLUMN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_KEYS = {"format", "version", "id", "commit", "kind", "requires", "attrs", "metadata", "building", "columns",
         "checksums", "checksum"}
_REQUIRED_KEYS = {"format", "version", "kind", "attrs", "columns"}  # all a 1.0 header has besides "id"
_FEATURES: set[str] = {header_slots.FEATURE}


def register_feature(name: str) -> None:
    """Declare that this installation understands maps whose header ``requires`` ``name`` (codecs do this)."""
    _FEATURES.add(name)


def dtype_to_json(dtype: Any) -> Any:
    """A JSON-able description of ``dtype`` (NumPy's own ``descr``, as in ``.npy`` headers)."""
    return np.lib.format.dtype_to_descr(np.dtype(dtype))


def _column_descr(dtype: np.dtype[Any]) -> Any:
    """`dtype_to_json` of a column's dtype, remembered (every commit describes every column), never modified."""
    descr = _DESCRS.get(dtype)
    if descr is None:
        descr = dtype_to_json(dtype)
        if len(_DESCRS) < 4096:
            _DESCRS[dtype] = descr
    return descr


_DESCRS: dict[np.dtype[Any], Any] = {}


def dtype_from_json(descr: Any) -> np.dtype[Any]:
    """Inverse of `dtype_to_json`."""
    if isinstance(descr, str):  # a plain dtype: remembered, so opening a map parses each of its columns' once
        known = _DTYPES.get(descr)
        if known is None:
            known = np.dtype(descr)  # what descr_to_dtype makes of a string
            if len(_DTYPES) < 4096:
                _DTYPES[descr] = known
        return known
    key = repr(descr)  # a structured dtype (the checksum records'): remembered too (repr tells JSON values apart)
    known = _DTYPES.get(key)
    if known is None:
        known = np.lib.format.descr_to_dtype(_descr_from_json(descr))
        if len(_DTYPES) < 4096 and len(key) < 4096:
            _DTYPES[key] = known
    return known


_DTYPES: dict[str, np.dtype[Any]] = {}


def _descr_from_json(descr: Any) -> Any:
    # JSON turned the tuples of a structured descr (name or (title, name), descr[, shape]) into lists.
    if isinstance(descr, str):
        return descr
    fields = []
    for name, sub, *shape in descr:
        fields.append((tuple(name) if isinstance(name, list) else name, _descr_from_json(sub),
                       *(tuple(s) for s in shape)))
    return fields


def check_metadata(metadata: Any, what: str = "metadata") -> dict[str, Any]:
    """``metadata`` as a plain dict that JSON round-trips exactly, or a ValueError/TypeError saying what is wrong."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"{what} must be a dict of JSON values, got {type(metadata).__name__}")
    for key in metadata:
        if not isinstance(key, str) or not key or len(key) > MAX_METADATA_KEY_LENGTH:
            raise ValueError(f"{what} keys must be non-empty strings of at most {MAX_METADATA_KEY_LENGTH} "
                             f"characters, got {key!r}")
    try:
        encoded = json.dumps(dict(metadata), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} must hold only JSON values (dict, list, str, finite numbers, bool, None): {e}") \
            from None
    if len(encoded) > MAX_METADATA_BYTES:
        raise ValueError(f"{what} takes {len(encoded):,} bytes as JSON; the limit is {MAX_METADATA_BYTES:,}")
    result: dict[str, Any] = json.loads(encoded)
    return result


@dataclass(frozen=True)
class Column:
    """One column as the header lists it: its item dtype and committed number of items."""

    dtype: np.dtype[Any]
    length: int


@dataclass(frozen=True)
class Header:
    """The parsed, checked content of ``header.json``."""

    kind: str
    columns: dict[str, Column]
    attrs: dict[str, Any]
    id: str | None = None
    commit: int = 0
    version: tuple[int, int] = FORMAT_VERSION
    requires: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    building: bool = False
    checksums: Optional[str] = None  # the algorithm of the map's checksum records (None: the map has none)
    checksum_granularity: Optional[int] = None  # bytes near which writes split their records (None: they do not)
    extra: dict[str, Any] = field(default_factory=dict)  # optional fields of a newer minor version, kept as they are

    @property
    def lengths(self) -> dict[str, int]:
        return {name: col.length for name, col in self.columns.items()}

    @property
    def writable_by_us(self) -> bool:
        """False for a newer minor version (which may have fields this code would not keep up to date)."""
        return self.version[0] < FORMAT_VERSION[0] or self.version <= FORMAT_VERSION

    def evolve(self, **changes: Any) -> Header:
        return replace(self, **changes)

    def file_of(self, column: str) -> str:
        """The name of ``column``'s file: ``<column>.bin``, or ``<column>.<file_suffix>.bin`` in a slot map
        generation made while readers still held the files of the one it replaced (FORMAT.md, commit.slots)."""
        suffix = self.extra.get("file_suffix")
        return f"{column}.{suffix}.bin" if suffix else f"{column}.bin"


def read_header(directory: Path) -> Header:
    """Read and check ``directory/header.json`` (see FORMAT.md); raises `NotAMapError`, `CorruptMapError`,
    `FormatVersionError` or `UnknownFeatureError`, each naming the file."""
    path = directory / HEADER_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        if not directory.exists():
            raise NotAMapError(f"{directory}: no such map directory") from None
        if not directory.is_dir():
            raise NotAMapError(f"{directory} is a file, not a map directory") from None
        raise NotAMapError(f"{directory} holds no mmap_ninja map ({HEADER_FILE} is missing)") from None
    except IsADirectoryError:
        raise CorruptMapError(f"{path} is a directory, not a header file") from None
    try:
        size = os.fstat(fd).st_size
        if size > MAX_HEADER_BYTES:
            raise CorruptMapError(f"{path} is {size:,} bytes, more than a header may be ({MAX_HEADER_BYTES:,})")
        raw = os.read(fd, size + 1)
    except IsADirectoryError:
        raise CorruptMapError(f"{path} is a directory, not a header file") from None
    finally:
        os.close(fd)
    try:
        content = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CorruptMapError(f"{path} is not valid JSON: {e}") from None
    if isinstance(content, dict) and isinstance(content.get("requires"), list) \
            and header_slots.FEATURE in content["requires"] and content.get("format") == FORMAT_NAME:
        # A slot map (FORMAT.md, "commit.slots"): header.json is a stub; the header is the newest valid slot.
        path = directory / header_slots.SLOTS_FILE
        try:
            raw = header_slots.read_slots(directory)
            content = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise CorruptMapError(f"{path} holds a slot that is not valid JSON: {e}") from None
        if not isinstance(content, dict) or header_slots.FEATURE not in (content.get("requires") or ()):
            raise CorruptMapError(f"{path} holds a header that does not require {header_slots.FEATURE!r}")
    return parse_header(content, path, raw=raw)


def parse_header(content: Any, path: Path, features: Collection[str] = (), raw: Optional[bytes] = None) -> Header:
    """Check the decoded JSON of a header; ``path`` is only used in error messages. ``features``: ``requires``
    entries the caller handles itself on top of the registered ones (the remote reader's ``"objects"``). ``raw``:
    the bytes ``content`` was decoded from, if known (checking the header's own checksum on them skips encoding it
    again, and bytes this process already checked are not checked again: see `_CHECKED`)."""
    if raw is not None and not features:
        checked = _CHECKED.get(raw)
        if checked is not None and isinstance(content, dict):
            return _with_fresh_values(checked, content)
        header = _parse_header(content, path, features, raw)
        if len(raw) <= _CHECKED_MAX_BYTES:
            if len(_CHECKED) >= _CHECKED_ENTRIES:
                _CHECKED.clear()
            _CHECKED[raw] = header
        return header
    return _parse_header(content, path, features, raw)


_CHECKED: dict[bytes, Header] = {}
"""Headers this process parsed and found valid, by their exact bytes: what `parse_header` concludes from a header's
bytes depends on nothing else (the features it accepts only ever grow), so the same bytes read again, as every
open of an unchanged map reads them, skip the checks (issue 21: a tenth of opening a map). Failures are never kept:
every read of a damaged header is refused anew, naming its file."""
_CHECKED_ENTRIES = 256
_CHECKED_MAX_BYTES = 16 << 10  # at most 4 MiB of header bytes kept (a typical header is under 2 KiB)


def _with_fresh_values(checked: Header, content: dict[str, Any]) -> Header:
    """``checked`` (a header parsed from the bytes ``content`` was just decoded from) with the mutable values of
    ``content``: every open gets dicts of its own, as without `_CHECKED`, so no handle sees another's (the parsed
    columns, their dtypes and the scalars are immutable and shared)."""
    return Header(kind=checked.kind, columns=dict(checked.columns), attrs=content["attrs"], id=checked.id,
                  commit=checked.commit, version=checked.version, requires=checked.requires,
                  metadata=content.get("metadata", {}), building=checked.building, checksums=checked.checksums,
                  checksum_granularity=checked.checksum_granularity,
                  extra={k: v for k, v in content.items() if k not in _KEYS})


def _parse_header(content: Any, path: Path, features: Collection[str], raw: Optional[bytes]) -> Header:
    if not isinstance(content, dict) or content.get("format") != FORMAT_NAME:
        raise CorruptMapError(f"{path} is not a mmap_ninja header")
    # The version first: a newer major version may compute its checksum differently, so whatever its checksum
    # says, the reader can only say that it is too new.
    version = content.get("version")
    if (not isinstance(version, list) or len(version) != 2
            or not all(type(v) is int and v >= 0 for v in version)):
        raise CorruptMapError(f"{path} has no valid format version: {version!r}")
    if version[0] > FORMAT_VERSION[0]:
        raise FormatVersionError(
            f"{path.parent} uses format version {version[0]}.{version[1]}, newer than this mmap_ninja reads "
            f"({FORMAT_VERSION[0]}.{FORMAT_VERSION[1]}); upgrade mmap_ninja to read it")
    stored = content.pop("checksum", None)
    if stored is not None and not _raw_checksum_matches(raw, stored) and stored != header_checksum(content):
        raise CorruptMapError(f"{path} is corrupt: its checksum {stored!r} does not match its content")
    missing = _REQUIRED_KEYS - content.keys()
    if missing:
        raise CorruptMapError(f"{path} is missing the field(s) {', '.join(sorted(missing))}")
    requires = content.get("requires", [])
    if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
        raise CorruptMapError(f"{path}: 'requires' must be a list of feature names, got {requires!r}")
    unknown = [r for r in requires if r not in _FEATURES and r not in features]
    if unknown:
        raise UnknownFeatureError(
            f"{path.parent} requires the feature {unknown[0]!r}, which this mmap_ninja does not know "
            f"(it knows {sorted(_FEATURES) or 'none'}); upgrade mmap_ninja, or install the extra that provides it")
    kind, attrs, columns = content["kind"], content["attrs"], content["columns"]
    if not isinstance(kind, str):
        raise CorruptMapError(f"{path}: 'kind' must be a string, got {kind!r}")
    if not isinstance(attrs, dict):
        raise CorruptMapError(f"{path}: 'attrs' must be an object, got {type(attrs).__name__}")
    if columns == {} and header_slots.FEATURE in requires:
        raise CorruptMapError(f"{path} is the stub of a map kept with {header_slots.FEATURE!r}: its header is in "
                              f"{header_slots.SLOTS_FILE}, which only a local reader reads (mmap_ninja.upload "
                              f"publishes such a map as a plain one)")
    if not isinstance(columns, dict) or not columns:
        raise CorruptMapError(f"{path}: 'columns' must be a non-empty object")
    suffix = content.get("file_suffix")
    if suffix is not None and not (isinstance(suffix, str) and _SUFFIX.fullmatch(suffix)
                                   and header_slots.FEATURE in requires):
        raise CorruptMapError(f"{path}: 'file_suffix' must be 1 to 32 lowercase hex digits, in a map that requires "
                              f"{header_slots.FEATURE!r}; got {suffix!r}")
    parsed = {}
    for name, spec in columns.items():
        if not _COLUMN_NAME.fullmatch(name) or ".." in name:
            raise CorruptMapError(f"{path}: {name!r} is not a column name (letters, digits, '_', '-' and '.', not "
                                  f"leading): a header must not name files outside its map")
        if not isinstance(spec, dict) or not {"dtype", "length"} <= spec.keys():
            raise CorruptMapError(f"{path}: column {name!r} needs a 'dtype' and a 'length', got {spec!r}")
        length = spec["length"]
        if type(length) is not int or length < 0:
            raise CorruptMapError(f"{path}: column {name!r} has a bad length {length!r}")
        try:
            dtype = dtype_from_json(spec["dtype"])
        except (TypeError, ValueError, KeyError) as e:
            raise CorruptMapError(f"{path}: column {name!r} has a bad dtype {spec['dtype']!r}: {e}") from None
        if dtype.itemsize == 0 or dtype.hasobject:
            raise CorruptMapError(f"{path}: column {name!r} has an unusable dtype {dtype}")
        parsed[name] = Column(dtype, length)
    metadata = content.get("metadata", {})
    if not isinstance(metadata, dict):
        raise CorruptMapError(f"{path}: 'metadata' must be an object, got {type(metadata).__name__}")
    map_id, commit, building = content.get("id"), content.get("commit", 0), content.get("building", False)
    if map_id is not None and not isinstance(map_id, str):
        raise CorruptMapError(f"{path}: 'id' must be a string, got {map_id!r}")
    if type(commit) is not int or commit < 0:
        raise CorruptMapError(f"{path}: 'commit' must be a non-negative integer, got {commit!r}")
    if not isinstance(building, bool):
        raise CorruptMapError(f"{path}: 'building' must be true or false, got {building!r}")
    checksums = content.get("checksums")
    if checksums is not None and not (isinstance(checksums, dict) and isinstance(checksums.get("algorithm"), str)
                                      and "checksums" in parsed):
        raise CorruptMapError(f"{path}: 'checksums' must name an algorithm and come with a checksums column")
    granularity = None if checksums is None else checksums.get("granularity")
    if granularity is not None and (type(granularity) is not int or granularity <= 0):
        raise CorruptMapError(f"{path}: 'checksums.granularity' must be a positive number of bytes, got "
                              f"{granularity!r}")
    return Header(kind=kind, columns=parsed, attrs=attrs, id=map_id, commit=commit,
                  version=(version[0], version[1]), requires=tuple(requires), metadata=metadata,
                  building=building, checksums=None if checksums is None else checksums["algorithm"],
                  checksum_granularity=granularity,
                  extra={k: v for k, v in content.items() if k not in _KEYS})


def plain_header(directory: Path, header: Optional[Header] = None) -> bytes:
    """The header of the map in ``directory`` (``header``, if already read) as a plain map's ``header.json``: a
    slot map's without the feature and without ``file_suffix`` (what `mmap_ninja.upload` publishes, whose objects
    it names itself, reading each column from the local file ``header.file_of(column)`` names)."""
    header = read_header(directory) if header is None else header
    extra = {key: value for key, value in header.extra.items() if key != "file_suffix"}
    return encode_header(header.evolve(requires=tuple(r for r in header.requires if r != header_slots.FEATURE),
                                       extra=extra))


def encode_header(header: Header) -> bytes:
    """The bytes of ``header.json`` for ``header``, written in this code's format version unless the map's is
    a newer minor one (which a writer must not downgrade; `Store` refuses to write those)."""
    version = max(header.version, FORMAT_VERSION) if header.version[0] == FORMAT_VERSION[0] else FORMAT_VERSION
    content: dict[str, Any] = {
        "format": FORMAT_NAME,
        "version": list(version),
        "id": header.id,
        "commit": header.commit,
        "kind": header.kind,
        "requires": list(header.requires),
        "attrs": header.attrs,
        "metadata": header.metadata,
        "columns": {name: {"dtype": _column_descr(col.dtype), "length": col.length}
                    for name, col in header.columns.items()},
    }
    if header.building:
        content["building"] = True
    if header.checksums is not None:
        content["checksums"] = {"algorithm": header.checksums}
        if header.checksum_granularity is not None:
            content["checksums"]["granularity"] = header.checksum_granularity
    content.update(header.extra)
    encoded = json.dumps(content).encode()  # no indent: the C encoder, a third of the cost of a commit
    # The checksum key last: the same bytes as encoding the content with it, without encoding it twice.
    return encoded[:-1] + f', "checksum": "crc32:{zlib.crc32(encoded):08x}"}}'.encode()


_CHECKSUM_TAIL = re.compile(rb', "checksum": "(crc32:[0-9a-f]{8})"}\Z')


def _raw_checksum_matches(raw: Optional[bytes], stored: Any) -> bool:
    """Whether ``raw``, a header file as `encode_header` writes it (``, "checksum": "crc32:..."}`` last), holds
    the checksum ``stored`` of its own bytes before that key: then the header is its canonical encoding, which
    `header_checksum` would compute again (a header written any other way is checked that way)."""
    if raw is None or not isinstance(stored, str):
        return False
    tail = _CHECKSUM_TAIL.search(raw, max(0, len(raw) - 40))
    if tail is None or tail.group(1).decode() != stored:
        return False
    return f"crc32:{zlib.crc32(b'}', zlib.crc32(raw[:tail.start()])):08x}" == stored


def header_checksum(content: dict[str, Any]) -> str:
    """The header's own checksum: CRC-32 of its JSON encoding without the ``checksum`` key."""
    return f"crc32:{zlib.crc32(json.dumps(content).encode()):08x}"
