"""PyTorch integration: tensors from read-only maps, collate functions, and a DDP index sharder.

Every map (`StringsMmap`, `RaggedMmap`, `NumpyMmap`) is already a map-style dataset: it has ``len`` and
``__getitem__``, and ``__getitems__`` for PyTorch's batched fetch (one vectorized lookup per batch). It
pickles as its path, so ``DataLoader`` workers started by ``fork``, ``spawn`` or ``forkserver`` reopen
the files and share the page cache: no worker holds a copy of the data.

Samples are read-only NumPy views into the mapping. ``torch.as_tensor`` on them warns that the array is
not writable. This module's ways around that:

- `collate` (a drop-in ``collate_fn``) stacks a batch straight into one new tensor: exactly one copy,
  from the page cache into the batch (in shared memory inside a worker, as ``default_collate`` does),
  and no warning.
- `PadCollate` pads variable-length samples into one tensor plus their lengths, in the same single copy.
- `as_tensor` turns one sample into a tensor: a copy by default; ``copy=False`` shares the mapping
  with no copy and no warning, which is safe as long as nothing writes into the tensor in place
  (the mapping is read-only: an in-place write would crash the process). Out-of-place use such as
  ``t.float()``, ``t.to(device)``, ``t + 1`` or ``torch.stack`` is always safe. ``as_tensor(numpy_map,
  copy=False)`` is the same for a whole `NumpyMmap`.

Values are never changed silently, here as in the maps: ``PadCollate(dtype=...)`` and batches of mixed
dtypes convert only when every value survives (the rule of `mmap_ninja.kinds.casting`), and samples stored in
big-endian byte order (which tensors lack) are converted exactly to native order, as ``to_arrow`` does.
Tensors can also be *stored*: a map's ``append`` / ``extend`` take tensors (see `mmap_ninja.kinds.casting.as_array`
for ``requires_grad``, other devices and ``bfloat16``).

Records maps (`RecordsMmap`) get `RecordsDataset`: its ``__getitems__`` reads a whole DataLoader batch with one
``get_batch`` call (every field gathered, images decoded, ragged fields padded as asked) and its ``collate`` turns
that into tensors; with a per-row ``transform`` (resizing images, augmenting) the rows are read with one batched
lookup, transformed, and the collate stacks or pads each field (`RecordsCollate`).

`RandomResizedCropDecode` is torchvision's ``RandomResizedCrop`` done while decoding (JPEGs at the smallest DCT
scale that keeps the crop at least the output size); ``RecordsDataset(..., decode=...)`` and `ImagesDataset`
apply it per row inside the batched read.

`rank_indices` and `RankSampler` split the indices of each epoch between DDP ranks exactly as
``torch.utils.data.DistributedSampler`` does (same permutation for the same seed and epoch), for any
sized dataset. (They were named ``shard_indices`` and ``ShardedSampler``, easily confused with the sampler for
sharded maps, `mmap_ninja.adapters.shards.ShardAwareSampler`; the old names still work, with a
``DeprecationWarning``.) For new code, `ResumableSampler` is recommended: the same contract, an O(1)-memory
order (no permutation of the whole dataset on every rank), and a small state that ``StatefulDataLoader`` saves and
that resumes exactly on any number of ranks (`mmap_ninja.adapters._samplers`).

This module imports ``torch``; ``import mmap_ninja`` does not.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from mmap_ninja.extras import missing_extra

try:
    import torch
    from torch.utils.data import Dataset, Sampler, get_worker_info
except ImportError as error:
    raise missing_extra(error, "mmap_ninja.adapters.torch") from None

from mmap_ninja.adapters._block_shuffle import BlockShuffleSampler
from mmap_ninja.adapters._budget import PaddingReport, TokenBudgetBatchSampler
from mmap_ninja.adapters._crop_decode import ImagesDataset, RandomResizedCropDecode, gather_decoded, tensor_of
from mmap_ninja.adapters._samplers import ResumableSampler, as_int
from mmap_ninja.adapters._tokens import PackedBatch, PackedTensors, PackedTokens, collate_packed
from mmap_ninja.errors import NoSuchFieldError
from mmap_ninja.kinds.batch import PAD_GATHER_BELOW, assemble, pad_scalar
from mmap_ninja.kinds.casting import cast

__all__ = ["FieldBatch", "ImagesDataset", "PadCollate", "RandomResizedCropDecode", "RankSampler", "RecordsCollate",
           "RecordsDataset", "ResumableSampler", "ShardedSampler", "as_tensor", "collate", "pad_collate",
           "rank_indices", "shard_indices"]
# Pretraining on token maps: windows (adapters/_tokens.py) and token-budget batches (adapters/_budget.py).
__all__ += ["PackedBatch", "PackedTensors", "PackedTokens", "PaddingReport", "TokenBudgetBatchSampler",
            "collate_packed"]
# A locality-aware shuffle for maps read by blocks (adapters/_block_shuffle.py, mmap_ninja/containers/block_order.py).
__all__ += ["BlockShuffleSampler"]

_NOT_WRITABLE = ".*not writable.*"


def as_tensor(array: Any, *, copy: bool | None = None) -> torch.Tensor:
    """A tensor of ``array`` without PyTorch's non-writable warning.

    ``array`` is an ndarray (e.g. a map's sample), a `NumpyMmap` (the whole map), anything else with
    ``__array__``, or a tensor (returned as it is unless ``copy=True``). A writable array is shared
    (``torch.from_numpy``). A read-only one (every sample of a map, and a map itself) is copied unless
    ``copy=False``, which shares the read-only mapping: no copy, no warning, but the tensor must not be
    written in place. ``copy=True`` always copies. As in ``torch.as_tensor``, ``copy=False`` shares whenever
    it can: an array in big-endian byte order (which tensors do not have) is converted to native order, an
    exact copy, and so is one with negative strides.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import RaggedMmap
        >>> from mmap_ninja.adapters.torch import as_tensor
        >>> tokens = RaggedMmap.from_lists("tokens", [np.arange(4, dtype=np.int32)], overwrite=True)
        >>> as_tensor(tokens[0])  # zero-copy, no non-writable warning (do not write into it)
        tensor([0, 1, 2, 3], dtype=torch.int32)
        >>> as_tensor(tokens[0], copy=True).add_(1)  # a copy is writable
        tensor([1, 2, 3, 4], dtype=torch.int32)
    """
    if isinstance(array, torch.Tensor):
        return array.clone() if copy else array
    array = np.asarray(array)
    whole = tensor_of(array) if not copy else None  # the .numpy() of a tensor (a batch in shared memory)
    if whole is not None:
        return whole
    if not array.dtype.isnative:
        return torch.from_numpy(array.astype(array.dtype.newbyteorder("=")))  # a copy with the same values
    if copy or (copy is None and not array.flags.writeable) or any(stride < 0 for stride in array.strides):
        return torch.from_numpy(np.array(array, copy=True, order="C"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NOT_WRITABLE, category=UserWarning)
        return torch.from_numpy(array)


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype=dtype.newbyteorder("="))).dtype


def _batch_dtype(arrays: list[np.ndarray], dtype: np.dtype | None) -> np.dtype:
    """The dtype of the batch tensor: ``dtype`` if given, else the samples' common dtype; native byte order."""
    if dtype is None:
        first = arrays[0].dtype
        dtype = first if all(a.dtype == first for a in arrays) else np.result_type(*arrays)
    native: np.dtype = dtype.newbyteorder("=")
    return native


def _in_dtype(arrays: list[np.ndarray], dtype: np.dtype) -> list[np.ndarray]:
    """The samples converted to ``dtype`` under the library's rule (an error naming the sample and the value if
    one would change). A sample differing only in byte order is left as it is: copying it into the batch
    converts it exactly."""
    converted = []
    for j, array in enumerate(arrays):
        if array.dtype != dtype and array.dtype.newbyteorder("=") != dtype:
            array = cast(array, dtype, f"sample {j} of the batch")
        converted.append(array)
    return converted


def _new_batch_tensor(shape: Sequence[int], dtype: np.dtype) -> torch.Tensor:
    """A new tensor for a batch; in a DataLoader worker, in shared memory (so sending it to the main
    process costs no copy), like ``default_collate``."""
    tdtype = _torch_dtype(dtype)
    if get_worker_info() is None:
        return torch.empty(tuple(shape), dtype=tdtype)
    numel = math.prod(shape)
    storage = torch.empty(0, dtype=tdtype)._typed_storage()._new_shared(numel, device="cpu")  # type: ignore[no-untyped-call]
    return torch.empty(0, dtype=tdtype).new(storage).resize_(tuple(shape))


def _stack(arrays: list[np.ndarray]) -> torch.Tensor:
    first = arrays[0]
    for k, a in enumerate(arrays):
        if a.shape != first.shape:
            raise ValueError(f"cannot stack samples of shapes {first.shape} (sample 0) and {a.shape} (sample {k}) "
                             f"into one tensor; use mmap_ninja.adapters.torch.PadCollate to pad them")
    dtype = _batch_dtype(arrays, None)
    arrays = _in_dtype(arrays, dtype)
    out = _new_batch_tensor((len(arrays), *first.shape), dtype)
    np.stack(arrays, out=out.numpy())  # the one copy: page cache -> batch tensor
    return out


def collate(batch: Sequence[Any]) -> Any:
    """A ``collate_fn`` like ``default_collate`` that stacks ndarrays (read-only views included) straight
    into one new tensor, with no warning and one copy. Samples of different dtypes are stacked in their
    common dtype (``np.result_type``) only if every value survives (see `mmap_ninja.kinds.casting`; else a
    ValueError naming the sample's position and the value); big-endian samples are converted exactly to
    native byte order. Strings and bytes stay a list; numbers become a tensor; tuples, lists and dicts of
    fields are collated field by field; anything else goes to ``default_collate``.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import np_from_ndarray
        >>> from mmap_ninja.adapters.torch import collate
        >>> rows = np_from_ndarray("rows", np.arange(6).reshape(3, 2), overwrite=True)
        >>> collate([rows[0], rows[2]])
        tensor([[0, 1],
                [4, 5]])
    """
    if len(batch) == 0:
        return []
    gather_into = getattr(batch, "gather_into", None)  # a numpy map's rows: one gather into the batch
    if gather_into is not None and batch.dtype.kind in "biuf" and batch.dtype.isnative:  # type: ignore[attr-defined]
        out = _new_batch_tensor((len(batch), *batch.sample_shape), batch.dtype)  # type: ignore[attr-defined]
        gather_into(out.numpy())
        return out
    elem = batch[0]
    if isinstance(elem, np.ndarray) and elem.dtype.kind in "biuf":
        return _stack([np.asarray(b) for b in batch])
    if isinstance(elem, (str, bytes)):
        return list(batch)
    if isinstance(elem, (bool, numbers.Number, np.generic)) and not isinstance(elem, np.ndarray):
        return torch.as_tensor(np.asarray(batch))
    if isinstance(elem, dict):
        return {key: collate([b[key] for b in batch]) for key in elem}
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return type(elem)(*(collate(list(field)) for field in zip(*batch)))
    if isinstance(elem, (tuple, list)):
        fields = [collate(list(field)) for field in zip(*batch)]
        return fields if isinstance(elem, list) else tuple(fields)
    from torch.utils.data import default_collate

    return default_collate(list(batch))


def _pad(arrays: list[np.ndarray], pad_value: Any, dtype: np.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    k = len(arrays)
    if k == 0:
        empty_dtype = torch.float32 if dtype is None else _torch_dtype(dtype)
        return torch.empty((0, 0), dtype=empty_dtype), torch.empty(0, dtype=torch.int64)
    value_dtype = _batch_dtype(arrays, dtype)
    arrays = _in_dtype(arrays, value_dtype)
    ndim = arrays[0].ndim
    for j, a in enumerate(arrays):
        if a.ndim != ndim:
            raise ValueError(f"cannot pad samples with different numbers of dimensions: sample 0 has shape "
                             f"{arrays[0].shape} and sample {j} has shape {a.shape}")
    shapes = np.array([a.shape for a in arrays], dtype=np.int64).reshape(k, ndim)
    sizes = shapes.prod(axis=1)
    max_shape = tuple(shapes.max(axis=0).tolist())
    out = _new_batch_tensor((k, *max_shape), value_dtype)
    target = out.numpy()
    lengths = torch.from_numpy(shapes[:, 0].copy() if ndim == 1 else shapes)
    if int(sizes.sum()) <= PAD_GATHER_BELOW * k:
        flat = np.concatenate([a.reshape(-1) for a in arrays]) if k else np.empty(0, value_dtype)
        starts = np.cumsum(sizes) - sizes
        assemble(flat.astype(value_dtype, copy=False), starts, sizes, shapes, np.arange(k), pad_value, target)
    else:
        target[...] = pad_scalar(pad_value, value_dtype)
        for j, a in enumerate(arrays):
            corner: tuple[int | slice, ...] = (j, *(slice(0, s) for s in a.shape))
            target[corner] = a
    return out, lengths


class PadCollate:
    """A ``collate_fn`` that pads variable-shape samples into one tensor: ``(padded, lengths)``.

    ``padded`` has shape ``(batch, *max_shape)`` (every dimension padded to its largest size in the
    batch, with ``pad_value``); ``lengths`` is an int64 tensor of shape ``(batch,)`` for 1-D samples and
    ``(batch, ndim)`` (the shapes) otherwise. If the samples are tuples ``(array, *others)``, the first
    field is padded and the others are collated with `collate`: ``(padded, lengths, *others)``.
    ``dtype`` converts the samples (e.g. ``np.int64`` for token ids) under the library's rule
    (`mmap_ninja.kinds.casting`): a value that would change (300 as ``uint8``, 1.7 as ``int64``) raises a ValueError
    naming the sample's position in the batch and the value. Without ``dtype``, samples of different dtypes
    are padded into their common dtype (``np.result_type``) under the same rule. Picklable, so it works with
    ``spawn`` workers.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import RaggedMmap
        >>> lengths = (5, 3, 9, 1, 6)
        >>> docs = RaggedMmap.from_lists("docs", [np.arange(n, dtype=np.int32) for n in lengths], overwrite=True)
        >>> from mmap_ninja.adapters.torch import PadCollate
        >>> padded, lengths = PadCollate(pad_value=0, dtype="int64")([docs[0], docs[1]])
        >>> padded, lengths
        (tensor([[0, 1, 2, 3, 4],
                [0, 1, 2, 0, 0]]), tensor([5, 3]))
    """

    def __init__(self, pad_value: Any = 0, dtype: Any = None):
        self.pad_value = pad_value
        self.dtype = None if dtype is None else np.dtype(dtype)

    def __call__(self, batch: Sequence[Any]) -> tuple[Any, ...]:
        if len(batch) and isinstance(batch[0], (tuple, list)):
            fields = list(zip(*batch))
            padded, lengths = _pad([np.asarray(a) for a in fields[0]], self.pad_value, self.dtype)
            return (padded, lengths, *(collate(list(f)) for f in fields[1:]))
        return _pad([np.asarray(a) for a in batch], self.pad_value, self.dtype)

    def __repr__(self) -> str:
        return f"PadCollate(pad_value={self.pad_value!r}, dtype={self.dtype})"


pad_collate = PadCollate(0)
"""`PadCollate` with ``pad_value=0``."""


# ------------------------------------------------------------------------------------------------ records


class FieldBatch(dict):  # type: ignore[type-arg]
    """A batch of rows already gathered field by field (`RecordsMmap.get_batch`'s dict of batched arrays and
    lists of ``str``), with the padded fields' ``lengths``: what `RecordsDataset.__getitems__` returns and
    `RecordsCollate` turns into tensors.

    Example:

        >>> import numpy as np
        >>> from torch.utils.data import DataLoader
        >>> from mmap_ninja import RecordsMmap
        >>> rec = RecordsMmap.from_dict("rows", {"tokens": [np.arange(2), np.arange(3)], "label": np.array([0, 1])},
        ...                             overwrite=True)
        >>> from mmap_ninja.adapters.torch import FieldBatch, RecordsDataset
        >>> batch = RecordsDataset(rec, pad_value=0).__getitems__([1, 0])
        >>> isinstance(batch, FieldBatch), batch.lengths["tokens"]
        (True, array([3, 2]))
    """

    def __init__(self, columns: dict[str, Any], lengths: dict[str, Any] | None = None):
        super().__init__(columns)
        self.lengths = dict(lengths or {})

    def __reduce__(self) -> tuple[Any, ...]:
        return FieldBatch, (dict(self), self.lengths)

    def __missing__(self, key: Any) -> Any:
        if isinstance(key, int):  # torch's default_collate reads batch[0]: it takes a list of samples
            raise TypeError("this batch was gathered field by field by RecordsDataset.__getitems__; pass "
                            "collate_fn=dataset.collate to the DataLoader (torch's default collate takes a list "
                            "of samples)")
        raise KeyError(key)


def _dtype_of(value: Any) -> str:
    return str(getattr(value, "dtype", type(value).__name__))


def _field_tensor(name: str, value: Any) -> Any:
    try:
        return as_tensor(value)
    except TypeError as e:  # a dtype torch has no tensor of (datetime64, ...)
        raise TypeError(f"field {name!r} ({_dtype_of(value)}): {e}") from None


def _field_pad(pad_value: Any, name: str) -> Any:
    return pad_value.get(name) if isinstance(pad_value, dict) else pad_value


class RecordsCollate:
    """A ``collate_fn`` for rows of a records map, field by field.

    It takes either a `FieldBatch` (from `RecordsDataset.__getitems__`: the fields are already stacked or padded,
    so it only makes tensors of them, without a copy) or a list of row dicts (from ``RecordsMmap.__getitems__``,
    a `RecordsDataset` with a ``transform``, or any dataset of dicts): then each field is stacked (`collate`) or,
    when it has a pad value, padded (as `PadCollate` pads: every dimension to the batch's largest). ``pad_value``
    is one value for every array field or a dict of field -> value (fields not in it are stacked, and must then
    share one shape). Strings stay lists of ``str``.

    The result is a dict of field -> tensor (or list of ``str``); with a ``pad_value`` it is ``(batch,
    lengths)``, ``lengths`` a dict of the padded fields' lengths as `PadCollate` gives them (for images fields,
    their ``(k, 3)`` shapes). Picklable, so it works with ``spawn`` workers.

    Example:

        >>> import numpy as np
        >>> from torch.utils.data import DataLoader
        >>> from mmap_ninja import RecordsMmap
        >>> rec = RecordsMmap.from_dict("rows", {"tokens": [np.arange(2), np.arange(3)], "label": np.array([0, 1])},
        ...                             overwrite=True)
        >>> from mmap_ninja.adapters.torch import RecordsCollate
        >>> fields, lengths = RecordsCollate(pad_value=-1)([rec[0], rec[1]])  # a list of row dicts
        >>> fields["tokens"], lengths["tokens"]
        (tensor([[ 0,  1, -1],
                [ 0,  1,  2]]), tensor([2, 3]))
    """

    def __init__(self, pad_value: Any = None):
        self.pad_value = dict(pad_value) if isinstance(pad_value, dict) else pad_value

    def __call__(self, batch: Any) -> Any:
        if isinstance(batch, FieldBatch):
            columns = {name: value if isinstance(value, list) else _field_tensor(name, value)
                       for name, value in batch.items()}
            lengths = {name: as_tensor(value) for name, value in batch.lengths.items()}
        else:
            columns, lengths = self._rows(batch)
        return columns if self.pad_value is None else (columns, lengths)

    def _rows(self, rows: Sequence[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        if not len(rows):
            return {}, {}
        if not isinstance(rows[0], dict):
            raise TypeError(f"RecordsCollate takes rows (dicts of field -> value) or a FieldBatch, got a batch of "
                            f"{type(rows[0]).__name__}")
        names = list(rows[0])
        columns: dict[str, Any] = {}
        lengths: dict[str, Any] = {}
        for name in names:
            try:
                values = [row[name] for row in rows]
            except KeyError:
                j = next(j for j, row in enumerate(rows) if name not in row)
                raise ValueError(f"row {j} of the batch has no field {name!r} (row 0 has {names})") from None
            pad = _field_pad(self.pad_value, name)
            if pad is not None and isinstance(values[0], (np.ndarray, torch.Tensor)) and values[0].ndim:
                try:  # a transform's CPU tensors are padded as the arrays they view
                    columns[name], lengths[name] = _pad([np.asarray(v) for v in values], pad, None)
                except ValueError as e:
                    raise ValueError(f"field {name!r}: {e}") from None
            else:
                try:
                    columns[name] = collate(values)
                except ValueError as e:
                    raise ValueError(f"field {name!r}: {e}") from None
                except TypeError as e:  # a dtype torch has no tensor of (datetime64, ...)
                    raise TypeError(f"field {name!r} ({_dtype_of(values[0])}): {e}") from None
        return columns, lengths

    def __repr__(self) -> str:
        return f"RecordsCollate(pad_value={self.pad_value!r})"


class RecordsDataset(Dataset[Any]):
    """A map-style dataset over a `RecordsMmap` for ``torch.utils.data.DataLoader``; pass ``collate_fn=
    dataset.collate``.

    ``fields`` picks the fields to read (default: all). Without a ``transform``, ``__getitems__`` (PyTorch's
    batched fetch) reads each DataLoader batch with one ``records.get_batch(indices, fields, pad_value)``: one
    gather per field, images decoded straight into the batch array; ``pad_value`` (one value or a dict of field
    -> value) pads ragged and images fields whose samples differ in shape. With a ``transform`` (a picklable
    function of a row dict returning a row dict, e.g. resizing the image), the batch's rows are read with one
    batched lookup, transformed one by one and the collate stacks or pads each field.

    ``decode`` (e.g. `RandomResizedCropDecode(224)`) decodes every images field of each batch, row by row inside
    the batched read, into one array (``decode(field, indices)``), instead of the full-size decode; the other
    fields are read as without it, and a ``transform`` then sees the decoded rows.

    ``dataset[i]`` is row ``i`` (its chosen fields, transformed). The dataset pickles as the map's path and these
    options: DataLoader workers under ``fork``, ``spawn`` or ``forkserver`` reopen the map and share one page
    cache.

    Example:

        >>> import numpy as np
        >>> from torch.utils.data import DataLoader
        >>> from mmap_ninja import RecordsMmap
        >>> rec = RecordsMmap.from_dict("rows", {"tokens": [np.arange(2), np.arange(3)], "label": np.array([0, 1])},
        ...                             overwrite=True)
        >>> from mmap_ninja.adapters.torch import RecordsDataset
        >>> dataset = RecordsDataset(rec, pad_value=0)
        >>> fields, lengths = next(iter(DataLoader(dataset, batch_size=2, collate_fn=dataset.collate)))
        >>> fields["tokens"], fields["label"], lengths["tokens"]
        (tensor([[0, 1, 0],
                [0, 1, 2]]), tensor([0, 1]), tensor([2, 3]))
    """

    def __init__(self, records: Any, fields: Sequence[str] | None = None, pad_value: Any = None,
                 transform: Any = None, decode: Any = None):
        if not (hasattr(records, "fields") and hasattr(records, "get_batch")):
            raise TypeError(f"RecordsDataset takes a records map (a RecordsMmap), got {type(records).__name__}; "
                            f"the other maps are map-style datasets as they are: DataLoader(m, collate_fn=collate)")
        names = tuple(records.fields)
        if isinstance(fields, str):
            raise TypeError(f"fields is a list of field names; got the str {fields!r} (for one field pass "
                            f"fields=[{fields!r}])")
        chosen = names if fields is None else tuple(fields)
        for name in chosen:
            if name not in names:
                raise NoSuchFieldError(f"{records.path} has no field {name!r}; its fields are {list(names)}")
        for name in pad_value if isinstance(pad_value, dict) else ():
            if name not in names:
                raise NoSuchFieldError(f"pad_value names no field {name!r} of {records.path}; its fields are "
                                       f"{list(names)}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable (row dict -> row dict), got {type(transform).__name__}")
        if decode is not None and not callable(decode):
            raise TypeError(f"decode must be callable (images field, indices) -> batch array, e.g. "
                            f"RandomResizedCropDecode(224); got {type(decode).__name__}")
        self.decode = decode
        self.records = records
        self.fields = chosen
        self.pad_value = pad_value
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def _row(self, row: dict[str, Any]) -> dict[str, Any]:
        if len(self.fields) != len(row):
            row = {name: row[name] for name in self.fields}
        if self.transform is None:
            return row
        result = self.transform(row)
        if not isinstance(result, dict):
            raise TypeError(f"transform must return a row dict, got {type(result).__name__}")
        return result

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.decode is not None:
            return self._decoded([index], rows=True)[0]  # type: ignore[no-any-return]
        return self._row(self.records[index])

    def _decoded(self, indices: Sequence[int], rows: bool) -> Any:
        """The batch with its images fields decoded by ``decode``: a `FieldBatch`, or (``rows``) row dicts."""
        columns, lengths = gather_decoded(self.records, indices, self.fields, self.pad_value, self.decode)
        if not rows:
            return FieldBatch(columns, lengths)
        return [self._row({name: column[k] for name, column in columns.items()}) for k in range(len(indices))]

    def __getitems__(self, indices: Sequence[int]) -> Any:
        if self.decode is not None:
            return self._decoded(indices, rows=self.transform is not None)
        if self.transform is None:
            gathered = self.records.get_batch(indices, fields=self.fields, pad_value=self.pad_value)
            columns, lengths = gathered if self.pad_value is not None else (gathered, {})
            return FieldBatch(columns, lengths)
        return [self._row(row) for row in self.records[list(indices)]]

    @property
    def collate(self) -> RecordsCollate:
        """The collate function matching this dataset's ``pad_value``."""
        return RecordsCollate(self.pad_value)

    def __repr__(self) -> str:
        return (f"RecordsDataset({self.records!r}, fields={list(self.fields)}, pad_value={self.pad_value!r}, "
                f"transform={self.transform!r}, decode={self.decode!r})")


# ------------------------------------------------------------------------------------------------ DDP


def rank_indices(n: int, *, rank: int, world_size: int, epoch: int = 0, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = False) -> np.ndarray:
    """The indices of ``range(n)`` that ``rank`` of ``world_size`` reads in ``epoch``, as an int64 array.

    Exactly ``torch.utils.data.DistributedSampler``'s: with ``shuffle`` one permutation of ``range(n)``
    seeded by ``seed + epoch`` (the same on every rank), then either padded by repeating indices from the
    start (``drop_last=False``) or cut (``drop_last=True``) to a multiple of ``world_size``, and rank
    ``r`` takes every ``world_size``-th index starting at ``r``. Every rank gets the same number; within
    one epoch the ranks' shards are disjoint when ``drop_last=True`` or ``n`` divides evenly.

    Example:

        >>> from mmap_ninja.adapters.torch import rank_indices
        >>> rank_indices(5, rank=0, world_size=2, shuffle=False), rank_indices(5, rank=1, world_size=2, shuffle=False)
        (array([0, 2, 4]), array([1, 3, 0]))
    """
    n, rank, world_size = int(n), int(rank), int(world_size)
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size - 1}], got {rank}")
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    per_rank = math.ceil((n - world_size) / world_size) if drop_last and n % world_size else math.ceil(n / world_size)
    total = per_rank * world_size
    if shuffle:
        generator = torch.Generator()
        generator.manual_seed(int(seed) + int(epoch))
        indices = torch.randperm(n, generator=generator).numpy().astype(np.int64)
    else:
        indices = np.arange(n, dtype=np.int64)
    # np.resize repeats from the start, as DistributedSampler pads.
    indices = np.resize(indices, total) if total > n and n > 0 else indices[:total]
    return indices[rank:total:world_size]


class RankSampler(Sampler[int]):
    """A sampler giving this rank its `rank_indices` of each epoch; call `set_epoch` before each epoch.

    It reproduces ``DistributedSampler``'s order exactly (and, like it, builds a permutation of the whole dataset on
    every rank each epoch and has no state to resume from). New code should prefer `ResumableSampler`.

    ``data_source`` is the dataset (or its length). ``rank`` and ``world_size`` default to
    ``torch.distributed``'s when a process group is initialized, else to 0 and 1.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import RaggedMmap
        >>> lengths = (5, 3, 9, 1, 6)
        >>> docs = RaggedMmap.from_lists("docs", [np.arange(n, dtype=np.int32) for n in lengths], overwrite=True)
        >>> from mmap_ninja.adapters.torch import RankSampler
        >>> sampler = RankSampler(docs, rank=1, world_size=2, shuffle=False)
        >>> sampler.set_epoch(0)
        >>> len(sampler), list(sampler)
        (3, [1, 3, 0])
    """

    def __init__(self, data_source: Any, *, rank: int | None = None, world_size: int | None = None,
                 seed: int = 0, shuffle: bool = True, drop_last: bool = False, epoch: int = 0):
        if rank is None or world_size is None:
            dist = torch.distributed
            initialized = dist.is_available() and dist.is_initialized()
            rank = rank if rank is not None else (dist.get_rank() if initialized else 0)
            world_size = world_size if world_size is not None else (dist.get_world_size() if initialized else 1)
        self.n = int(data_source) if isinstance(data_source, numbers.Integral) else len(data_source)
        self.rank, self.world_size = as_int(rank, "rank"), as_int(world_size, "world_size")
        self.seed, self.shuffle, self.drop_last = as_int(seed, "seed"), bool(shuffle), bool(drop_last)
        self.epoch = as_int(epoch, "epoch")
        rank_indices(0, rank=self.rank, world_size=self.world_size)  # validates rank and world_size

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffled order of ``epoch`` (call it at the start of every epoch, as with DistributedSampler)."""
        self.epoch = as_int(epoch, "epoch")

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch, in the order they are yielded."""
        return rank_indices(self.n, rank=self.rank, world_size=self.world_size, epoch=self.epoch,
                            seed=self.seed, shuffle=self.shuffle, drop_last=self.drop_last)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        if self.drop_last and self.n % self.world_size:
            return math.ceil((self.n - self.world_size) / self.world_size)
        return math.ceil(self.n / self.world_size)


def shard_indices(n: int, **options: Any) -> np.ndarray:
    """Deprecated name of `rank_indices` (easily confused with `mmap_ninja.adapters.shards.shard_aware_indices`)."""
    warnings.warn("shard_indices() is now rank_indices(); the old name will be removed", DeprecationWarning,
                  stacklevel=2)
    return rank_indices(n, **options)


class ShardedSampler(RankSampler):
    """Deprecated name of `RankSampler` (easily confused with `mmap_ninja.adapters.shards.ShardAwareSampler`, the
    sampler for sharded maps)."""

    def __init__(self, data_source: Any, **options: Any):
        warnings.warn("ShardedSampler is now RankSampler (it splits any dataset's indices between ranks; the sampler "
                      "for sharded maps is mmap_ninja.adapters.shards.ShardAwareSampler); the old name will be "
                      "removed", DeprecationWarning, stacklevel=2)
        super().__init__(data_source, **options)
