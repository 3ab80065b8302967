"""`RecordsMmap`: a map whose samples are rows of named fields (a text, its tokens and a label), every field
stored as a column group of an existing kind and all of them committed together.

A records map is a layout made of the other kinds' layouts. Field ``label`` of kind numpy keeps its bytes in the
column ``label.data``, field ``text`` of kind strings in ``text.data`` and ``text.offsets``, and so on: the
store's columns are the fields' columns with the field name and a dot in front. The header's ``attrs`` hold the
schema, ``{"fields": {name: {"kind": ..., "attrs": {that kind's attrs}}}}``, and ``requires`` lists
``"records"`` so that a reader that does not know this kind refuses the map instead of misreading it.

One commit (one header) publishes a batch of rows in every field at once, so after any crash every field has
the same number of rows: they can never drift apart. `rec["label"]` is a read-only container of the field's own
kind (`NumpyMmap`, `StringsMmap`, `RaggedMmap`) over the same files; rows are only ever written whole, through
the `RecordsMmap`.

Field kinds (see `Field`):

- ``strings``: ``str`` values (optionally compressed with a codec);
- ``ragged``: arrays of one dtype and any shapes (token sequences, images), optionally compressed;
- ``numpy``: arrays of one fixed shape and dtype; with shape ``()`` a *scalar* field (labels, scores), read back
  as NumPy scalars;
- ``images``: encoded images (JPEG, PNG, ... bytes kept as given, or arrays encoded once), the columns of
  `ImagesMmap`'s layout; read back decoded into ``(H, W, C)`` uint8 arrays (``rec["image"].raw(i)`` gives the
  bytes). Never inferred: declare ``Field.images()`` (or ``"images"``).

Field kinds are registered in `mmap_ninja.kinds.fields` by their own modules; schema inference is described there.
"""

from __future__ import annotations

import operator
import re
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional, overload

import numpy as np

from mmap_ninja.errors import MissingKeyError, NoSuchFieldError
from mmap_ninja.kinds import keys as _keys
from mmap_ninja.kinds.batch import join_batches
from mmap_ninja.kinds.fields import Field, _field_from_spec, check_field_name, field_kind, infer_schema, parse_schema
from mmap_ninja.kinds.image_decoding import DEFAULT_DECODER, Decoder
from mmap_ninja.kinds.images import RECORDS_FEATURE as IMAGES_FEATURE
from mmap_ninja.kinds.images import ImagesMmap, ImagesView
from mmap_ninja.kinds.maps import MapBase, SampleIndex, SampleIndices, resolve_positions
from mmap_ninja.kinds.records_build import DEFAULT_BATCH_SIZE, RecordsBuilding
from mmap_ninja.kinds.records_fields import FieldStore, field_class
from mmap_ninja.kinds.records_layout import FEATURE, FieldColumns, RecordsBatch, RecordsLayout, _as_error
from mmap_ninja.storage.format import dtype_from_json
from mmap_ninja.storage.store import DEFAULT_LOCK_TIMEOUT, PathLike, Store

__all__ = ["FEATURE", "IMAGES_FEATURE", "Field", "RecordsLayout", "RecordsMmap", "infer_schema", "parse_schema"]

_DEFAULT_CHUNK = 8192  # rows of a new field's default encoded at a time


# ---------------------------------------------------------------------------------------------------- the map

