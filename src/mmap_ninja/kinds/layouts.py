"""Kinds of maps as layouts: which columns a kind stores, how a batch of samples is encoded into them, and how
a snapshot of them is read back as samples. FORMAT.md gives each layout's columns and attributes.

A layout has no state of its own and never touches files: it reads columns from a `Store` it is given and
returns column buffers for the container to append. Containers (`StringsMmap`, ...) pair one layout with
indexing, building, pickling and locking, and register the kind; `mmap_ninja.open_existing` looks kinds up there.

Every read view is immutable: a container swaps a whole new view in with one assignment when the map grows,
so a thread reading a map while another appends to it always sees one consistent snapshot.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import chain, islice
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Optional, Protocol

import numpy as np

from mmap_ninja.errors import CorruptMapError
from mmap_ninja.kinds._batching import utf8_all, write_pieces
from mmap_ninja.kinds.casting import as_array, cast, raw_bytes, storable_dtype
from mmap_ninja.kinds.codecs import Codec, Zstd, codec_from_option, codec_from_spec, compressor_for
from mmap_ninja.storage.format import dtype_from_json, dtype_to_json

__all__ = [
    "Columns", "EmptyColumns", "Encoded", "Layout", "NumpyLayout", "StringsLayout", "View",
    "check_lengths", "refuse_single_text",
]

# How many samples sequential iteration decodes the offsets of at once (one vectorized check per chunk).
_ITER_CHUNK = 8192
# Strings iteration decodes a chunk of ASCII strings as one span when they average at most this many bytes (longer
# ones: the copy of the span costs more than a decoder call per string saves).
_SHORT_STRING_BYTES = 128


class Columns(Protocol):
    """Where a view reads columns from: a `Store`, or `EmptyColumns`."""

    @property
    def path(self) -> Path: ...

    @property
    def attrs(self) -> dict[str, Any]: ...

    def column(self, name: str) -> np.ndarray[Any, Any]: ...


class EmptyColumns:
    """The columns of a map that does not exist yet (an empty map until its first write creates it)."""

    def __init__(self, path: Path, layout: Layout, attrs: Optional[dict[str, Any]] = None):
        self.path = path
        self.layout = layout
        self.attrs = layout.attrs() if attrs is None else attrs

    def column(self, name: str) -> np.ndarray[Any, Any]:
        items = np.asarray(self.layout.initial.get(name, []), dtype=self.layout.columns[name])
        items.flags.writeable = False
        return items


class Encoded(NamedTuple):
    """A batch ready to append: buffers per column, and the header attributes after it (None: unchanged)."""

    columns: dict[str, Any]
    attrs: Optional[dict[str, Any]]


class View:
    """An immutable snapshot of a map's samples. ``length`` is the number of samples."""

    length: int = 0

    def get(self, position: int) -> Any:
        """Sample ``position`` (already checked to be in ``range(length)``)."""
        raise NotImplementedError

    def get_many(self, positions: np.ndarray[Any, Any]) -> list[Any]:
        """The samples at ``positions`` (an int64 array of checked positions)."""
        return [self.get(p) for p in positions.tolist()]

    def iterate(self, start: int = 0) -> Iterator[Any]:
        """Every sample from ``start`` on, in order."""
        return map(self.get, range(start, self.length))


