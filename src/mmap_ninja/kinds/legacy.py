"""Reading maps written by mmap_ninja 0.9.0, read-only, without converting them.

A 0.9.0 map is a directory with a ``type.ninja`` file (``string``, ``ragged`` or ``numpy``) and no
``header.json``. Every piece of it is an *np-dir*: ``data.ninja`` (raw elements), ``dtype.ninja``
(``np.dtype(d).name``), ``shape.ninja`` (little-endian uint64 per dimension) and ``order.ninja`` (``C``/``F``):

- numpy map: one np-dir, samples along its first axis;
- string map: ``data.ninja`` holds the UTF-8 bytes (or one zstd frame per string, when ``zstd_level.ninja``
  exists); ``starts/`` and ``ends/`` are np-dirs of int64 byte offsets;
- ragged map: the directory is an np-dir of all elements back to back; ``starts/`` and ``ends/`` hold element
  offsets; ``shapes/`` is an ``(n, 1)`` np-dir of lengths when ``shapes_are_flat.ninja`` holds 1, otherwise a
  ragged map whose samples are the shape vectors.

`open_legacy` opens one in O(1): the files are memory-mapped as they are, nothing is read per sample. The
readers give what 0.9.0 reads. Where 0.9.0 failed or was ambiguous they do this instead:

- a 0-d sample (stored as shape ``(0,)`` with one element) is a 0-d read-only array (0.9.0 returned
  ``.item()`` in a map of 1-D samples and raised in a map of N-d samples);
- an interrupted 0.9.0 write can leave ``starts``, ``ends`` and ``shapes`` of different lengths, or offsets
  past the end of ``data.ninja``: the readable length is what all of them cover, with a `LegacyMapWarning`;
- a ``zstd_level.ninja`` left behind by 0.9.0 over a map it re-created uncompressed is detected (the data
  does not start with a zstd frame) and ignored, with a `LegacyMapWarning`.

Writing to a 0.9.0 map is not supported: `legacy_write_refusal` gives the message saying how to convert it.
"""

from __future__ import annotations

import math
import mmap
import os
import shlex
import struct
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np

from mmap_ninja.errors import CorruptMapError, LegacyMapWarning, NotAMapError
from mmap_ninja.kinds.layouts import View

__all__ = [
    "CorruptMapError", "LegacyMap", "LegacyMapWarning", "LegacyNumpy", "LegacyRagged", "LegacyStrings", "LegacyView",
    "NotAMapError", "PathLike", "is_legacy_map", "legacy_write_refusal", "open_legacy", "parse_dtype",
]

PathLike = Union[str, "os.PathLike[str]"]

TYPE_FILE = "type.ninja"
NATIVE_HEADER_FILE = "header.json"
ZSTD_LEVEL_FILE = "zstd_level.ninja"
ZSTD_DICT_FILE = "zstd_dict.ninja"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # a zstd frame's first four bytes; never valid UTF-8 (0xB5 continues a character)
_TYPE_TO_KIND = {"string": "strings", "ragged": "ragged", "numpy": "numpy"}


def is_legacy_map(path: PathLike) -> bool:
    """Whether ``path`` is a directory written by mmap_ninja 0.9.0 (a ``type.ninja`` and no ``header.json``)."""
    directory = Path(path)
    return (directory / TYPE_FILE).is_file() and not (directory / NATIVE_HEADER_FILE).exists()


def legacy_write_refusal(path: PathLike) -> str:
    """The message of the PermissionError raised when writing to a 0.9.0 map is attempted."""
    source = os.path.abspath(os.fspath(path)).rstrip(os.sep) or os.sep
    return (f"{source} holds a map written by mmap_ninja 0.9.0, which this version reads but does not write: "
            f"0.9.0's format cannot be appended crash-safely. Convert it once (the source is left untouched) with: "
            f"mmap-ninja convert {shlex.quote(source)} {shlex.quote(source + '-v1')}")


# ---------------------------------------------------------------------------------------------- np-dirs


