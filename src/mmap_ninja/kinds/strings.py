"""`StringsMmap`: a memory-mapped list of ``str``, stored as UTF-8 with int64 offsets (Arrow ``large_string``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Callable, Optional, overload

import numpy as np

from mmap_ninja.kinds.fields import Field, FieldKind, register_field_kind
from mmap_ninja.kinds.layouts import StringsLayout, View, refuse_single_text
from mmap_ninja.kinds.maps import MapBase, SampleIndex, SampleIndices, _dictionary
from mmap_ninja.storage.store import DEFAULT_LOCK_TIMEOUT, PathLike

__all__ = ["StringsMmap", "StringsMmmap"]

DEFAULT_BATCH_SIZE = 10_000


class StringsMmap(MapBase):
    """A list of strings on disk. ``m[i]`` decodes one string straight from the page cache.

    Create with `from_strings`, `from_generator` or `from_indexable`; open with ``StringsMmap(path)``
    (see `MapBase` for the modes and the writer model).

    Example:

        >>> from mmap_ninja import StringsMmap
        >>> texts = StringsMmap.from_strings("texts", ["a document", "another one"], overwrite=True)
        >>> texts.append("appended later")
        >>> len(texts), texts[2]
        (3, 'appended later')
        >>> texts[:2]
        ['a document', 'another one']
    """

    layout = StringsLayout()
    default_batch_size = DEFAULT_BATCH_SIZE

    if TYPE_CHECKING:  # the types a checker sees; at run time these are MapBase's (its read fast path unchanged)
        @overload
        def __getitem__(self, index: SampleIndex) -> str: ...
        @overload
        def __getitem__(self, index: SampleIndices) -> list[str]: ...
        def __getitem__(self, index: Any) -> Any: ...
        def __iter__(self) -> Iterator[str]: ...
        def append(self, sample: str) -> None: ...
        def extend(self, samples: Iterable[str], verbose: bool = False) -> None: ...

    @property
    def offsets(self) -> np.ndarray[Any, Any]:
        """The n + 1 byte offsets (read-only int64): string i is ``values[offsets[i]:offsets[i + 1]]``. With
        ``verify_reads=True`` every committed byte of the map is checked first, as for ``values``."""
        return self._whole("offsets")  # type: ignore[no-any-return]

    @property
    def values(self) -> np.ndarray[Any, Any]:
        """All strings' UTF-8 bytes back to back (read-only uint8); for a compressed map, the compressed bytes
        (``offsets`` then count them). With ``verify_reads=True`` every committed byte is checked first (each
        checksum record once per handle)."""
        return self._whole("values")  # type: ignore[no-any-return]

    def extend_utf8(self, utf8: Any, lengths: Any) -> None:
        """Append ``len(lengths)`` strings given as their UTF-8 bytes back to back (one commit).

        String j is the next ``lengths[j]`` bytes of ``utf8`` (any bytes-like object, e.g. an Arrow string
        array's data buffer). The bytes are checked to be valid UTF-8 and to split at character boundaries.
        """
        store = self._writable_store()
        try:
            with store.transaction():
                self._train(store, [])  # no samples to train a codec's dictionary on: compress without one
                columns, _ = self.layout.encode_utf8(utf8, lengths, store.lengths, store.attrs, _dictionary(store))
                store.append(columns)
        finally:
            self._invalidate()

    def to_arrow(self) -> Any:
        """The map as a ``pyarrow.LargeStringArray`` whose buffers are the map's own ``offsets`` and
        ``values`` (no copy; needs pyarrow). A compressed map is refused: Arrow cannot use its buffers."""
        _refuse_compressed(self, "to_arrow()")
        self._check_all(self._view)  # verify_reads: the array shares the map's bytes, check all of them first
        from mmap_ninja.adapters.arrow import strings_to_arrow

        return strings_to_arrow(self)

    @classmethod
    def from_arrow(cls, out_dir: PathLike, array: Any, *, batch_size: Optional[int] = None, overwrite: bool = False,
                   durable: bool = False) -> StringsMmap:
        """Build a map from an Arrow ``string``/``large_string`` array, a chunked array, or a Hugging Face
        ``datasets`` column, copying the UTF-8 bytes and offsets without decoding a string.
        Options: ``batch_size``, ``overwrite``, ``durable``. Returns the map open."""
        from mmap_ninja.adapters.arrow import strings_from_arrow

        sized = {} if batch_size is None else {"batch_size": batch_size}  # None: the Arrow builders' own default
        return strings_from_arrow(cls, out_dir, array, overwrite=overwrite, durable=durable,  # type: ignore[no-any-return]
                                  **sized)

    @classmethod
    def from_strings(cls, out_dir: PathLike, strings: Iterable[str], verbose: bool = False, mode: str = "r+",
                     wrapper_fn: Optional[Callable[[Any], Any]] = None, zstd_level: Optional[int] = None,
                     zstd_train_dictionary_size: Optional[int] = None, *, codec: Any = None,
                     batch_size: int = DEFAULT_BATCH_SIZE, overwrite: bool = False, durable: bool = False,
                     metadata: Optional[dict[str, Any]] = None,
                     lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT, commit: Optional[str] = None) -> StringsMmap:
        """Build a map from a sequence of ``str`` (committed every ``batch_size`` strings).

        ``codec="zstd"`` (or ``"lz4"``, or a `mmap_ninja.kinds.codecs.Zstd` with its own level and dictionary size)
        compresses every string on its own; 0.9.0's ``zstd_level=`` and ``zstd_train_dictionary_size=`` mean
        the same as ``codec=Zstd(level, dictionary_size)``. ``commit`` as in `MapBase.build`.
        """
        refuse_single_text(strings, "from_strings")
        if isinstance(verbose, str):  # 0.9.0's order: from_strings(out_dir, strings, mode)
            mode, verbose = verbose, False
        return cls.from_generator(out_dir, strings, batch_size, verbose, overwrite=overwrite, durable=durable,
                                  metadata=metadata, mode=mode, wrapper_fn=wrapper_fn, lock_timeout=lock_timeout,
                                  codec=codec, zstd_level=zstd_level,
                                  zstd_train_dictionary_size=zstd_train_dictionary_size, commit=commit)


def _refuse_compressed(m: MapBase, what: str) -> None:
    spec = m._view_attrs().get("codec")
    if spec:
        raise TypeError(f"{what} needs the samples' own bytes, but {m.path} is compressed ({spec['name']}); "
                        f"read the samples instead (e.g. pyarrow.array(list(m)))")


StringsMmmap = StringsMmap  # the spelling used in the original README


class StringsField(FieldKind):
    """Strings as a field of a records map: ``str`` values, optionally compressed; they may key the rows."""

    name = "strings"
    takes_codec = True
    keys_are_str = True

    @property
    def map_class(self) -> type[StringsMmap]:
        return StringsMmap

    def layout_attrs(self, field: Field) -> dict[str, Any]:
        return self.layout.attrs(codec=field.codec)

    def describe(self, field: Field) -> str:
        return "str"

    def can_be_key(self, field: Field) -> bool:
        return True

    def check_values(self, name: str, field: Field, values: Any, first: int) -> Any:
        if isinstance(values, np.ndarray) or set(map(type, values)) - {str}:
            for k, value in enumerate(values):
                if not isinstance(value, str):
                    raise TypeError(f"row {first + k}, field {name!r}: expected str, got {type(value).__name__}")
        return values

    def read_batch(self, view: View, positions: np.ndarray[Any, Any], pad_value: Any, decoder: Any) -> Any:
        return view.get_many(positions)

    def to_arrow(self, container: Any, field: Field) -> Any:
        import pyarrow as pa

        if field.codec is not None:  # no buffers of the values to share: decompress
            return pa.array(container[:], type=pa.large_string())
        from mmap_ninja.adapters.arrow import strings_to_arrow

        return strings_to_arrow(container)


register_field_kind(StringsField())
