"""`StringsMmap`: a memory-mapped list of ``str``, stored as UTF-8 with int64 offsets (Arrow ``large_string``)."""

from __future__ import annotations

from typing import Any, Iterable, List

import numpy as np

from mmap_ninja._container import OffsetsMap
from mmap_ninja.storage import PathLike, Store

DEFAULT_BATCH_SIZE = 10_000


class StringsMmap(OffsetsMap):
    """A list of strings on disk. ``m[i]`` decodes one string straight from the page cache.

    Create with `from_strings`, `from_generator` or `from_indexable`; open with ``StringsMmap(path)``.
    """

    _kind = "strings"

    def _load(self) -> None:
        super()._load()
        self._utf8 = memoryview(self._store.column("data"))

    @property
    def values(self) -> np.ndarray:
        """All strings' UTF-8 bytes back to back (read-only uint8)."""
        return np.frombuffer(self._utf8, dtype=np.uint8)

    def to_arrow(self):
        """The map as a ``pyarrow.LargeStringArray`` whose buffers are the map's own ``offsets`` and
        ``values`` (no copy; needs pyarrow)."""
        from mmap_ninja.adapters.arrow import strings_to_arrow

        return strings_to_arrow(self)

    @classmethod
    def from_arrow(cls, out_dir: PathLike, array: Any, **options: Any) -> "StringsMmap":
        """Build a map from an Arrow ``string``/``large_string`` array, a chunked array, or a Hugging Face
        ``datasets`` column, copying the UTF-8 bytes and offsets without decoding a string.
        Options: ``batch_size``, ``overwrite``, ``durable``. Returns the map open for writing."""
        from mmap_ninja.adapters.arrow import strings_from_arrow

        return strings_from_arrow(cls, out_dir, array, **options)

    def _get(self, position: int) -> str:
        offsets = self._offsets
        return str(self._utf8[offsets[position]:offsets[position + 1]], "utf-8")

    def _get_many(self, positions: np.ndarray) -> List[str]:
        utf8 = self._utf8
        return [str(utf8[start:stop], "utf-8") for start, stop in zip(*self._spans(positions))]

    def _as_batch(self, samples: Iterable[Any]) -> list:
        if isinstance(samples, (str, bytes)):
            raise TypeError("extend() takes an iterable of strings; to add one string use append()")
        return list(samples)

    def _encode_one(self, position: int, text: Any) -> bytes:
        if not isinstance(text, str):
            raise TypeError(f"item {position} is {type(text).__name__}, expected str")
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"item {position} cannot be stored as UTF-8: {e.reason} at character {e.start} "
                             f"({text[e.start:e.end]!r})") from None

    def _encode(self, samples: List[Any]) -> tuple:
        first = self._length
        try:
            encoded = [text.encode("utf-8") for text in samples]
            if not all(isinstance(text, str) for text in samples):
                raise TypeError
        except (AttributeError, TypeError, UnicodeEncodeError):
            encoded = [self._encode_one(first + k, text) for k, text in enumerate(samples)]
        sizes = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        return {"data": b"".join(encoded), "offsets": self._next_offsets(sizes)}, None

    def extend_utf8(self, utf8: Any, lengths: Any) -> None:
        """Append ``len(lengths)`` strings given as their UTF-8 bytes back to back (one commit).

        String j is the next ``lengths[j]`` bytes of ``utf8`` (any bytes-like object, e.g. an Arrow string
        array's data buffer). The bytes are checked to be valid UTF-8 and to split at character boundaries.
        """
        self._store._check_writer()
        data = np.frombuffer(utf8, dtype=np.uint8) if not isinstance(utf8, np.ndarray) else utf8.view(np.uint8)
        sizes = self._check_lengths(lengths, len(data))
        if not len(sizes):
            return
        ends = np.cumsum(sizes)
        for j, (start, stop) in enumerate(zip((ends - sizes).tolist(), ends.tolist())):
            try:
                str(memoryview(data[start:stop]), "utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"item {self._length + j} is not valid UTF-8: {e.reason} at byte {e.start}") from None
        self._commit({"data": data, "offsets": self._next_offsets(sizes)})

    def _prepare_set(self, position: int, value: Any) -> bytes:
        encoded = self._encode_one(position, value)
        old = self._offsets[position + 1] - self._offsets[position]
        if len(encoded) != old:
            raise ValueError(f"item {position} holds {old} UTF-8 bytes and the new value {len(encoded)}; "
                             f"in-place assignment needs the same byte size")
        return encoded

    def _write(self, position: int, encoded: bytes) -> None:
        start = self._offsets[position]
        self._store.column("data", writable=True)[start:start + len(encoded)] = np.frombuffer(encoded, np.uint8)

    @classmethod
    def _create(cls, out_dir: PathLike, *, overwrite: bool, durable: bool) -> "StringsMmap":
        store = Store.create(out_dir, cls._kind, {"data": np.uint8, "offsets": np.int64}, {},
                             initial={"offsets": [0]}, overwrite=overwrite, durable=durable)
        return cls._from_store(store)

    @classmethod
    def from_strings(cls, out_dir: PathLike, strings: Iterable[str], verbose: bool = False, *,
                     batch_size: int = DEFAULT_BATCH_SIZE, overwrite: bool = False,
                     durable: bool = False) -> "StringsMmap":
        """Build a map from a sequence of ``str`` (committed every ``batch_size`` strings)."""
        if isinstance(strings, (str, bytes)):
            raise TypeError("from_strings() takes a sequence of strings, not a single string")
        return cls.from_generator(out_dir, strings, batch_size, verbose, overwrite=overwrite, durable=durable)


StringsMmmap = StringsMmap  # the spelling used in the original README