def _read_small_file(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except FileNotFoundError:
        raise CorruptMapError(f"{file} is missing; a map written by mmap_ninja 0.9.0 needs it") from None
    except IsADirectoryError:
        raise CorruptMapError(f"{file} is a directory; in a map written by mmap_ninja 0.9.0 it is a file") from None


def _read_ascii(file: Path) -> str:
    raw = _read_small_file(file)
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise CorruptMapError(f"{file} holds {raw[:40]!r}, which is not the ASCII text mmap_ninja 0.9.0 "
                              f"writes there") from None


def parse_dtype(file: Path) -> np.dtype:
    """The dtype named in a 0.9.0 ``dtype.ninja``, little-endian (0.9.0 did not record the byte order)."""
    name = _read_ascii(file)
    try:
        dtype = np.dtype(name)
    except TypeError:
        dtype = None
    if dtype is None or dtype.name != name or dtype.hasobject or dtype.kind in "OSUV":
        raise CorruptMapError(
            f"{file} holds the dtype name {name!r}, which does not identify a dtype: mmap_ninja 0.9.0 saved only "
            f"np.dtype(d).name, which loses the layout of strings, bytes, structured and object dtypes, and "
            f"could not read such a map back either")
    little = dtype.newbyteorder("<")
    return little.newbyteorder("=") if sys.byteorder == "little" else little  # native: memoryview indexes it


def _parse_shape(file: Path) -> tuple[int, ...]:
    raw = _read_small_file(file)
    if len(raw) % 8:
        raise CorruptMapError(f"{file} is {len(raw)} bytes long; mmap_ninja 0.9.0 writes 8 bytes per dimension "
                              f"(the file is truncated or damaged)")
    return struct.unpack(f"<{len(raw) // 8}Q", raw)


def _parse_order(file: Path) -> Literal["C", "F"]:
    order = _read_ascii(file)
    if order == "C":
        return "C"
    if order == "F":
        return "F"
    raise CorruptMapError(f"{file} holds {order!r}; mmap_ninja 0.9.0 writes 'C' or 'F' there")


def _map_file(file: Path) -> Any:
    """A read-only buffer over the whole file (an empty bytes for an empty file, which mmap refuses)."""
    try:
        with open(file, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return b""
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        raise CorruptMapError(f"{file} is missing; a map written by mmap_ninja 0.9.0 needs it") from None


def open_np_dir(directory: Path, *, ndim: int | None = None, warn: bool = True) -> np.ndarray:
    """The read-only ndarray that 0.9.0's ``np.memmap`` gave for an np-dir (dtype, shape and order as saved).

    ``data.ninja`` may be longer than the shape says (an interrupted 0.9.0 extend appends the data before it
    rewrites ``shape.ninja``): the shape is trusted, with a `LegacyMapWarning`. A shorter one is corrupt.
    """
    dtype = parse_dtype(directory / "dtype.ninja")
    shape = _parse_shape(directory / "shape.ninja")
    order = _parse_order(directory / "order.ninja")
    if ndim is not None and len(shape) != ndim:
        raise CorruptMapError(f"{directory / 'shape.ninja'} gives the shape {shape}; this part of a 0.9.0 map "
                              f"has {ndim} dimension{'s' if ndim != 1 else ''}")
    if not shape:
        raise CorruptMapError(f"{directory / 'shape.ninja'} is empty (a 0-d array, or a rewrite of the file "
                              f"that was interrupted); a map of samples has at least one dimension")
    data_file = directory / "data.ninja"
    buffer = _map_file(data_file)
    needed = math.prod(shape) * dtype.itemsize
    if len(buffer) < needed:
        raise CorruptMapError(f"{data_file} holds {len(buffer)} bytes, but {directory / 'shape.ninja'} says it "
                              f"holds an array of shape {shape} and dtype {dtype.name} ({needed} bytes): the file "
                              f"is truncated")
    if len(buffer) > needed and warn:
        warnings.warn(f"{data_file} holds {len(buffer) - needed} bytes past the {shape[0]} rows that "
                      f"{directory / 'shape.ninja'} declares, left by an interrupted mmap_ninja 0.9.0 extend; "
                      f"they are ignored", LegacyMapWarning, stacklevel=4)
    if needed == 0:
        array = np.empty(shape, dtype=dtype, order=order)
    else:
        array = np.ndarray(shape, dtype=dtype, buffer=buffer, order=order)
    array.flags.writeable = False
    return array


def _index_array(directory: Path, what: str, warn: bool = True) -> np.ndarray:
    array = open_np_dir(directory, ndim=1, warn=warn)
    if array.dtype.kind not in "iu":
        raise CorruptMapError(f"{directory / 'dtype.ninja'} says {array.dtype.name}; the {what} of a 0.9.0 map "
                              f"are integers")
    if not array.dtype.isnative:  # only on big-endian machines: memoryview indexes native integers only
        array = array.astype(array.dtype.newbyteorder("="))
        array.flags.writeable = False
    return array


def _readable_length(path: Path, lengths: dict[str, int], ends: np.ndarray, data_size: int, data_file: Path,
                     warn: bool = True) -> int:
    """How many samples every index covers and whose data ``data_file`` holds in full; warns if not all."""
    length = min(lengths.values())
    if len(set(lengths.values())) > 1 and warn:
        counts = ", ".join(f"{name}: {count}" for name, count in lengths.items())
        warnings.warn(f"{path} is a mmap_ninja 0.9.0 map whose index files disagree ({counts} samples), left by "
                      f"an interrupted 0.9.0 write; reading the first {length}", LegacyMapWarning, stacklevel=4)
    if length and int(ends[length - 1]) > data_size:
        # 0.9.0 offsets only grow, so the samples whose data is complete are a prefix (found in O(log n)).
        complete = int(np.searchsorted(ends[:length], data_size, side="right"))
        if warn:
            warnings.warn(f"{data_file} ends before the data of samples {complete} to {length - 1} of {path} "
                          f"(an interrupted mmap_ninja 0.9.0 write); reading the first {complete}",
                          LegacyMapWarning, stacklevel=4)
        length = complete
    return length


def _corrupt_sample(path: Path, position: int, detail: str) -> CorruptMapError:
    return CorruptMapError(f"sample {position} of the mmap_ninja 0.9.0 map {path} is damaged: {detail}")


class _LegacyReader:
    kind: str = ""

    def __init__(self, path: Path, length: int):
        self.path = path
        self._length = length

    def __len__(self) -> int:
        return self._length

    def _position(self, index: int) -> int:
        length = self._length
        position = index + length if index < 0 else index
        if not 0 <= position < length:
            raise IndexError(f"index {index} is out of range for a map of length {length}")
        return position

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}) of length {self._length}"