class Layout:
    """What a kind of map stores. Subclasses set `kind`, `columns` and `initial` and implement the methods."""

    kind: ClassVar[str]
    columns: ClassVar[dict[str, str]]  # column name -> item dtype
    initial: ClassVar[dict[str, list[int]]] = {}  # the items a column starts with

    def attrs(self, **options: Any) -> dict[str, Any]:
        """The header attributes of a new, empty map made with ``options``."""
        if options:
            raise TypeError(f"unexpected option(s) for a {self.kind} map: {', '.join(options)}")
        return {}

    def view(self, columns: Columns) -> View:
        """A read view of the current columns (a `Store`, or `EmptyColumns` for a map not created yet)."""
        raise NotImplementedError

    def codec(self, attrs: dict[str, Any]) -> Optional[Codec]:
        """The map's per-sample codec, if it has one."""
        spec = attrs.get("codec")
        return codec_from_spec(spec) if spec else None

    def columns_for(self, attrs: dict[str, Any]) -> dict[str, str]:
        """The columns of a map with these attributes: the kind's own, and a codec's dictionary."""
        return {**self.columns, "dictionary": "|u1"} if attrs.get("codec") else dict(self.columns)

    def initial_for(self, attrs: dict[str, Any]) -> dict[str, list[int]]:
        """The items the columns of a new map with these attributes start with."""
        return dict(self.initial)

    derived_attrs: ClassVar[frozenset[str]] = frozenset({"ndims", "trained"})
    """Header attributes that are facts about the samples a map holds, not its schema (a ragged map's ``ndims``,
    whether a codec's dictionary is trained): maps of one schema may differ in them."""

    def shared_attrs(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The schema part of a map's attributes (dtype, sample shape, codec, ...: all but `derived_attrs`),
        which the shards of one sharded map must agree on, with its keys sorted."""
        return {key: attrs[key] for key in sorted(attrs) if key not in self.derived_attrs}

    def without_derived(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The attributes of a map of the same samples without its derived (``derived-``) columns: what a part of
        its rows on their own is (a block of a map read by blocks). Most kinds have no derived column."""
        return attrs

    def index_units(self, attrs: dict[str, Any]) -> dict[str, int]:
        """For each group of columns (by column-name prefix: ``""``, a records field's ``"<field>."``), how many
        bytes of its ``data`` one unit of its ``offsets`` counts: what `verify` checks the offsets against."""
        return {"": 1}

    def check_columns(self, columns: Mapping[str, np.ndarray[Any, Any]], attrs: dict[str, Any],
                      prefix: str = "") -> list[str]:
        """What a shallow `verify` checks of this kind's columns beyond the offsets (which it checks for every
        kind first; this runs only on columns whose offsets are sound): the problems found, each naming the file
        and the sample. Cheap: no hashing, vectorized, in bounded chunks. ``prefix`` is the columns' name prefix
        (a records field's ``"<field>."``); ``attrs`` are the kind's attributes (the field's)."""
        return []

    def requires(self, attrs: dict[str, Any]) -> list[str]:
        """The features a reader must know to read such a map (a codec's, for one)."""
        codec = self.codec(attrs)
        return [codec.feature()] if codec is not None else []

    def sample_bytes(self, batch: Any) -> list[bytes]:
        """The bytes a codec would compress for each sample of ``batch`` (to train a dictionary on)."""
        raise NotImplementedError

    def count(self, lengths: dict[str, int], attrs: dict[str, Any]) -> int:
        """The number of samples in columns of these lengths."""
        return lengths["offsets"] - 1

    def batch(self, samples: Any, lengths: dict[str, int], attrs: dict[str, Any]) -> Any:
        """``samples`` (any iterable the user passed to ``extend``) as a sized batch, or a TypeError."""
        return list(samples)

    def encode(self, batch: Any, lengths: dict[str, int], attrs: dict[str, Any], dictionary: bytes = b"") -> Encoded:
        """Validate and encode a batch (from `batch`) to append to columns of these ``lengths``; raises
        before anything is written. Error messages name samples by their index in the map. ``dictionary`` is the
        codec's trained dictionary, if any."""
        raise NotImplementedError

    def encode_set(self, view: View, attrs: dict[str, Any], position: int, value: Any) -> tuple[str, int, Any]:
        """Validate an in-place assignment of sample ``position`` of ``view``: ``(column, item offset, buffer)``
        to write over the old value."""
        raise NotImplementedError


def codec_attrs(codec: Any, zstd_level: Optional[int] = None,
                zstd_train_dictionary_size: Optional[int] = None) -> dict[str, Any]:
    """The attributes that record the codec a user asked for (none for no codec). mmap_ninja 0.9.0's
    ``zstd_level=`` and ``zstd_train_dictionary_size=`` ask for `Zstd` with that level and dictionary size."""
    if zstd_level is not None or zstd_train_dictionary_size is not None:
        if codec is not None:
            raise TypeError("pass either codec= or zstd_level=/zstd_train_dictionary_size=, not both")
        codec = Zstd(level=3 if zstd_level is None else zstd_level,
                     dictionary_size=zstd_train_dictionary_size or 0)
    chosen = codec_from_option(codec)
    if chosen is None:
        return {}
    return {"codec": chosen.spec(), "trained": not chosen.trains()}


def _compress_all(attrs: dict[str, Any], dictionary: bytes, buffers: list[Any]) -> list[Any]:
    spec = attrs.get("codec")
    if not spec:
        return buffers
    compress = compressor_for(spec, dictionary)
    return [compress(b) for b in buffers]


def _refuse_in_place(attrs: dict[str, Any], position: int) -> None:
    spec = attrs.get("codec")
    if spec:
        raise ValueError(f"item {position} cannot be assigned in place: the map is compressed ({spec['name']}), and "
                         f"a compressed map is never assigned in place (a sample's compressed size depends on its "
                         f"value); write a new map, or convert it with codec 'none' first")


def check_lengths(lengths: Any, total: int) -> np.ndarray[Any, Any]:
    """``lengths`` as int64 sizes of new samples, checked to be non-negative and to add up to ``total``."""
    sizes = np.asarray(lengths)
    if sizes.ndim != 1 or (sizes.size and sizes.dtype.kind not in "iu"):
        raise TypeError(f"lengths must be a 1-D sequence of integers, got {sizes.dtype} of shape {sizes.shape}")
    sizes = sizes.astype(np.int64)
    if (sizes < 0).any():
        bad = int(np.flatnonzero(sizes < 0)[0])
        raise ValueError(f"lengths[{bad}] is {sizes[bad]}; lengths cannot be negative")
    if int(sizes.sum()) != total:
        raise ValueError(f"the lengths add up to {int(sizes.sum())}, but {total} were given")
    return sizes


# ---------------------------------------------------------------------------------------------------- offsets

class OffsetsView(View):
    """Samples stored back to back in a data column, found through an offsets column of n + 1 int64."""

    def __init__(self, store: Columns, values: np.ndarray[Any, Any], offsets: np.ndarray[Any, Any]):
        self.path = store.path
        if len(offsets) == 0:
            raise CorruptMapError(f"{store.path} is damaged: its header gives an offsets column no entries (it needs "
                                  f"n + 1, from 0)")
        self.values = values
        self.offsets = offsets
        self.length = len(offsets) - 1
        self.size = len(values)
        # Indexing a memoryview gives a Python int, several times faster than indexing an ndarray.
        self.starts = offsets[:-1].data
        self.stops = offsets[1:].data

    def corrupt(self, positions: Any) -> CorruptMapError:
        return CorruptMapError(
            f"{self.path / 'offsets.bin'} is corrupt: the offsets of sample(s) {positions} decrease or point past "
            f"the {self.size} committed items of data")

    def spans(self, positions: np.ndarray[Any, Any]) -> tuple[list[int], list[int]]:
        """Start and stop offsets of the samples at ``positions``, checked, as lists of ints."""
        starts, stops = self.offsets[positions], self.offsets[positions + 1]
        if len(positions) and ((starts > stops).any() or starts.min() < 0 or stops.max() > self.size):
            raise self.corrupt(positions[(starts > stops) | (starts < 0) | (stops > self.size)][:5].tolist())
        return starts.tolist(), stops.tolist()

    def chunks(self, start: int) -> Iterator[list[int]]:
        """The offsets from sample ``start`` on, in checked chunks of Python ints (each overlapping the next
        by one), for sequential iteration."""
        return map(np.ndarray.tolist, self.offset_chunks(start))

    def offset_chunks(self, start: int) -> Iterator[np.ndarray[Any, Any]]:
        """`chunks` as int64 arrays: the offsets from sample ``start`` on, ``_ITER_CHUNK`` samples' at a time, each
        chunk checked to rise within the committed data (one vectorized check per chunk)."""
        offsets = self.offsets
        for first in range(start, self.length, _ITER_CHUNK):
            chunk = offsets[first:first + _ITER_CHUNK + 1]
            if chunk[0] < 0 or chunk[-1] > self.size or (chunk[1:] < chunk[:-1]).any():
                raise self.corrupt(f"{first}..{first + len(chunk) - 2}")
            yield chunk


class StringsView(OffsetsView):
    def __init__(self, store: Columns):
        super().__init__(store, store.column("data"), store.column("offsets"))
        self.utf8 = self.values.data

    def get(self, position: int) -> str:
        start, stop = self.starts[position], self.stops[position]
        if not 0 <= start <= stop <= self.size:
            raise self.corrupt(position)
        try:
            return str(self.utf8[start:stop], "utf-8")
        except UnicodeDecodeError as e:  # damaged bytes, or offsets that cut a character
            raise damaged_sample(self.path, position, e) from None

    def get_many(self, positions: np.ndarray[Any, Any]) -> list[str]:
        utf8 = self.utf8
        try:
            return [str(utf8[a:b], "utf-8") for a, b in zip(*self.spans(positions))]
        except UnicodeDecodeError:
            for position in positions.tolist():
                self.get(position)  # names the first damaged sample
            raise

    def iterate(self, start: int = 0) -> Iterator[str]:
        return chain.from_iterable(self._decoded_chunks(start))

    def _decoded_chunks(self, start: int) -> Iterator[Iterable[str]]:
        """The strings from ``start`` on, a chunk of offsets at a time: a chunk of short strings decoded as one span
        and cut into a list (no decoder call nor generator resume per string, issue 21: 1.2-1.6x faster for ASCII
        strings of 8-128 bytes, 1.3-1.5x for strings of one- to four-byte characters of 32 bytes), any other chunk
        decoded string by string as it is read. A span that is not valid UTF-8, or that an offset cuts inside a
        character, is decoded string by string too, which names the damaged sample as ``m[i]`` does."""
        utf8 = self.utf8
        position = start
        for chunk in self.offset_chunks(start):
            first, last, count = int(chunk[0]), int(chunk[-1]), len(chunk) - 1
            text, cuts = None, chunk - first  # the offsets from the span's start
            if last - first <= _SHORT_STRING_BYTES * count:
                try:  # ASCII, the common case: this one decode is also the check (no byte past 0x7F)
                    text = str(utf8[first:last], "ascii")
                except UnicodeDecodeError:
                    text = self._utf8_span(first, last, cuts)
            if text is None:
                yield self._decode_each(chunk.tolist(), position)
            else:
                bounds = cuts.tolist()
                yield [text[a:b] for a, b in zip(bounds, islice(bounds, 1, None))]
            position += count

    def _utf8_span(self, first: int, last: int, cuts: np.ndarray[Any, Any]) -> Optional[str]:
        """The bytes ``first..last`` decoded as one UTF-8 text, with ``cuts`` (byte offsets into them) changed in
        place into the text's character offsets; None if they are not valid UTF-8 or a cut falls inside a character.
        A cut at a byte that is no continuation byte (``10xxxxxx``) starts a character of a valid text, so every
        piece between two cuts is valid UTF-8 on its own and decodes to the text's characters between them."""
        try:
            text = str(self.utf8[first:last], "utf-8")
        except UnicodeDecodeError:
            return None
        continues = (self.values[first:last] & 0xC0) == 0x80
        inner = cuts[cuts < last - first]
        if continues[inner].any():
            return None
        cuts -= np.searchsorted(np.flatnonzero(continues), cuts)  # a character per byte that starts one
        return text

    def _decode_each(self, offsets: list[int], position: int) -> Iterator[str]:
        """The strings of one chunk of offsets (the first is sample ``position``), decoded one by one."""
        utf8 = self.utf8
        bounds = iter(offsets)
        begin = next(bounds)
        try:
            for end in bounds:  # each string's end is the next one's beginning
                yield str(utf8[begin:end], "utf-8")
                begin = end
        except UnicodeDecodeError:
            for sample in range(position, position + len(offsets) - 1):
                self.get(sample)  # names the first damaged sample
            raise


def damaged_sample(path: Path, position: int, error: Exception, column: str = "data") -> CorruptMapError:
    """The error for a compressed sample whose bytes do not decode (``error`` says how)."""
    if isinstance(error, UnicodeDecodeError):
        return CorruptMapError(f"{path / (column + '.bin')} or offsets.bin is damaged: sample {position} is not "
                               f"valid UTF-8 ({error.reason} at byte {error.start})")
    return CorruptMapError(f"{path / (column + '.bin')} is damaged: sample {position} does not decode: {error}")


class CompressedStringsView(StringsView):
    """Strings each compressed on its own: a read decompresses one of them."""

    def __init__(self, store: Columns, codec: Codec):
        super().__init__(store)
        self.decompress = codec.decompressor(bytes(store.column("dictionary")) or None)

    def get(self, position: int) -> str:
        start, stop = self.starts[position], self.stops[position]
        if not 0 <= start <= stop <= self.size:
            raise self.corrupt(position)
        try:
            return str(self.decompress(self.utf8[start:stop]), "utf-8")
        except (CorruptMapError, UnicodeDecodeError) as e:
            raise damaged_sample(self.path, position, e) from None

    def get_many(self, positions: np.ndarray[Any, Any]) -> list[str]:
        utf8, decompress = self.utf8, self.decompress
        try:
            return [str(decompress(utf8[a:b]), "utf-8") for a, b in zip(*self.spans(positions))]
        except (CorruptMapError, UnicodeDecodeError):
            for position in positions.tolist():
                self.get(position)  # names the first damaged sample
            raise

    def iterate(self, start: int = 0) -> Iterator[str]:
        utf8, decompress = self.utf8, self.decompress
        position = start
        for offsets in self.chunks(start):
            for a, b in zip(offsets, offsets[1:]):
                try:
                    yield str(decompress(utf8[a:b]), "utf-8")
                except (CorruptMapError, UnicodeDecodeError) as e:
                    raise damaged_sample(self.path, position, e) from None
                position += 1


class StringsLayout(Layout):
    """``strings``: UTF-8 bytes back to back (``data``) and int64 ``offsets`` (Arrow's ``large_string``)."""

    kind: ClassVar[str] = "strings"
    columns: ClassVar[dict[str, str]] = {"data": "|u1", "offsets": "<i8"}
    initial: ClassVar[dict[str, list[int]]] = {"offsets": [0]}

    def attrs(self, codec: Any = None, zstd_level: Optional[int] = None,  # type: ignore[override]
              zstd_train_dictionary_size: Optional[int] = None) -> dict[str, Any]:
        return codec_attrs(codec, zstd_level, zstd_train_dictionary_size)

    def view(self, store: Columns) -> StringsView:
        codec = self.codec(store.attrs)
        return StringsView(store) if codec is None else CompressedStringsView(store, codec)

    def sample_bytes(self, batch: Any) -> list[bytes]:
        return [text.encode("utf-8", "replace") for text in batch if isinstance(text, str)]

    def batch(self, samples: Any, lengths: dict[str, int], attrs: dict[str, Any]) -> list[Any]:
        refuse_single_text(samples, "extend")
        return list(samples)

    def encode(self, batch: list[Any], lengths: dict[str, int], attrs: dict[str, Any],
               dictionary: bytes = b"") -> Encoded:
        encoded = utf8_all(batch)
        if encoded is None:  # a sample that is no str, or cannot be UTF-8: found and named
            first = self.count(lengths, attrs)
            encoded = [_utf8(first + k, text) for k, text in enumerate(batch)]
        encoded = _compress_all(attrs, dictionary, encoded)
        sizes = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        # The documents' own bytes go to the kernel (vectored writes) and the hasher: no joining copy (issue 21).
        return Encoded({"data": write_pieces(encoded, sizes), "offsets": np.cumsum(sizes) + lengths["data"]}, None)

    def encode_utf8(self, utf8: Any, lengths_of_strings: Any, lengths: dict[str, int],
                    attrs: dict[str, Any], dictionary: bytes = b"") -> Encoded:
        """Strings given as UTF-8 bytes back to back (string j is the next ``lengths_of_strings[j]`` bytes),
        checked to be valid UTF-8 that splits at character boundaries."""
        data = utf8.view(np.uint8).reshape(-1) if isinstance(utf8, np.ndarray) else np.frombuffer(utf8, np.uint8)
        sizes = check_lengths(lengths_of_strings, len(data))
        ends = np.cumsum(sizes)
        first = self.count(lengths, attrs)
        for j, (start, stop) in enumerate(zip((ends - sizes).tolist(), ends.tolist())):
            try:
                str(data[start:stop].data, "utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"item {first + j} is not valid UTF-8: {e.reason} at byte {e.start}") from None
        if attrs.get("codec"):
            pieces = _compress_all(attrs, dictionary, [data[a:b] for a, b in zip((ends - sizes).tolist(),
                                                                                   ends.tolist())])
            sizes = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
            return Encoded({"data": pieces, "offsets": np.cumsum(sizes) + lengths["data"]}, None)
        return Encoded({"data": [data], "offsets": ends + lengths["data"]}, None)

    def encode_set(self, view: View, attrs: dict[str, Any], position: int, value: Any) -> tuple[str, int, Any]:
        assert isinstance(view, StringsView)
        _refuse_in_place(attrs, position)
        encoded = _utf8(position, value, "the new value of item")
        start, stop = view.starts[position], view.stops[position]
        if len(encoded) != stop - start:
            raise ValueError(f"item {position} holds {stop - start} UTF-8 bytes and the new value {len(encoded)}; "
                             f"in-place assignment needs the same byte size")
        return "data", start, encoded


_BYTES_LIKE = (bytes, bytearray, memoryview)
_UTF8_HINT = "decode it first (value.decode('utf-8')), or give UTF-8 bytes and the strings' lengths to extend_utf8"


def refuse_single_text(strings: Any, call: str) -> None:
    """Refuse one ``str`` or bytes-like object where a sequence of strings is expected (iterating it would store
    a string per character, or fail on the first byte, an int), naming ``call`` and what was given."""
    if isinstance(strings, str):
        raise TypeError(f"{call}() takes a sequence of str, not a single str; to add one string use append()")
    if isinstance(strings, _BYTES_LIKE):
        raise TypeError(f"{call}() takes a sequence of str, not a single {type(strings).__name__} "
                        f"({len(strings)} bytes): {_UTF8_HINT}")


def _utf8(position: int, text: Any, what: str = "item") -> bytes:
    if not isinstance(text, str):
        hint = f": {_UTF8_HINT}" if isinstance(text, _BYTES_LIKE) else ""
        raise TypeError(f"{what} {position} is {type(text).__name__}, expected str{hint}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} {position} cannot be stored as UTF-8: {e.reason} at character {e.start} "
                         f"({text[e.start:e.end]!r})") from None


def _dtype(attrs: dict[str, Any]) -> Optional[np.dtype[Any]]:
    """The dtype a ragged or numpy map's attributes name (None: not known yet)."""
    descr = attrs.get("dtype")
    return None if descr is None else dtype_from_json(descr)


# ---------------------------------------------------------------------------------------------------- numpy

class NumpyView(View):
    def __init__(self, store: Columns, attrs: dict[str, Any]):
        data = store.column("data")
        if attrs.get("dtype") is None:  # created from an empty generator: the first extend decides
            self.dtype: Optional[np.dtype[Any]] = None
            self.sample_shape: Optional[tuple[int, ...]] = None
            self.order = attrs.get("order")
            self.array = np.empty(0)
            self.array.flags.writeable = False
        else:
            self.dtype = dtype_from_json(attrs["dtype"])
            self.sample_shape = tuple(attrs["sample_shape"])
            self.order = attrs["order"]
            self.array = shaped(data, self.dtype, self.sample_shape, self.order)
        self.length = len(self.array)

    def get(self, position: int) -> Any:
        return self.array[position]

    def get_many(self, positions: np.ndarray[Any, Any]) -> list[Any]:
        array = self.array
        return Rows([array[p] for p in positions.tolist()], array, positions)  # read-only views, as m[i] gives

    def iterate(self, start: int = 0) -> Iterator[Any]:
        return iter(self.array[start:])


class Rows(list):  # type: ignore[type-arg]
    """Same-shape samples of one array (read-only views, as ``m[i]`` gives) that can also be gathered into one
    batch with a single ``np.take``: what a numpy map's ``__getitems__`` returns, so a collate (the torch
    adapter's) makes the batch with one gather instead of restacking the views (issue 21). Pickles as a list."""

    def __init__(self, rows: list[Any], source: np.ndarray[Any, Any], positions: np.ndarray[Any, Any]):
        super().__init__(rows)
        self.source = source
        self.positions = positions

    @property
    def sample_shape(self) -> tuple[int, ...]:
        shape: tuple[int, ...] = self.source.shape[1:]
        return shape

    @property
    def dtype(self) -> np.dtype[Any]:
        dtype: np.dtype[Any] = self.source.dtype
        return dtype

    def gather_into(self, out: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Copy the rows into ``out`` (shape ``(len(self), *sample_shape)``, the rows' dtype) in one gather."""
        if out.shape != (len(self), *self.sample_shape) or out.dtype != self.dtype:
            raise ValueError(f"out must have shape {(len(self), *self.sample_shape)} and dtype {self.dtype}, got "
                             f"{out.shape} {out.dtype}")
        if len(self):
            np.take(self.source, self.positions, axis=0, out=out)
        return out

    def __reduce__(self) -> tuple[Any, ...]:
        return list, (list(self),)  # never the whole map it points into


def shaped(data: np.ndarray[Any, Any], dtype: np.dtype[Any], sample_shape: tuple[int, ...],
           order: str) -> np.ndarray[Any, Any]:
    """The bytes of a numpy map's data column as its ``(n, *sample_shape)`` array (no copy)."""
    sample_size = math.prod(sample_shape) * dtype.itemsize
    count = len(data) // sample_size
    items = data[:count * sample_size].view(dtype)
    if order == "F":
        ndim = len(sample_shape)
        return items.reshape((count, *sample_shape[::-1])).transpose(0, *range(ndim, 0, -1))
    return items.reshape((count, *sample_shape))


class NumpyLayout(Layout):
    """``numpy``: same-shape samples back to back, each in C or Fortran order."""

    kind: ClassVar[str] = "numpy"
    columns: ClassVar[dict[str, str]] = {"data": "|u1"}

    def attrs(self, dtype: Any = None, sample_shape: Optional[Sequence[int]] = None,  # type: ignore[override]
              order: Optional[str] = None) -> dict[str, Any]:
        if order not in (None, "C", "F"):
            raise ValueError(f"order must be 'C' or 'F', got {order!r}")
        if sample_shape is not None:
            shape = tuple(operator_index_all(sample_shape, "sample_shape"))
            if math.prod(shape) == 0:
                raise ValueError(f"samples of shape {shape} hold no elements and cannot be memory-mapped")
        if dtype is not None and sample_shape is not None:
            return numpy_attrs(storable_dtype(dtype, "dtype"), tuple(sample_shape), order or "C")
        # Only one of them known: both are fixed by the first samples, and checked against what was given.
        return {"dtype": None, "sample_shape": None, "order": order,
                "expect_dtype": None if dtype is None else dtype_to_json(storable_dtype(dtype, "dtype")),
                "expect_sample_shape": None if sample_shape is None else list(sample_shape)}

    def view(self, store: Columns) -> NumpyView:
        return NumpyView(store, store.attrs)

    def count(self, lengths: dict[str, int], attrs: dict[str, Any]) -> int:
        if attrs.get("dtype") is None:
            return 0
        sample_bytes: int = math.prod(attrs["sample_shape"]) * dtype_from_json(attrs["dtype"]).itemsize
        return lengths["data"] // sample_bytes

    def batch(self, samples: Any, lengths: dict[str, int], attrs: dict[str, Any]) -> np.ndarray[Any, Any]:
        if isinstance(samples, (np.ndarray, np.generic)):
            if np.ndim(samples) == 0:
                raise ValueError("extend() got a scalar; it takes a sequence of samples (to add one sample use "
                                 "append())")
            return np.asarray(samples)
        samples = list(samples)
        sample_shape = attrs.get("sample_shape")
        if sample_shape is not None:
            first = self.count(lengths, attrs)
            for k, sample in enumerate(samples):
                if np.shape(sample) != tuple(sample_shape):
                    raise ValueError(f"item {first + k} has shape {np.shape(sample)}, expected "
                                     f"{tuple(sample_shape)}")
            dtype = _dtype(attrs)
            if dtype is not None and not all(isinstance(s, np.ndarray) and s.dtype == dtype for s in samples):
                # Each sample cast on its own: stacking first would let NumPy promote a batch that mixes ints
                # and floats to float64, and an int the map's float32 cannot hold would then round silently.
                return np.stack([cast(as_array(s, f"item {first + k}"), dtype, f"item {first + k}")
                                 for k, s in enumerate(samples)]) if samples else np.empty((0,))
        try:
            return as_array(samples, "the samples") if samples else np.empty((0,))
        except ValueError:
            _refuse_unequal_shapes(samples, self.count(lengths, attrs))
            raise

    def encode(self, batch: Any, lengths: dict[str, int], attrs: dict[str, Any], dictionary: bytes = b"") -> Encoded:
        batch = as_array(batch, "the samples")
        first = self.count(lengths, attrs)
        new_attrs = None
        if attrs.get("dtype") is None:
            expect_dtype, expect_shape = attrs.get("expect_dtype"), attrs.get("expect_sample_shape")
            dtype = dtype_from_json(expect_dtype) if expect_dtype is not None else storable_dtype(batch.dtype,
                                                                                                  "the samples")
            sample_shape = tuple(expect_shape) if expect_shape is not None else batch.shape[1:]
            order = attrs.get("order") or ("F" if batch.ndim > 2 and np.isfortran(batch[0]) else "C")
            new_attrs = numpy_attrs(dtype, sample_shape, order)
        else:
            dtype, sample_shape, order = (dtype_from_json(attrs["dtype"]), tuple(attrs["sample_shape"]),
                                          attrs["order"])
        if batch.shape[1:] != sample_shape:
            raise ValueError(f"extend() got samples of shape {batch.shape[1:]}; the map's samples have shape "
                             f"{sample_shape} (to add one sample use append())")
        batch = cast(batch, dtype, f"samples {first}..{first + len(batch) - 1}")
        if order == "F":
            batch = batch.transpose(0, *range(batch.ndim - 1, 0, -1))
        return Encoded({"data": [raw_bytes(np.ascontiguousarray(batch))]}, new_attrs)


def _refuse_unequal_shapes(samples: list[Any], first: int) -> None:
    """Name the first of ``samples`` (numbered from ``first``) whose shape differs from the first sample's, and
    both shapes; return if they all have one shape (the caller then raises its own error)."""
    shapes = []
    for k, sample in enumerate(samples):
        try:
            shapes.append(np.shape(as_array(sample, f"item {first + k}")))
        except TypeError:
            return
        if shapes[k] != shapes[0]:
            raise ValueError(f"item {first + k} has shape {shapes[k]}, but item {first} has shape {shapes[0]}: "
                             f"the samples of a numpy map or field have one shape (store samples of "
                             f"different shapes in a RaggedMmap or a ragged field)") from None


def numpy_attrs(dtype: np.dtype[Any], sample_shape: tuple[int, ...], order: str) -> dict[str, Any]:
    if math.prod(sample_shape) == 0:
        raise ValueError(f"samples of shape {sample_shape} hold no elements and cannot be memory-mapped")
    return {"dtype": dtype_to_json(dtype), "sample_shape": list(sample_shape), "order": order}


def operator_index_all(values: Sequence[Any], what: str) -> list[int]:
    import operator

    try:
        return [operator.index(v) for v in values]
    except TypeError:
        raise TypeError(f"{what} must be a sequence of integers, got {values!r}") from None