class RecordsMmap(RecordsBuilding):
    """A map whose samples are rows of named fields, every field committed with the others.

    ``rec[i]`` is a dict of the row's values as each field's kind reads them: ``str`` for strings fields, a
    read-only view for array fields, a NumPy scalar for scalar fields. ``rec["label"]`` is the field as a
    read-only container of its kind over the same files (`NumpyMmap`, `StringsMmap`, `RaggedMmap`).
    ``rec[2:5]`` (or a list of indices, or a boolean mask) gives a list of row dicts, as every map gives a list of
    its samples (a Hugging Face ``Dataset`` gives a dict of lists there: here `columns` does, and `get_batch`
    gives a dict of batched arrays).

    Build with `from_generator` (rows as dicts), `from_dict` (columns) or `from_indexable` (the builders are in
    `mmap_ninja.kinds.records_build`, with those from Arrow, pandas, image folders and Parquet); grow with `append`
    (one row) and `extend` (rows, or a dict of columns), each one commit. The schema is inferred from the first
    batch (see the module docstring) or given as ``schema=``. See `MapBase` for opening, modes and the writer model.

    ``draft=(height, width)`` (a reading option, kept when pickled) decodes the JPEGs of images fields at the
    smallest DCT scale that keeps them at least that size, in rows, `get_batch` and the fields' containers (see
    `ImagesMmap`); ``get_batch(..., draft=...)`` overrides it for one call.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import RecordsMmap
        >>> rows = ({"text": f"doc {i}", "tokens": np.arange(i % 3, dtype=np.int32), "label": i % 2} for i in range(5))
        >>> rec = RecordsMmap.from_generator("rows", rows, batch_size=2, overwrite=True)
        >>> rec[2]
        {'text': 'doc 2', 'tokens': array([0, 1], dtype=int32), 'label': np.int64(0)}
        >>> rec["label"][:]
        array([0, 1, 0, 1, 0])
        >>> files = RecordsMmap.from_dict("files", {"path": ["a.jpg", "b.jpg"], "label": np.array([3, 5])}, key="path",
        ...                               overwrite=True)
        >>> files.index_of("b.jpg"), "c.jpg" in files
        (1, False)
    """

    layout: ClassVar[RecordsLayout] = RecordsLayout()
    default_batch_size = DEFAULT_BATCH_SIZE

    if TYPE_CHECKING:  # the type a checker sees; at run time iteration is MapBase's
        def __iter__(self) -> Iterator[dict[str, Any]]: ...
    plain_reads = True  # rec[i] is the view's row i (``__getitem__`` adds only rec["field"])
    _images_decoder: Decoder = DEFAULT_DECODER

    # -------------------------------------------------------------- opening

    def __init__(self, out_dir: PathLike, wrapper_fn: Optional[Callable[[Any], Any]] = None, mode: str = "r+", *,
                 copy_before_wrapper_fn: bool = True, lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT,
                 durable: bool = False, allow_unfinished: bool = False, verify_reads: bool = False,
                 draft: Optional[tuple[int, int]] = None):
        if draft is not None:
            self._images_decoder = Decoder(draft=draft)  # checked before the map is opened
        super().__init__(out_dir, wrapper_fn, mode, copy_before_wrapper_fn=copy_before_wrapper_fn,
                         lock_timeout=lock_timeout, durable=durable, allow_unfinished=allow_unfinished,
                         verify_reads=verify_reads)

    def _new_view(self, columns: Any) -> Any:
        view = super()._new_view(columns)
        decoder = self._images_decoder
        if decoder is not DEFAULT_DECODER:
            for field_view in view.views.values():
                if isinstance(field_view, ImagesView):
                    field_view.decoder = decoder  # before the view is published
        return view

    def __reduce__(self) -> tuple[Any, ...]:
        reopen, (cls, path, options) = super().__reduce__()
        if self._images_decoder.draft is not None:
            options = {**options, "draft": self._images_decoder.draft}
        return reopen, (cls, path, options)

    # -------------------------------------------------------------- reading

    @property
    def schema(self) -> dict[str, Field]:
        """Field name -> `Field`, in order (empty for a handle on a map not created yet)."""
        return self.layout.schema(self._view_attrs() or {"fields": {}})

    @property
    def fields(self) -> tuple[str, ...]:
        """The field names, in order."""
        return tuple(self._view.names)

    @overload
    def __getitem__(self, index: SampleIndex) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: str) -> MapBase: ...
    @overload
    def __getitem__(self, index: SampleIndices) -> list[dict[str, Any]]: ...
    def __getitem__(self, index: Any) -> Any:
        view = self._view
        if type(index) is int:  # the common case first
            length = view.length
            position = index + length if index < 0 else index
            if not 0 <= position < length:
                raise IndexError(self._out_of_range(index, length))
            row = view.get(position)
            return row if self.wrapper_fn is None else self._wrap(row)
        if isinstance(index, str):
            return self.field(index)
        if isinstance(index, (bool, np.bool_)):
            raise TypeError("a map cannot be indexed by a boolean scalar; use a boolean mask of the map's length")
        try:
            position = operator.index(index)
        except TypeError:
            if isinstance(index, (list, tuple)) and index and isinstance(index[0], str):
                raise TypeError(f"a records map is indexed by rows; for one field use rec[{index[0]!r}], for "
                                f"several rec.get_batch(indices, fields={list(index)!r}) or rec.columns(indices)"
                                ) from None
            return self.__getitems__(index)
        return self[position]

    def columns(self, indices: Any) -> dict[str, list[Any]]:
        """The rows at ``indices`` (a slice, indices or a mask) as a dict of lists, field -> values, as a Hugging
        Face ``Dataset`` gives ``ds[2:5]``."""
        view = self._view
        columns: dict[str, list[Any]] = view.columns_at(resolve_positions(indices, view.length))
        return columns

    def field(self, name: str) -> MapBase:
        """Field ``name`` as a read-only container of its kind over the map's files (same as ``rec[name]``).
        It shows the map as this handle sees it; its ``refresh()`` refreshes this handle too."""
        view = self._view
        if name not in view.kinds:
            raise NoSuchFieldError(f"{self._path} has no field {name!r}; its fields are {list(view.names)}")
        store = self._store
        assert store is not None  # a map with a field exists
        cls = field_class(field_kind(view.kinds[name]))
        verified = self._verified if self._verify_reads else None  # checked as this handle checks its reads
        container = cls._attach(FieldStore(self, store, name), mode="r",  # type: ignore[arg-type]
                                verified=verified)
        container._field = name  # type: ignore[attr-defined]
        container._records = self  # type: ignore[attr-defined]
        if isinstance(container, ImagesMmap) and self._images_decoder is not DEFAULT_DECODER:
            container._use_decoder(self._images_decoder)
        refs = self.__dict__.setdefault("_fields_given", [])
        refs.append(weakref.ref(container))
        if len(refs) >= self.__dict__.get("_fields_prune_at", 64):  # drop dead ones now and then: amortized O(1)
            refs[:] = [ref for ref in refs if ref() is not None]
            self.__dict__["_fields_prune_at"] = max(64, 2 * len(refs))
        return container

    def _field_containers(self) -> list[MapBase]:
        """The live field containers this handle gave out: they follow its writes and refreshes."""
        refs: list[weakref.ref[MapBase]] = self.__dict__.setdefault("_fields_given", [])
        alive = [c for c in (r() for r in refs) if c is not None and not c.closed]
        if len(alive) < len(refs):
            refs[:] = [weakref.ref(c) for c in alive]
        return alive

    def _invalidate(self) -> None:
        super()._invalidate()
        for container in self._field_containers():
            container._invalidate()

    def refresh(self) -> int:
        """See the rows other handles and processes committed since this handle last looked (its field containers
        too); returns how many rows appeared."""
        appeared = super().refresh()
        for container in self._field_containers():
            container._rebuild()
        return appeared

    def get_batch(self, indices: Any, fields: Optional[Sequence[str]] = None, pad_value: Any = None,
                  draft: Any = None) -> Any:
        """The rows at ``indices`` as a dict of field -> batch: a new array of shape ``(k, *shape)`` for array and
        scalar fields, a list of ``str`` for strings fields.

        Ragged fields are stacked, and must then share one shape, unless ``pad_value`` is given (one value for
        every ragged field, or a dict of field -> value): then the result is ``(batch, lengths)``, the padded
        fields' samples padded as `RaggedMmap.get_batch` pads them and ``lengths`` a dict of their lengths
        (``(k,)`` for 1-D samples, ``(k, ndim)`` shapes otherwise). Images fields are decoded into one
        ``(k, H, W, C)`` uint8 array and follow the same rule (their lengths are the ``(k, 3)`` shapes).
        ``fields`` picks the fields to read. ``draft`` overrides the handle's (see the class; ``False``: full
        decoding) for this call: the images' shapes are then the decoded ones.
        """
        decoder = self._images_decoder if draft is None else self._images_decoder.with_draft(draft)
        view = self._view
        positions = resolve_positions(indices, view.length)
        if isinstance(fields, str):
            raise TypeError(f"fields is a list of field names; got the str {fields!r} (for one field pass "
                            f"fields=[{fields!r}])")
        names = view.names if fields is None else tuple(fields)
        for name in names:
            if name not in view.kinds:
                raise NoSuchFieldError(f"{self._path} has no field {name!r}; its fields are {list(view.names)}")
        checker = self._checker(view)
        if checker is not None:  # the batch is gathered from the fields' columns: check the bytes it reads first
            checker.check_many(positions, names)
        if isinstance(pad_value, Mapping):
            for name in pad_value:
                if name not in view.kinds:
                    raise NoSuchFieldError(f"pad_value names no field {name!r} of {self._path}; its fields are "
                                           f"{list(view.names)}")
        batch: dict[str, Any] = {}
        lengths: dict[str, Any] = {}
        for name in names:
            kind = field_kind(view.kinds[name])
            pad = None if not kind.pads() else pad_value.get(name) if isinstance(pad_value, Mapping) else pad_value
            try:
                result = kind.read_batch(view.views[name], positions, pad, decoder)
            except ValueError as e:
                if type(e) is not ValueError:  # damage and checksum errors keep their own type
                    raise
                raise ValueError(f"field {name!r}: {e}") from None
            if pad is None:
                batch[name] = result
            else:
                batch[name], lengths[name] = result
        return batch if pad_value is None else (batch, lengths)

    @classmethod
    def combine_batches(cls, parts: list[tuple[np.ndarray[Any, Any], Any]], positions: np.ndarray[Any, Any],
                        arguments: dict[str, Any]) -> Any:
        """Join row batches field by field (see `MapBase.combine_batches`): strings fields' lists row by row,
        the others as arrays, padded where the parts padded them."""
        padded = arguments.get("pad_value") is not None
        pad_values = arguments.get("pad_value")
        batch: dict[str, Any] = {}
        lengths: dict[str, Any] = {}
        first, first_lengths = parts[0][1] if padded else (parts[0][1], {})
        for name, column in first.items():
            if isinstance(column, list):
                joined: list[Any] = [None] * len(positions)
                for rows, part in parts:
                    for row, value in zip(rows.tolist(), (part[0] if padded else part)[name]):
                        joined[row] = value
                batch[name] = joined
            else:
                try:
                    if name in first_lengths:
                        pad = pad_values.get(name) if isinstance(pad_values, Mapping) else pad_values
                        batch[name], lengths[name] = join_batches(
                            [(rows, (part[0][name], part[1][name])) for rows, part in parts], positions, pad, None)
                    else:
                        batch[name] = join_batches(
                            [(rows, (part[0] if padded else part)[name]) for rows, part in parts], positions, None,
                            None)
                except ValueError as e:  # (join_batches names the rows; say which field)
                    if type(e) is not ValueError:
                        raise
                    raise ValueError(f"field {name!r}: {e}") from None
        return (batch, lengths) if padded else batch

    def to_arrow(self) -> Any:
        """The map as a ``pyarrow.Table``, one column per field: zero-copy for uncompressed strings, 1-D numeric
        ragged and numeric numpy fields, and images fields (``large_binary``, the encoded bytes; needs pyarrow); a
        ``datetime64`` field with a `Field.timezone` as ``timestamp(unit, tz)``;
        compressed fields are decompressed into new buffers. A ragged field of samples with other than one
        dimension cannot be converted (Arrow's lists hold one): the error names the field."""
        import pyarrow as pa

        self._check_all(self._view)  # verify_reads: the table shares the columns' bytes, check all of them first
        arrays = {}
        for name, field in self.schema.items():
            try:
                arrays[name] = field_kind(field.kind).to_arrow(self.field(name), field)
            except (TypeError, ValueError) as e:
                raise _as_error(e, f"field {name!r}: {e}") from None
        return pa.table(arrays)

    # -------------------------------------------------------------- writing

    def _writable_store(self) -> Store:
        if self._mode == "r+" and self._store is None:
            raise ValueError(f"no records map exists at {self._path} yet: its schema comes from its first rows; "
                             f"create it with extend(rows), append(row), RecordsMmap.from_generator or from_dict")
        return super()._writable_store()

    def extend(self, samples: Any, verbose: bool = False) -> None:
        """Add rows at the end, all or none, in one commit: an iterable of dicts (field -> value), or a dict of
        columns (field -> equal-length sequence of values). Every row is checked against the schema before
        anything is written; an error names the row and the field. On a handle with no map yet, the first
        call that gives rows creates the map with the schema these rows suggest (no rows: nothing is written)."""
        if self._mode == "r+" and self._store is None and self._legacy is None:
            layout = self.layout
            samples = samples if isinstance(samples, Mapping) else list(samples)
            if isinstance(samples, Mapping):
                no_rows = bool(samples) and all(hasattr(c, "__len__") and not isinstance(c, (str, bytes))
                                                and getattr(c, "ndim", 1) >= 1 and not len(c) for c in samples.values())
            else:
                no_rows = not samples
            if no_rows:  # no rows: nothing to write, and nothing to give the map its schema yet
                return
            schema = infer_schema(samples)
            attrs = layout.attrs(schema=schema)
            empty = layout.empty_lengths(attrs)
            layout.encode(layout.batch(samples, empty, attrs), empty, attrs)  # a refused first batch creates nothing
            if self._deferred is not None:  # the first write of a transaction block: the block owns the new map
                self._deferred.enter_context(self._creating(schema))
            else:  # created at once (readers racing it see an empty map, as with the other kinds), then written
                store = Store.create(self._path, layout.kind, layout.columns_for(attrs), attrs,
                                     initial=layout.initial_for(attrs), requires=layout.requires(attrs),
                                     durable=self._durable, lock_timeout=self._lock_timeout, join_existing=True)
                self._store = store
                self._check_kind(store)
        self._write(samples)

    def _write(self, samples: Any) -> None:
        layout = self.layout
        store = self._writable_store()
        try:
            with store.transaction():
                batch = layout.batch(samples, store.lengths, store.attrs)
                if len(batch):
                    self._train_fields(store, batch)
                    first = layout.count(store.lengths, store.attrs)
                    columns, new_attrs = layout.encode(batch, store.lengths, store.attrs,
                                                       dictionaries=_dictionaries(store, layout))
                    key = layout.key(store.attrs)
                    store.append(columns, new_attrs)
                    if key is not None:
                        self._index_keys(store, batch, first, key)
        finally:
            self._invalidate()

    def _index_keys(self, store: Store, batch: RecordsBatch, first: int, key: tuple[str, bool]) -> None:
        field, strings = key
        attrs = store.attrs
        kind = field_kind(attrs["fields"][field]["kind"])
        existing = kind.layout.view(FieldColumns(store.snapshot(), field))
        values = batch.columns[field]
        if not strings:
            values = np.asarray(values, dtype=dtype_from_json(attrs["fields"][field]["attrs"]["dtype"]))
        _keys.insert_keys(store, attrs, values, first, existing.get, strings)

    def add_field(self, name: str, field: Any, default: Any) -> None:
        """Add the field ``name`` (a `Field` or a short form ``schema=`` takes, see `parse_schema`) to the map,
        holding ``default`` in every existing row; later rows must give it a value. The default is written once
        for each existing row (O(n)) and published with the new field in one commit: a crash midway leaves the
        map without the field. Other handles see the field after ``refresh()``. A field that needs a feature the
        map does not list in its ``requires`` (a codec; images, in a map without an images field) cannot be added:
        build the map with it."""
        check_field_name(name)
        spec = _field_from_spec(name, field)
        if self._mode == "r+" and self._store is None and self._legacy is None:
            raise ValueError(f"no records map exists at {self._path} yet: add fields by giving rows that have them")
        store = self._writable_store()
        kind = field_kind(spec.kind)
        layout = kind.layout
        try:
            with store.transaction():
                attrs = store.attrs
                fields = attrs["fields"]
                for other in fields:
                    if other.lower() == name.lower():
                        raise ValueError(f"{self._path} already has a field {other!r}" + (
                            "" if other == name else f", which differs from {name!r} only by case"))
                field_attrs = spec.layout_attrs()
                needed = self.layout.requires({**attrs, "fields": {**fields, name: {"kind": spec.kind,
                                                                                     "attrs": field_attrs}}})
                missing = [feature for feature in needed if feature not in store.header.requires]
                if missing:  # a commit keeps the map's requires: an older reader must not meet this field
                    raise TypeError(f"field {name!r} ({spec.kind}{', compressed' if spec.codec else ''}) needs the "
                                    f"feature(s) {missing}, which this map does not list in its requires; a field "
                                    f"that needs a new feature cannot be added: build the map with it")
                empty = {column: len(layout.initial.get(column, [])) for column in layout.columns_for(field_attrs)}
                try:  # the default must be a value of the field, checked before anything is written
                    kind.check_values(name, spec, [default], 0)
                    layout.encode(layout.batch([default], empty, field_attrs), empty, field_attrs)
                except (TypeError, ValueError) as e:
                    reason = re.sub(r"^(row 0, )?field '\w+': |^item 0: ", "", str(e))
                    raise _as_error(e, f"field {name!r}: the default {default!r} cannot be stored: "
                                       f"{reason}") from None
                count = self.layout.count(store.lengths, attrs)
                store.add_columns({f"{name}.{column}": dtype
                                   for column, dtype in layout.columns_for(field_attrs).items()})
                store.append({f"{name}.{column}": [np.asarray(items, dtype=layout.columns_for(field_attrs)[column])]
                              for column, items in layout.initial.items()})
                lengths = dict(empty)
                if kind.fixed_size_rows and count:  # fixed-size rows: the default's bytes, repeated
                    one = layout.encode(layout.batch([default], empty, field_attrs), empty, field_attrs)
                    row = b"".join(bytes(memoryview(b).cast("B")) for b in one.columns["data"])
                    chunk = row * min(_DEFAULT_CHUNK, count)
                    for begin in range(0, count, _DEFAULT_CHUNK):
                        rows = min(_DEFAULT_CHUNK, count - begin)
                        store.append({f"{name}.data": [memoryview(chunk)[:rows * len(row)]]})
                    count = 0
                for begin in range(0, count, _DEFAULT_CHUNK):
                    values = [default] * min(_DEFAULT_CHUNK, count - begin)
                    encoded = layout.encode(layout.batch(values, lengths, field_attrs), lengths, field_attrs)
                    store.append({f"{name}.{column}": buffers for column, buffers in encoded.columns.items()})
                    if encoded.attrs is not None:
                        field_attrs = encoded.attrs
                    lengths = self.layout.field_lengths(name, store.lengths)
                new_fields = {**fields, name: {"kind": spec.kind, "attrs": field_attrs}}
                store.append({}, {**attrs, "fields": new_fields})
        finally:
            self._invalidate()

    # -------------------------------------------------------------- keys

    @property
    def key(self) -> Optional[str]:
        """The name of the key field (see `index_of`), or None."""
        key = self.layout.key(self._view_attrs() or {"fields": {}})
        return None if key is None else key[0]

    def _key_index(self) -> _keys.KeyIndex:
        view = self._view
        length = view.length  # builds the view of a handle that wrote (a placeholder until then)
        view = self._view
        cached = self.__dict__.get("_key_cache")
        if cached is not None and cached[0] is view:
            index: _keys.KeyIndex = cached[1]
            return index
        columns = view.columns
        key = self.layout.key(columns.attrs)
        if key is None:
            raise TypeError(f"{self._path} has no key field; build it with key=<field> (from_generator, "
                            f"from_dict, ...) to look rows up by key")
        field, strings = key
        table = columns.attrs["key"]["table"]
        index = _keys.KeyIndex(field, strings, table, columns.column(_keys.SLOTS), view.views[field].get, length)
        self.__dict__["_key_cache"] = (view, index)
        return index

    def index_of(self, key: Any) -> int:
        """The row whose key field holds ``key`` (the map was built with ``key=<field>``); a KeyError naming the
        key if no row has it. O(1): a probe of the on-disk hash index, reading one or two rows' keys."""
        index = self._key_index()
        row = index.find(index.check(key))
        if row is None:
            rows = f"{index.length} row{'' if index.length == 1 else 's'}"
            raise MissingKeyError(f"no row of {self._path} has the key {key!r} (field {index.field!r}; {rows} seen by "
                                  f"this handle: refresh() shows rows other handles added since)")
        return row

    def __contains__(self, key: Any) -> bool:
        """Whether a row has the key ``key`` (a map built with ``key=<field>``)."""
        index = self._key_index()
        try:
            checked = index.check(key)
        except TypeError:
            return False
        return index.find(checked) is not None

    _deferred: Optional[ExitStack] = None

    @contextmanager
    def _creating(self, schema: dict[str, Field]) -> Iterator[None]:
        """Create the map (marked unfinished and locked) for the block's writes: published with them, complete,
        in one commit if the block ends well; removed again, leaving the directory as it was, if it raises."""
        missing = []  # the directories the creation makes, to remove again
        parent = self._path
        while not parent.exists() and parent != parent.parent:
            missing.append(parent)
            parent = parent.parent
        layout = self.layout
        attrs = layout.attrs(schema=schema)
        store = Store.create(self._path, layout.kind, layout.columns_for(attrs), attrs,
                             initial=layout.initial_for(attrs), requires=layout.requires(attrs), building=True,
                             durable=self._durable, lock_timeout=self._lock_timeout, join_existing=True)
        self._store = store
        self._check_kind(store)
        if not store.header.building:  # a racing process created the map first: the block is a transaction on it
            with store.transaction():
                yield
            return
        store.hold_creation()
        try:
            yield
        except BaseException:
            store.end_creation(ok=False)
            self._store = None
            for directory in missing:
                try:
                    directory.rmdir()
                except OSError:
                    break
            raise
        finally:
            self._invalidate()
        store.end_creation(ok=True)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """See `MapBase.transaction`. On a handle with no map yet, the block's first write creates the map (its
        rows give the schema) and the block holds the lock from there on (other processes find the map being
        built until the block ends); if the block raises, the new map is removed again and nothing is left on
        disk. (A block nested in such a block before the map exists is
        part of the outer one: it is undone only with it.)"""
        if self._mode == "r" or self._store is not None or self._legacy is not None:
            with super().transaction():
                yield
            return
        if self._deferred is not None:
            yield
            return
        with ExitStack() as stack:
            self._deferred = stack
            try:
                yield
            finally:
                self._deferred = None
                self._invalidate()

    def append(self, sample: Mapping[str, Any]) -> None:
        """Add one row (a dict of field -> value) at the end (one commit)."""
        if not isinstance(sample, Mapping):
            raise TypeError(f"append() takes one row, a dict of field -> value; got {type(sample).__name__}")
        self.extend([sample])

    def __setitem__(self, index: Any, value: Any) -> None:
        raise TypeError("rows of a records map cannot be assigned in place")

    def _train_fields(self, store: Store, batch: RecordsBatch) -> None:
        """Train the dictionary of every compressed field that wants one and has none yet, on this batch."""
        attrs = store.attrs
        new_fields = None
        for name, _, layout in self.layout.fields(attrs):
            field_attrs = attrs["fields"][name]["attrs"]
            codec = layout.codec(field_attrs)
            if codec is None or field_attrs.get("trained", True):
                continue
            values = batch.columns[name]
            if len(values) > codec.train_samples:  # a random draw (seeded: reproducible)
                chosen = np.random.default_rng(0).choice(len(values), codec.train_samples, replace=False)
                values = [values[i] for i in np.sort(chosen).tolist()]
            dictionary = codec.train(layout.sample_bytes(values)) or b""
            new_fields = dict(attrs["fields"]) if new_fields is None else new_fields
            new_fields[name] = {"kind": attrs["fields"][name]["kind"], "attrs": {**field_attrs, "trained": True}}
            store.append({f"{name}.dictionary": [dictionary]}, {**attrs, "fields": new_fields})

def _dictionaries(store: Store, layout: RecordsLayout) -> dict[str, bytes]:
    """The trained dictionaries of the compressed fields, by field name."""
    columns = store.header.columns
    return {name: bytes(store.column(f"{name}.dictionary")) for name, _, _ in layout.fields(store.attrs)
            if f"{name}.dictionary" in columns}