# ---------------------------------------------------------------------------------------------- strings


class LegacyStrings(_LegacyReader):
    """A 0.9.0 string map, read-only. ``get(i)`` is the i-th ``str``."""

    kind = "strings"

    def __init__(self, path: Path):
        starts = _index_array(path / "starts", "starts")
        ends = _index_array(path / "ends", "ends")
        data_file = path / "data.ninja"
        self._buffer = _map_file(data_file)
        self._data = memoryview(self._buffer)
        self._size = len(self._data)
        length = _readable_length(path, {"starts": len(starts), "ends": len(ends)}, ends, len(self._data),
                                  data_file)
        super().__init__(path, length)
        self._starts_array, self._ends_array = starts[:length], ends[:length]
        self._starts, self._ends = self._starts_array.data, self._ends_array.data
        self.zstd_level: int | None = None
        self.zstd_dict: bytes | None = None
        self._local = threading.local()
        if (path / ZSTD_LEVEL_FILE).exists():
            self._open_zstd(path)

    def _open_zstd(self, path: Path) -> None:
        level_text = _read_ascii(path / ZSTD_LEVEL_FILE)
        try:
            level = int(level_text)
        except ValueError:
            raise CorruptMapError(f"{path / ZSTD_LEVEL_FILE} holds {level_text!r}; mmap_ninja 0.9.0 writes the "
                                  f"zstd level there as an integer") from None
        if self._length:
            # Every string of a compressed map is a zstd frame (never empty, starting with the magic number).
            first = bytes(self._data[self._starts[0]:min(self._ends[0], self._starts[0] + 4)])
            if first != _ZSTD_MAGIC:
                warnings.warn(f"{path / ZSTD_LEVEL_FILE} is stale: the strings of {path} are not zstd frames "
                              f"(mmap_ninja 0.9.0 left the file when it re-created the map without compression); "
                              f"reading them as plain UTF-8", LegacyMapWarning, stacklevel=3)
                return
        _import_zstandard()
        self.zstd_level = level
        if (path / ZSTD_DICT_FILE).exists():
            self.zstd_dict = _read_small_file(path / ZSTD_DICT_FILE)

    @property
    def nbytes(self) -> int:
        """The size of ``data.ninja`` (the strings' UTF-8 bytes, or their zstd frames)."""
        return len(self._data)

    @property
    def compressed(self) -> bool:
        """Whether every string is stored as its own zstd frame."""
        return self.zstd_level is not None

    def _decompressor(self) -> Any:
        # zstandard's decompressor objects are not thread-safe: one per thread.
        decompressor = getattr(self._local, "decompressor", None)
        if decompressor is None:
            zstandard = _import_zstandard()
            dict_data = None if self.zstd_dict is None else zstandard.ZstdCompressionDict(self.zstd_dict)
            decompressor = self._local.decompressor = zstandard.ZstdDecompressor(dict_data=dict_data)
        return decompressor

    def get(self, index: int) -> str:
        """The string at ``index`` (negative counts from the end)."""
        length = self._length  # the checks are inlined: this is the hot path of every read
        position = index + length if index < 0 else index
        if not 0 <= position < length:
            raise IndexError(f"index {index} is out of range for a map of length {length}")
        start, stop = self._starts[position], self._ends[position]
        if self.zstd_level is None and 0 <= start <= stop <= self._size:
            try:
                return str(self._data[start:stop], "utf-8")
            except UnicodeDecodeError:
                pass  # named below
        if not 0 <= start <= stop <= self._size:
            raise _corrupt_sample(self.path, position, f"its bytes {start}:{stop} are outside data.ninja "
                                                       f"({self._size} bytes)")
        return self._decode(position, self._data[start:stop])

    def _decode(self, position: int, raw: Any) -> str:
        if self.zstd_level is not None:
            try:
                raw = self._decompressor().decompress(raw)
            except Exception as e:  # zstandard.ZstdError, without importing it here
                raise _corrupt_sample(self.path, position, f"its zstd frame does not decompress ({e})") from None
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as e:
            raise _corrupt_sample(self.path, position, f"its bytes are not UTF-8 ({e.reason} at byte "
                                                       f"{e.start})") from None

    def get_many(self, positions: np.ndarray) -> list[str]:
        """The strings at ``positions`` (ints in ``range(len(self))``)."""
        starts = self._starts_array[positions]
        stops = self._ends_array[positions]
        if len(starts) and ((starts < 0).any() or (starts > stops).any() or stops.max() > len(self._data)):
            bad = int(positions[np.flatnonzero((starts < 0) | (starts > stops) | (stops > len(self._data)))[0]])
            return [self.get(bad)]  # raises, naming the sample
        data = self._data
        if self.zstd_level is None:
            try:
                return [str(data[a:b], "utf-8") for a, b in zip(starts.tolist(), stops.tolist())]
            except UnicodeDecodeError:
                pass  # found again below, naming the sample
        return [self._decode(p, data[a:b]) for p, a, b in zip(positions.tolist(), starts.tolist(), stops.tolist())]


