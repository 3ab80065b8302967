"""The builders of `RecordsMmap` (``from_generator``, ``from_dict``, ``from_indexable``, ``from_arrow``,
``from_pandas``, ``from_image_folder``, ``from_huggingface``, ``from_parquet``): `RecordsBuilding`, the base class
`RecordsMmap` takes them from, so that the map's reading and writing and its construction from other sources
each have a module. Every builder checks the first batch (the schema it gives, or the one passed, and the key)
before anything is created, then builds through `MapBase.build`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import chain
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional, TypeVar, cast

import numpy as np

from mmap_ninja.kinds import _batching
from mmap_ninja.kinds import keys as _keys
from mmap_ninja.kinds.batch import check_batch_size, check_samples_iterable
from mmap_ninja.kinds.fields import Field, check_field_name, field_kind, infer_schema, parse_schema
from mmap_ninja.kinds.ingest import build_image_folder
from mmap_ninja.kinds.maps import MapBase, _length_or_none
from mmap_ninja.kinds.records_layout import RecordsLayout
from mmap_ninja.storage.store import DEFAULT_LOCK_TIMEOUT, PathLike

if TYPE_CHECKING:
    from mmap_ninja.kinds.records import RecordsMmap

__all__ = ["DEFAULT_BATCH_SIZE", "RecordsBuilding"]

DEFAULT_BATCH_SIZE = 16_384  # from_dict's default rows per commit

R = TypeVar("R", bound="RecordsBuilding")


class RecordsBuilding(MapBase):
    """The builders of `RecordsMmap` (its base class; see `RecordsMmap` for the map itself)."""

    layout: ClassVar[RecordsLayout]  # (set by RecordsMmap: a layout here would register this class as the kind)
    default_batch_size = DEFAULT_BATCH_SIZE

    @classmethod
    @contextmanager
    def build(cls: type[R], out_dir: PathLike, *, overwrite: bool = False, durable: bool = False,
              metadata: Optional[dict[str, Any]] = None, mode: str = "r+",
              wrapper_fn: Optional[Callable[[Any], Any]] = None,
              lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT, **options: Any) -> Iterator[R]:
        """Create a records map with ``schema=`` and give it to the block to fill (see `MapBase.build`)."""
        if options.get("schema") is None:
            raise TypeError("building a records map needs schema= (field name -> field)")
        with super().build(out_dir, overwrite=overwrite, durable=durable, metadata=metadata, mode=mode,
                           wrapper_fn=wrapper_fn, lock_timeout=lock_timeout, **options) as target:
            yield target

    @classmethod
    def _build_batches(cls: type[R], out_dir: PathLike, batches: Iterable[Any], schema: Optional[Mapping[str, Any]],
                       key: Optional[str] = None, **build_options: Any) -> R:
        """Build from batches (lists of rows or dicts of columns); the schema is inferred from the first batch
        unless given, and the first batch is checked before anything is created."""
        pending = iter(batches)
        first = next(pending, None)
        if schema is not None:
            fields = parse_schema(schema)
        elif first is None:
            raise ValueError("no rows to infer the schema from; pass schema=")
        else:
            first = first if isinstance(first, Mapping) else list(first)
            fields = infer_schema(first)
        attrs = cls.layout.attrs(schema=fields, key=key)  # a bad key fails here, before anything is created
        if first is not None:
            empty = cls.layout.empty_lengths(attrs)
            first = cls.layout.batch(first, empty, attrs)
            cls.layout.encode(first, empty, attrs)  # a value only encoding refuses must create nothing either
            if key is not None:
                _keys.check_unique(first.columns[key], 0, key, field_kind(fields[key].kind).keys_are_str)
            pending = chain([first], pending)
        options = {} if key is None else {"key": key}
        return cls._build(out_dir, pending, schema=fields, **options, **build_options)

    @classmethod
    def from_generator(cls: type[R], out_dir: PathLike, sample_generator: Iterable[Any],
                       batch_size: Optional[int] = None, verbose: bool = False, *,
                       schema: Optional[Mapping[str, Any]] = None,
                       key: Optional[str] = None, overwrite: bool = False, durable: bool = False,
                       metadata: Optional[dict[str, Any]] = None, mode: str = "r+",
                       wrapper_fn: Optional[Callable[[Any], Any]] = None,
                       lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT, **options: Any) -> R:
        """Build a map from rows (dicts of field -> value), committing every ``batch_size`` rows; returns it open.

        ``schema`` (see `parse_schema`) defaults to what the first batch suggests. ``key`` names a field (str or
        integer scalars) whose values are unique and indexed on disk: see `index_of`. Every row is checked: an
        error names the row and the field (or the key repeated); a bad row in the first batch leaves nothing on
        disk, a later one leaves an unfinished build (see `MapBase.from_generator`).
        """
        cls._check_options(options, "from_generator")
        check_samples_iterable(sample_generator, f"{cls.__name__}.from_generator")
        batch_size = check_batch_size(cls.default_batch_size if batch_size is None else batch_size)
        rows: Iterable[Any] = sample_generator
        if verbose:
            from tqdm.auto import tqdm

            rows = tqdm(rows, total=_length_or_none(sample_generator), desc=cls.__name__, unit=" rows")
        return cls._build_batches(out_dir, _batching.batches(rows, batch_size), schema, key, overwrite=overwrite,
                                  durable=durable, metadata=metadata, mode=mode, wrapper_fn=wrapper_fn,
                                  lock_timeout=lock_timeout, **options)  # (commit=: see MapBase.build)

    @classmethod
    def from_indexable(cls: type[R], out_dir: PathLike, indexable: Any, batch_size: Optional[int] = None,
                       n_jobs: Optional[int] = None, verbose: bool = False, *,
                       schema: Optional[Mapping[str, Any]] = None, key: Optional[str] = None,
                       overwrite: bool = False, durable: bool = False,
                       metadata: Optional[dict[str, Any]] = None, mode: str = "r+",
                       wrapper_fn: Optional[Callable[[Any], Any]] = None,
                       lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT, **options: Any) -> R:
        """Build a map from the rows ``indexable[0]``, ``indexable[1]``, ... (see `MapBase.from_indexable`;
        ``n_jobs`` worker processes read them)."""
        from mmap_ninja.kinds import parallel

        cls._check_options(options, "from_indexable")
        check_samples_iterable(indexable, f"{cls.__name__}.from_indexable")
        batch_size = check_batch_size(cls.default_batch_size if batch_size is None else batch_size)
        batches = parallel.indexed_batches(indexable, batch_size, n_jobs, verbose, cls.__name__)
        return cls._build_batches(out_dir, batches, schema, key, overwrite=overwrite, durable=durable,
                                  metadata=metadata, mode=mode, wrapper_fn=wrapper_fn, lock_timeout=lock_timeout,
                                  **options)

    @classmethod
    def from_dict(cls: type[R], out_dir: PathLike, columns: Mapping[str, Any], *,
                  schema: Optional[Mapping[str, Any]] = None, key: Optional[str] = None,
                  batch_size: int = DEFAULT_BATCH_SIZE,
                  overwrite: bool = False, durable: bool = False, metadata: Optional[dict[str, Any]] = None,
                  mode: str = "r+", wrapper_fn: Optional[Callable[[Any], Any]] = None,
                  lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT, commit: Optional[str] = None) -> R:
        """Build a map from columns: field name -> a sequence of values, all of one length (an ndarray column
        is stored as a numpy field, see the module docstring). Committed every ``batch_size`` rows; ``commit`` as
        in `MapBase.build`."""
        if not isinstance(columns, Mapping):
            raise TypeError(f"from_dict() takes a dict of field -> column, got {type(columns).__name__}")
        batch_size = check_batch_size(batch_size)
        checked = dict(columns)
        for name, column in checked.items():
            check_field_name(name)
            if isinstance(column, (str, bytes)) or not isinstance(column, Iterable):
                raise TypeError(f"column {name!r} is {type(column).__name__}; a column is a sequence of values")
            if not hasattr(column, "__getitem__") or not hasattr(column, "__len__"):
                checked[name] = list(column)
        sizes = {name: len(column) for name, column in checked.items()}
        if len(set(sizes.values())) > 1:
            shown = ", ".join(f"{name}: {size}" for name, size in sizes.items())
            raise ValueError(f"the columns have different lengths ({shown}); every field needs one value per row")
        n = next(iter(sizes.values()), 0)
        if schema is None and checked:
            schema = infer_schema(checked)
        batches = ({name: column[start:start + batch_size] for name, column in checked.items()}
                   for start in range(0, n, batch_size))
        return cls._build_batches(out_dir, batches, schema, key, overwrite=overwrite, durable=durable,
                                  metadata=metadata, mode=mode, wrapper_fn=wrapper_fn, lock_timeout=lock_timeout,
                                  commit=commit)

    @classmethod
    def from_pandas(cls: type[R], out_dir: PathLike, frame: Any, *, fill_null: Optional[Mapping[str, Any]] = None,
                    **options: Any) -> R:
        """Build a map from a pandas ``DataFrame`` (one field per column; numeric, ``datetime64`` and
        ``timedelta64`` columns become scalar fields, object columns of ``str`` strings fields, of arrays ragged
        fields, of ``bytes`` ragged uint8 fields, of ``datetime.date`` ``datetime64[D]`` fields; time-zone-aware
        timestamps are stored in UTC with their zone in the field, see `mmap_ninja.adapters.tables`). A named
        index (each named level of a ``MultiIndex``) is kept as leading fields named after it, as
        ``pyarrow.Table.from_pandas`` keeps it; an unnamed one (``0..n-1``, or what filtering left) is dropped.
        Options as `from_dict`.

        A missing value (``None``, ``pd.NA``, ``NaT``; NaN in a float column is a value, not missing) is refused
        with an error naming its row, field and value, so a nullable integer column is never turned into floats:
        ``fill_null={"label": -1}`` stores ``-1`` in its place instead (a value of the field's type exactly)."""
        from mmap_ninja.adapters.tables import records_from_pandas

        return records_from_pandas(cls, out_dir, frame, fill_null, options)  # type: ignore[no-any-return]

    @classmethod
    def from_arrow(cls: type[R], out_dir: PathLike, table: Any, *, fill_null: Optional[Mapping[str, Any]] = None,
                   **options: Any) -> R:
        """Build a map from a ``pyarrow.Table`` (one field per column; numeric columns become scalar fields,
        string columns strings fields, binary columns ragged uint8 fields, list columns ragged fields, fixed-size
        lists fixed-shape fields; timestamps UTC ``datetime64`` at their unit with their zone in the field, dates
        ``datetime64[D]``, see `mmap_ninja.adapters.tables`). Options as `from_dict`.

        A null (a row's value, or an element of a row's list) is refused with an error naming its row and
        field, never cast (an int column with a null would otherwise become floats with NaN):
        ``fill_null={"label": -1}`` stores ``-1`` in place of the field's nulls (of its list elements, for a
        list column); the value must be one of the field's type exactly (2.9 into an integer field is
        refused)."""
        from mmap_ninja.adapters.tables import records_from_arrow

        return records_from_arrow(cls, out_dir, table, fill_null, options)  # type: ignore[no-any-return]

    @classmethod
    def from_image_folder(cls, out_dir: PathLike, root: PathLike, *, batch_size: int = 256, verbose: bool = False,
                          extensions: Optional[Sequence[str]] = None, key: Optional[str] = None,
                          overwrite: bool = False, durable: bool = False, metadata: Optional[dict[str, Any]] = None,
                          baseline_jpeg: bool = False) -> RecordsMmap:
        """Build a map with the fields ``image`` (each file's bytes, not re-encoded), ``label`` (int64 class
        index) and ``path`` (relative to ``root``) from ``root/<class>/<file>``; the class names, sorted as
        torchvision's ``ImageFolder`` sorts them, are the metadata's ``"classes"``; ``key="path"`` indexes the rows
        by path (`index_of`). See `mmap_ninja.kinds.ingest.from_image_folder`."""
        schema = {"image": Field.images(baseline_jpeg), "label": Field.scalar(np.int64), "path": Field.strings()}
        records = cast("type[RecordsMmap]", cls)  # (this class is only the base of RecordsMmap)
        return build_image_folder(records, out_dir, root, schema, batch_size=batch_size, verbose=verbose,
                                  extensions=extensions, key=key, overwrite=overwrite, durable=durable,
                                  metadata=metadata)

    @classmethod
    def from_huggingface(cls, out_dir: PathLike, dataset: Any, **options: Any) -> RecordsMmap:
        """Build a map from a Hugging Face ``datasets.Dataset``, batch by batch (``Image()`` columns keep their
        encoded bytes as images fields). See `mmap_ninja.adapters.ingest.records_from_huggingface`."""
        from mmap_ninja.adapters.ingest import records_from_huggingface

        return records_from_huggingface(out_dir, dataset, **options)

    @classmethod
    def from_parquet(cls, out_dir: PathLike, path: PathLike, **options: Any) -> RecordsMmap:
        """Build a map from a Parquet file, read batch by batch (memory bounded by the batch size). See
        `mmap_ninja.adapters.ingest.records_from_parquet`."""
        from mmap_ninja.adapters.ingest import records_from_parquet

        return records_from_parquet(out_dir, path, **options)