def _import_zstandard() -> Any:
    try:
        import zstandard
    except ImportError:
        raise ImportError("reading a zstd-compressed mmap_ninja 0.9.0 string map needs the zstandard package: "
                          "pip install zstandard") from None
    return zstandard


# ---------------------------------------------------------------------------------------------- ragged


class LegacyRagged(_LegacyReader):
    """A 0.9.0 ragged map, read-only. ``get(i)`` is a read-only view of the i-th array."""

    kind = "ragged"

    def __init__(self, path: Path, *, warn: bool = True):
        values = open_np_dir(path, ndim=1, warn=warn)  # the map's own directory is the np-dir of all elements
        starts = _index_array(path / "starts", "starts", warn)
        ends = _index_array(path / "ends", "ends", warn)
        flat_file = path / "shapes_are_flat.ninja"
        flag = _read_small_file(flat_file)
        if len(flag) != 4 or struct.unpack("<i", flag)[0] not in (0, 1):
            raise CorruptMapError(f"{flat_file} holds {flag!r}; mmap_ninja 0.9.0 writes a 4-byte 1 or 0 there")
        self.shapes_are_flat = struct.unpack("<i", flag)[0] == 1
        shapes_dir = path / "shapes"
        self._nested: LegacyRagged | None = None
        lengths = np.empty((0, 1), dtype=np.int64)
        if self.shapes_are_flat:
            lengths = open_np_dir(shapes_dir, ndim=2, warn=warn)
            if lengths.shape[1] != 1 or lengths.dtype.kind not in "iu":
                raise CorruptMapError(f"{shapes_dir} holds {lengths.dtype.name} of shape {lengths.shape}; in a "
                                      f"0.9.0 map of 1-D samples it is an (n, 1) array of lengths")
            shape_count = len(lengths)
        else:
            if not is_legacy_map(shapes_dir) or _read_ascii(shapes_dir / TYPE_FILE) != "ragged":
                raise CorruptMapError(f"{shapes_dir} is not the ragged map of shape vectors that mmap_ninja 0.9.0 "
                                      f"writes for a map of N-d samples")
            # Its traces of an interrupted write show in this map's own warning (a shorter `shapes`).
            nested = LegacyRagged(shapes_dir, warn=False)
            if not nested.shapes_are_flat or nested.dtype.kind not in "iu":
                raise CorruptMapError(f"{shapes_dir} is not the ragged map of integer shape vectors that "
                                      f"mmap_ninja 0.9.0 writes for a map of N-d samples")
            self._nested = nested
            shape_count = len(nested)
        length = _readable_length(path, {"starts": len(starts), "ends": len(ends), "shapes": shape_count}, ends,
                                  len(values), path / "data.ninja", warn)
        super().__init__(path, length)
        self.dtype: np.dtype = values.dtype
        self._values = values
        self._size = len(values)
        self._starts_array, self._ends_array = starts[:length], ends[:length]
        self._starts, self._ends = self._starts_array.data, self._ends_array.data
        if self.shapes_are_flat:
            self._lengths_array = lengths[:length, 0]
            self._lengths = self._lengths_array.data
        else:
            assert self._nested is not None
            self._dims = self._nested._values.data
            self._dim_starts, self._dim_ends = self._nested._starts, self._nested._ends

    def get(self, index: int) -> np.ndarray:
        """A read-only view of the array at ``index`` (negative counts from the end)."""
        length = self._length  # the checks are inlined: this is the hot path of every read
        position = index + length if index < 0 else index
        if not 0 <= position < length:
            raise IndexError(f"index {index} is out of range for a map of length {length}")
        start, stop = self._starts[position], self._ends[position]
        if self._nested is None:
            size = self._lengths[position]
            if size == stop - start and start >= 0 and stop <= self._size:
                return self._values[start:stop]
            if size == 0 and stop - start == 1 and start >= 0 and stop <= self._size:
                return self._values[start:stop].reshape(())  # a 0-d sample
            raise _corrupt_sample(self.path, position, f"starts/ends give elements {start}:{stop} of {self._size} "
                                                       f"and shapes/ gives the length {size}")
        first, last = self._dim_starts[position], self._dim_ends[position]
        shape = tuple(self._dims[first:last])
        return self._shaped(position, start, stop, shape, last - first)

    def _shaped(self, position: int, start: int, stop: int, shape: tuple[int, ...], ndim: int) -> np.ndarray:
        if 0 <= start <= stop <= len(self._values) and len(shape) == ndim:
            size = stop - start
            if math.prod(shape) == size:
                return self._values[start:stop].reshape(shape)
            if shape == (0,) and size == 1:
                return self._values[start:stop].reshape(())  # a 0-d sample
        raise _corrupt_sample(self.path, position, f"starts/ends give elements {start}:{stop} of "
                                                   f"{len(self._values)} and shapes/ gives the shape {shape}")

    @property
    def nbytes(self) -> int:
        """The size of all elements of all samples."""
        return int(self._values.nbytes)

    def shape(self, index: int) -> tuple[int, ...]:
        """The shape of the array at ``index``, read from the index only."""
        return tuple(self.get(index).shape)  # views cost no data read

    def get_many(self, positions: np.ndarray) -> list[np.ndarray]:
        """Read-only views of the arrays at ``positions`` (ints in ``range(len(self))``)."""
        starts = self._starts_array[positions]
        stops = self._ends_array[positions]
        if self._nested is not None:
            return self._get_many_nd(positions, starts.tolist(), stops.tolist())
        lengths = self._lengths_array[positions]
        sizes = stops - starts
        plain = (lengths == sizes) & (starts >= 0) & (stops <= len(self._values))
        values = self._values
        if plain.all():
            return [values[a:b] for a, b in zip(starts.tolist(), stops.tolist())]
        return [values[a:b] if ok else self.get(p)
                for p, a, b, ok in zip(positions.tolist(), starts.tolist(), stops.tolist(), plain.tolist())]


    def _get_many_nd(self, positions: np.ndarray, starts: list[int], stops: list[int]) -> list[np.ndarray]:
        assert self._nested is not None
        firsts = self._nested._starts_array[positions].tolist()
        lasts = self._nested._ends_array[positions].tolist()
        dims, values, size = self._dims, self._values, len(self._values)
        samples = []
        for position, start, stop, first, last in zip(positions.tolist(), starts, stops, firsts, lasts):
            shape = tuple(dims[first:last])
            if 0 <= start <= stop <= size and len(shape) == last - first and math.prod(shape) == stop - start:
                samples.append(values[start:stop].reshape(shape))
            else:  # a 0-d sample, or damage (named by _shaped)
                samples.append(self._shaped(position, start, stop, shape, last - first))
        return samples


# ---------------------------------------------------------------------------------------------- numpy


class LegacyNumpy(_LegacyReader):
    """A 0.9.0 numpy map, read-only: ``array`` is the whole map as 0.9.0's ``np.memmap`` saw it."""

    kind = "numpy"

    def __init__(self, path: Path):
        self.array: np.ndarray = open_np_dir(path)
        self.dtype: np.dtype = self.array.dtype
        self.order: Literal["C", "F"] = _parse_order(path / "order.ninja")
        self.sample_shape: tuple[int, ...] = tuple(self.array.shape[1:])
        super().__init__(path, len(self.array))

    @property
    def nbytes(self) -> int:
        """The size of the whole array."""
        return int(self.array.nbytes)

    def get(self, index: int) -> Any:
        """A read-only view of the sample at ``index`` (negative counts from the end); a NumPy scalar when the
        samples are scalars (a map of shape ``(n,)``), as in 0.9.0."""
        return self.array[self._position(index)]

    def get_many(self, positions: np.ndarray) -> list[Any]:
        """The samples at ``positions`` (gathered in one NumPy operation, so they are copies)."""
        return list(self.array[positions])


LegacyMap = Union[LegacyStrings, LegacyRagged, LegacyNumpy]


def open_legacy(path: PathLike) -> LegacyMap:
    """Open the map mmap_ninja 0.9.0 wrote in ``path`` for reading, in O(1).

    Raises NotAMapError if ``path`` is not such a map, CorruptMapError (naming the file) if one of its files is
    missing, truncated or damaged, ImportError if it is zstd-compressed and ``zstandard`` is not installed.
    """
    directory = Path(path)
    if not is_legacy_map(directory):
        if (directory / NATIVE_HEADER_FILE).exists():
            raise NotAMapError(f"{directory} holds a map in the current format, not one written by mmap_ninja 0.9.0")
        raise NotAMapError(f"{directory} holds no map written by mmap_ninja 0.9.0 (it has no {TYPE_FILE})")
    type_name = _read_ascii(directory / TYPE_FILE)
    kind = _TYPE_TO_KIND.get(type_name)
    if kind == "strings":
        return LegacyStrings(directory)
    if kind == "ragged":
        return LegacyRagged(directory)
    if kind == "numpy":
        return LegacyNumpy(directory)
    raise CorruptMapError(f"{directory / TYPE_FILE} holds {type_name!r}; mmap_ninja 0.9.0 writes 'string', "
                          f"'ragged' or 'numpy' there")


class LegacyView(View):
    """The view a container reads a map written by mmap_ninja 0.9.0 through (one of this module's readers)."""

    def __init__(self, reader: Any):
        self.reader = reader
        self.length = len(reader)
        self.get = reader.get  # type: ignore[method-assign]
        self.get_many = reader.get_many  # type: ignore[method-assign]
        for name in ("dtype", "array", "sample_shape", "order", "shape"):
            if hasattr(reader, name):
                setattr(self, name, getattr(reader, name))

    def shapes_at(self, positions: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        shapes = [self.reader.shape(p) for p in positions.tolist()]
        if len({len(s) for s in shapes}) > 1:
            raise ValueError(f"samples {positions[0]} and others have different numbers of dimensions")
        return np.array(shapes, dtype=np.int64).reshape(len(shapes), -1 if shapes else 1)

    def checked_shapes(self, positions: np.ndarray[Any, Any], sizes: Any = None) -> np.ndarray[Any, Any]:
        """`shapes_at`: the 0.9.0 reader takes each shape from its sample, whose size it checks on every read."""
        return self.shapes_at(positions)

    @property
    def values(self) -> np.ndarray[Any, Any]:
        raise TypeError(f"{self.reader.path} was written by mmap_ninja 0.9.0, which keeps no offsets and values "
                        f"arrays; convert it with `mmap-ninja convert` to get them")

    offsets = values
