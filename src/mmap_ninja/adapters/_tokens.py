"""Token maps for LLM pretraining: `PackedTokens` (fixed-length windows over the concatenation of every
document, with their document boundaries) and its collate. Re-exported by `mmap_ninja.adapters.torch`.

A 1-D `RaggedMmap` of token sequences already stores every document back to back, with n + 1 int64 offsets:
the window of ``seq_len`` tokens starting at token ``t`` of the concatenation is the slice ``values[t:t + seq_len]``
of the mapping (no copy), and the documents it crosses are found by a binary search of the offsets. So nothing is
built at open (no sample index, no document index file): opening is O(1) at any number of tokens or documents,
and every position is a 64-bit integer.
"""

from __future__ import annotations

import operator
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any, Optional, overload

import numpy as np
import torch
from numpy.lib.stride_tricks import as_strided
from torch.utils.data import Dataset

__all__ = ["PackedBatch", "PackedTensors", "PackedTokens", "collate_packed"]

_INT32_MAX = int(np.iinfo(np.int32).max)

# Below this many documents in one window, its boundaries are found with Python lists rather than NumPy.
_LIST_DOCUMENTS = 64
# A batch's boundaries in a map of more than _ONE_STEP_ENTRIES documents (256 KiB of offsets) are searched in two
# steps (PackedTokens._documents): a copy of every step-th offset, at most _COARSE_ENTRIES of them (64 KiB: it stays
# in the CPU's caches while the batch's tokens are copied), then the last log2(step) levels for all keys at once,
# one gather per level.
_ONE_STEP_ENTRIES = 1 << 15
_COARSE_ENTRIES = 1 << 13

class PackedTokens(Dataset[dict[str, np.ndarray]]):
    """A map-style dataset of fixed-length windows over the concatenation of all documents of ``tokens``.

    ``tokens`` is a `RaggedMmap` of 1-D token sequences without a codec (or a remote map of one); no separator
    is inserted between documents (store one at the end of each document if the model expects it). Item ``k`` is
    the window of ``seq_len`` tokens starting at token ``k * stride`` (``stride`` defaults to ``seq_len``;
    ``seq_len=L + 1, stride=L`` gives inputs and labels shifted by one), a dict of NumPy arrays:

    - ``input_ids``: the ``seq_len`` tokens in the map's dtype, a read-only view of the mapping (no copy);
    - ``cu_seqlens``: int32 boundaries of the documents inside the window, FlashAttention's
      ``cu_seqlens`` convention: it starts at 0 (even when the window starts mid-document), ends at ``seq_len``,
      has one entry per boundary, and empty documents are skipped;
    - ``doc_ids``: int64, the index in ``tokens`` of the document of each segment (``len(cu_seqlens) - 1`` of them).

    ``len`` is ``(T - seq_len) // stride + 1`` for ``T >= seq_len`` tokens in all, else 0; the tokens after the
    last whole window are not read. The dataset sees the documents the map held when it was made (later appends
    are not seen; make a new one). Opening reads only the map's header, and every read is two binary searches of
    the offsets. It pickles as the map's path (DataLoader workers reopen the files). Use `collate_packed`
    (also ``PackedTokens.collate``) as the DataLoader's ``collate_fn`` to get torch tensors.

    A DataLoader batch is read at once (``__getitems__``, see `get_batch` and `PackedBatch`): the windows gathered
    into one ``(B, seq_len)`` array of ``dtype`` (default: the map's own; give e.g. ``np.int64`` to have batches
    widened as they are read, or widen them where they are used), the boundaries of all rows found in one search.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import RaggedMmap
        >>> lengths = (5, 3, 9, 1, 6)
        >>> docs = RaggedMmap.from_lists("docs", [np.arange(n, dtype=np.int32) for n in lengths], overwrite=True)
        >>> from mmap_ninja.adapters.torch import PackedTokens
        >>> windows = PackedTokens(docs, 9, stride=8)
        >>> len(windows)
        2
        >>> item = windows[0]
        >>> item["input_ids"], item["cu_seqlens"], item["doc_ids"]
        (array([0, 1, 2, 3, 4, 0, 1, 2, 0], dtype=int32), array([0, 5, 8, 9], dtype=int32), array([0, 1, 2]))
    """

    def __init__(self, tokens: Any, seq_len: int, *, stride: Optional[int] = None, dtype: Any = None):
        seq_len = _positive("seq_len", seq_len)
        stride = seq_len if stride is None else _positive("stride", stride)
        if seq_len > np.iinfo(np.int32).max:
            raise ValueError(f"seq_len must fit int32 cu_seqlens (at most 2**31 - 1), got {seq_len}")
        _check_token_kind(tokens)
        ndims = getattr(tokens, "ndims", None)
        if ndims is not None and ndims not in ([], [1]):
            raise ValueError(f"PackedTokens needs a map of 1-D token sequences; {_name(tokens)} holds samples "
                             f"with {ndims} dimensions")
        self.tokens = tokens
        self.seq_len = seq_len
        self.stride = stride
        self.documents = len(tokens)
        self._attach()
        self.total_tokens = int(self._offsets[-1])
        self._length = (self.total_tokens - seq_len) // stride + 1 if self.total_tokens >= seq_len else 0
        self.dtype: np.dtype = self._values.dtype if dtype is None else _numpy_dtype(dtype)
        if not np.can_cast(self._values.dtype, self.dtype, "safe"):
            raise TypeError(f"tokens of dtype {self._values.dtype} do not convert safely to dtype={self.dtype}")
        self._templates()

    def _templates(self) -> None:
        """The boundaries and document id of a window inside one document, copied for each such window."""
        self._whole = np.array([0, self.seq_len], dtype=np.int32)
        self._coarse: Optional[tuple[np.ndarray, np.ndarray, list[tuple[int, np.ndarray]]]] = None
        self._counting = np.arange(0, dtype=np.int64)  # 0, 1, 2, ...: grown and sliced by _boundaries
        self._row_multiples = self._counting * self.seq_len  # 0, seq_len, 2 * seq_len, ...: likewise
        self._one_id = np.zeros(1, dtype=np.int64)
        # Row k is window k: a read-only 2-D view of the mapping, from which a batch is one gather of rows.
        step = self._values.strides[0]
        self._windows_view = as_strided(self._values, shape=(self._length, self.seq_len),
                                        strides=(self.stride * step, step), writeable=False)

    def _attach(self) -> None:
        """Take the map's values and its first ``documents + 1`` offsets (read-only views of the mapping)."""
        try:
            values, offsets = self.tokens.values, self.tokens.offsets
        except AttributeError:
            if hasattr(self.tokens, "shard_starts"):
                raise TypeError(f"PackedTokens reads one RaggedMmap, not a sharded map ({_name(self.tokens)}): use "
                                f"one PackedTokens per shard (tokens.shard(k)) joined by torch's ConcatDataset "
                                f"(windows then stay within a shard)") from None
            raise TypeError(f"PackedTokens needs a RaggedMmap of token sequences (with values and offsets), got "
                            f"{type(self.tokens).__name__}") from None
        if values.ndim != 1 or len(offsets) < self.documents + 1:
            raise ValueError(f"{_name(self.tokens)} does not hold the {self.documents} documents it was opened "
                             f"with")
        if values.dtype.kind not in "iu":
            raise TypeError(f"PackedTokens needs integer token ids (a ragged map or records field of an integer "
                            f"dtype), but {_name(self.tokens)} holds {values.dtype} values")
        self._values = values
        self._offsets = offsets[:self.documents + 1]
        self._starts = self._offsets.data  # Python ints on indexing, for bisect
        if int(self._offsets[-1]) > len(values):
            raise ValueError(f"{_name(self.tokens)}'s offsets point past its {len(values)} tokens")

    def __len__(self) -> int:
        return self._length

    def window_start(self, index: int) -> int:
        """The position in the concatenation of the first token of window ``index`` (negative counts from the end)."""
        position = _window_position(index)
        if position < 0:
            position += self._length
        if not 0 <= position < self._length:
            raise IndexError(f"window {index} is out of range: {self._length} windows of {self.seq_len} tokens "
                             f"(stride {self.stride}) fit in {self.total_tokens} tokens")
        return position * self.stride

    @overload
    def __getitem__(self, index: int) -> dict[str, np.ndarray]: ...

    @overload
    def __getitem__(self, index: slice | Sequence[int] | np.ndarray) -> list[dict[str, np.ndarray]]: ...

    def __getitem__(self, index: Any) -> Any:
        """Window ``index`` (a dict, see the class); a slice, a list or a 1-D integer array of positions gives
        the list of those windows, as a map's ``m[a:b]`` gives a list of samples (`get_batch` reads them as one
        batch instead)."""
        fast = type(index) is int and 0 <= index < self._length  # a plain position: no checks to make
        if not fast and not isinstance(index, (int, np.integer)):
            if isinstance(index, slice):
                return [self[position] for position in range(*index.indices(self._length))]
            if isinstance(index, (list, tuple, range, np.ndarray)):
                return [self[position] for position in self._positions(index).tolist()]
            raise TypeError(f"PackedTokens is indexed by an int, a slice, or a list or 1-D array of ints (window "
                            f"positions), not by {type(index).__name__}")
        start = index * self.stride if fast else self.window_start(index)
        stop = start + self.seq_len
        starts = self._starts
        first = bisect_right(starts, start) - 1  # the non-empty document holding token `start`
        if starts[first + 1] >= stop:  # the window lies in one document
            doc_id = self._one_id.copy()
            doc_id[0] = first
            return {"input_ids": self._values[start:stop], "cu_seqlens": self._whole.copy(), "doc_ids": doc_id}
        last = bisect_right(starts, stop - 1, first + 1) - 1  # the document holding the window's last token
        if last - first < _LIST_DOCUMENTS:
            bounds = starts[first:last + 2].tolist()
            if len(set(bounds)) == len(bounds):  # no empty document: every offset inside is a boundary
                cuts = [offset - start for offset in bounds]
                cuts[0], cuts[-1] = 0, self.seq_len
                return {"input_ids": self._values[start:stop], "cu_seqlens": np.array(cuts, dtype=np.int32),
                        "doc_ids": np.arange(first, last + 1, dtype=np.int64)}
        # Many documents, or empty ones (which have no segment): NumPy.
        offsets = np.asarray(self._offsets[first:last + 2])
        ids = first + np.flatnonzero(offsets[1:] != offsets[:-1])
        cu_seqlens = np.empty(len(ids) + 1, dtype=np.int32)
        cu_seqlens[0], cu_seqlens[-1] = 0, self.seq_len
        cu_seqlens[1:-1] = offsets[ids[1:] - first] - start
        return {"input_ids": self._values[start:stop], "cu_seqlens": cu_seqlens, "doc_ids": ids}

    def __getitems__(self, indices: Sequence[int]) -> PackedBatch:
        """The windows at ``indices`` read as one batch (`get_batch`): PyTorch's DataLoader calls this for each
        batch of indices and hands the result to the ``collate_fn``. It is a sequence of the items (``batch[j]``
        equals ``self[indices[j]]``, with ``input_ids`` a row of the batch) that `collate_packed` turns into
        tensors without copying the tokens again."""
        return PackedBatch(self.get_batch(indices), self.seq_len)

    def get_batch(self, indices: Any, *, out: Optional[np.ndarray] = None, boundaries: bool = True) -> dict[str, Any]:
        """Windows ``indices`` as one batch of NumPy arrays, the boundaries of all rows found at once:

        - ``input_ids``: ``(B, seq_len)``, each window copied once from the mapping into a new array of the
          dataset's ``dtype`` (the stored dtype unless one was given), or into ``out`` (C-contiguous, writable,
          that shape, any dtype the tokens convert to safely, such as int64);
        - ``cu_seqlens``: int32, every row's boundaries shifted by ``row * seq_len``, flattened as `collate_packed`
          does (no repeated boundary between rows); ``max_seqlen``: the longest segment (int);
        - ``doc_ids``: int64, the document of each segment.

        ``boundaries=False`` gives ``input_ids`` alone (for plain causal attention across documents, Megatron's
        default), skipping the search for boundaries.
        """
        windows = self._positions(indices)
        rows, seq_len = len(windows), self.seq_len
        edges = np.empty(2 * rows, dtype=np.int64)  # each row's first token, then each row's last (for _boundaries)
        starts = np.multiply(windows, self.stride, out=edges[:rows])
        input_ids = self._copy_rows(windows, starts, out)
        if not boundaries:
            return {"input_ids": input_ids}
        if rows * seq_len > _INT32_MAX:
            raise ValueError(f"{rows} windows of {seq_len} tokens are more than int32 cu_seqlens can count")
        if not rows:
            empty = np.zeros(1, dtype=np.int32)
            return {"input_ids": input_ids, "cu_seqlens": empty, "max_seqlen": 0, "doc_ids": np.empty(0, np.int64)}
        np.add(starts, seq_len - 1, out=edges[rows:])
        cu_seqlens, max_seqlen, doc_ids = self._boundaries(edges)
        return {"input_ids": input_ids, "cu_seqlens": cu_seqlens, "max_seqlen": max_seqlen, "doc_ids": doc_ids}

    def _boundaries(self, edges: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
        """The flattened ``cu_seqlens``, ``max_seqlen`` and ``doc_ids`` of the rows whose first tokens are the first
        half of ``edges`` and whose last tokens are the second half (at least one row), in a fixed number of NumPy
        calls for the whole batch.

        The calls are most of the cost (a batch of 64 rows has ~1,300 segments), so they are the cheap forms:
        array methods and ufuncs rather than the ``np.`` functions that wrap them, ``argmax`` rather than ``max``
        (a reduction costs several times a gather of the same size)."""
        rows, seq_len = len(edges) // 2, self.seq_len
        starts = edges[:rows]
        found = self._documents(edges)  # the documents holding each row's first and last token: one search
        first = found[:rows]
        counts = found[rows:] - first
        counts += 1  # documents from the first to the last of each row, empty ones included
        row_ends = np.add.accumulate(counts)
        segments = int(row_ends[-1])
        if len(self._counting) < segments:  # (at least one segment a row: rows <= segments)
            self._counting = np.arange(2 * segments, dtype=np.int64)
            self._row_multiples = self._counting * seq_len
        row_starts = row_ends - counts  # where each row's segments start in the flattened lists
        doc_ids = (first - row_starts).repeat(counts)
        doc_ids += self._counting[:segments]  # every document touched, row after row
        row_bases = self._row_multiples[:rows]
        cuts = self._offsets[doc_ids]  # in int64 until the end (a cast on every operation costs more than one copy)
        cuts += (row_bases - starts).repeat(counts)
        cuts[row_starts] = row_bases  # each row's first segment starts at the row (mid-document or not)
        cu_seqlens = np.empty(segments + 1, dtype=np.int32)
        cu_seqlens[:-1] = cuts
        cu_seqlens[-1] = rows * seq_len
        lengths = np.subtract(cu_seqlens[1:], cu_seqlens[:-1])
        if not lengths[lengths.argmin()]:  # empty documents: a boundary repeated; the empty one has no segment
            segment = lengths != 0
            doc_ids, lengths = doc_ids[segment], lengths[segment]
            cu_seqlens = cu_seqlens[np.append(segment, True)]
        return cu_seqlens, int(lengths[lengths.argmax()]), doc_ids

    def _documents(self, positions: np.ndarray) -> np.ndarray:
        """The document holding each token position (below ``total_tokens``): ``np.searchsorted(offsets, positions,
        side="right") - 1``, a new int64 array.

        A binary search of a large offsets array waits on a cache miss at every one of its last levels, one key
        after the other. For a map of many documents the search is done in two steps instead: every step-th offset
        (at most ``_COARSE_ENTRIES`` of them, copied once per process on the first batch, small enough to stay in
        the CPU's caches) is searched first, then the remaining levels are done for all keys at once, one gather
        per level, so the misses of different keys overlap."""
        offsets = self._offsets
        if len(offsets) <= max(_ONE_STEP_ENTRIES, _COARSE_ENTRIES):
            found: np.ndarray = offsets.searchsorted(positions, "right")
            found -= 1
            return found
        if self._coarse is None:
            last = len(offsets) - 1  # offsets[last] is the total, past every position searched
            step = 2
            while len(offsets) > step * _COARSE_ENTRIES:
                step *= 2
            # Where each search starts: every step-th offset, the last ones held at last - step, so that a search
            # from any of them ends within [start, start + step) and never reads past the offsets.
            starts = np.minimum(np.arange(0, last + step, step, dtype=np.int64), last - step)
            levels, half = [], step // 2
            while half:  # offsets[half:] for each level: its gather reads offsets[low + half]
                levels.append((half, offsets[half:]))
                half //= 2
            self._coarse = (starts, np.ascontiguousarray(offsets[starts[1:]]), levels)
        starts, values, levels = self._coarse
        low: np.ndarray = starts[values.searchsorted(positions, "right")]
        for half, shifted in levels:  # one level of the search for every key at once
            np.putmask(low, shifted[low] <= positions, low + half)  # (cheaper than np.add's where=)
        return low

    def _positions(self, indices: Any) -> np.ndarray:
        """``indices`` as an int64 array of window positions (negative ones counted from the end), checked."""
        windows = np.asarray(indices)
        not_integers = windows.dtype.kind not in "iu" or windows.dtype == np.uint64
        if not_integers and (windows.size or windows.dtype.kind not in "fO"):  # [] is an empty float array
            raise TypeError(f"window indices must be integers, got an array of {windows.dtype}")
        windows = windows.astype(np.int64, copy=False).reshape(-1)
        if windows.size:
            low, high = int(windows[windows.argmin()]), int(windows[windows.argmax()])
            if high >= self._length:
                self.window_start(high)  # raises the IndexError naming it
            if low < 0:
                if low < -self._length:
                    self.window_start(low)
                windows = np.where(windows < 0, windows + self._length, windows)
        return windows

    def _copy_rows(self, windows: np.ndarray, starts: np.ndarray,
                   out: Optional[np.ndarray]) -> np.ndarray:
        """Copy the windows into the batch array (once, from the mapping)."""
        shape = (len(windows), self.seq_len)
        if out is not None:
            if out.shape != shape or not out.flags.c_contiguous or not out.flags.writeable:
                raise ValueError(f"out must be a writable C-contiguous array of shape {shape}, got shape {out.shape}")
            if not np.can_cast(self._values.dtype, out.dtype, "safe"):
                raise TypeError(f"tokens of dtype {self._values.dtype} do not convert safely to out's {out.dtype}")
        elif self.dtype == self._values.dtype:
            # One gather of rows from the 2-D view of every window over the mapping.
            gathered: np.ndarray = self._windows_view[windows]
            return gathered
        else:
            out = np.empty(shape, dtype=self.dtype)
        values, seq_len = self._values, self.seq_len
        for row, start in zip(out, starts.tolist()):
            np.copyto(row, values[start:start + seq_len])
        return out

    @staticmethod
    def collate(batch: Any) -> dict[str, Any]:
        """`collate_packed`: the batch's tensors, ``input_ids`` in the dtype the batch was read in."""
        return collate_packed(batch)

    def __getstate__(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "seq_len": self.seq_len, "stride": self.stride, "documents": self.documents,
                "total_tokens": self.total_tokens, "length": self._length, "dtype": self.dtype}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.tokens, self.seq_len, self.stride = state["tokens"], state["seq_len"], state["stride"]
        self.documents, self.total_tokens, self._length = state["documents"], state["total_tokens"], state["length"]
        self.dtype = state["dtype"]
        self._attach()
        self._templates()

    def __repr__(self) -> str:
        return (f"PackedTokens({_name(self.tokens)}, seq_len={self.seq_len}, stride={self.stride}: {self._length} "
                f"windows over {self.total_tokens} tokens in {self.documents} documents)")


class PackedBatch(Sequence[dict[str, np.ndarray]]):
    """A batch of `PackedTokens` windows read at once (what ``PackedTokens.__getitems__`` gives the DataLoader's
    ``collate_fn``): ``arrays`` holds the batch as `PackedTokens.get_batch` returns it, and the batch is also the
    sequence of its items, ``batch[j]`` equal to the dataset's item for the ``j``-th index (its ``input_ids`` a
    row of the batch), so a ``collate_fn`` written for a list of items works too. `collate_packed` makes the
    batch's tensors from ``arrays`` without copying the tokens again.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import RaggedMmap
        >>> docs = RaggedMmap.from_lists("docs", [np.arange(n, dtype=np.int32) for n in (5, 3, 9)], overwrite=True)
        >>> from mmap_ninja.adapters.torch import PackedTokens
        >>> batch = PackedTokens(docs, 6).__getitems__([1, 0])
        >>> batch.arrays["input_ids"].shape, batch.arrays["cu_seqlens"]
        ((2, 6), array([ 0,  2,  6, 11, 12], dtype=int32))
        >>> batch[1]["cu_seqlens"], batch[1]["doc_ids"]
        (array([0, 5, 6], dtype=int32), array([0, 1]))
    """

    def __init__(self, arrays: dict[str, Any], seq_len: int):
        self.arrays = arrays
        self.seq_len = seq_len
        self._row_starts: Optional[list[int]] = None

    def __len__(self) -> int:
        return len(self.arrays["input_ids"])

    @overload
    def __getitem__(self, row: int) -> dict[str, np.ndarray]: ...

    @overload
    def __getitem__(self, row: slice) -> list[dict[str, np.ndarray]]: ...

    def __getitem__(self, row: int | slice) -> dict[str, np.ndarray] | list[dict[str, np.ndarray]]:
        if isinstance(row, slice):
            return [self[j] for j in range(*row.indices(len(self)))]
        rows = len(self)
        position = _window_position(row, "row")
        if position < 0:
            position += rows
        if not 0 <= position < rows:
            raise IndexError(f"row {row} is out of range for a batch of {rows} windows")
        cu_seqlens = self.arrays["cu_seqlens"]
        if self._row_starts is None:  # where each row's boundaries start in the flattened cu_seqlens
            bases = np.arange(rows + 1, dtype=np.int64) * self.seq_len
            self._row_starts = np.searchsorted(cu_seqlens, bases).tolist()
        first, last = self._row_starts[position], self._row_starts[position + 1]
        return {"input_ids": self.arrays["input_ids"][position],
                "cu_seqlens": (cu_seqlens[first:last + 1] - position * self.seq_len).astype(np.int32),
                "doc_ids": self.arrays["doc_ids"][first:last]}

    def __repr__(self) -> str:
        return f"PackedBatch({len(self)} windows of {self.seq_len} tokens)"


def collate_packed(batch: Any, dtype: Optional[torch.dtype] = None, *, position_ids: bool = True) -> dict[str, Any]:
    """Turn a batch of `PackedTokens` windows (the `PackedBatch` a DataLoader hands over, the dict of
    `PackedTokens.get_batch`, or a list of items) into torch tensors, for variable-length attention:

    - ``input_ids``: ``(B, seq_len)``, in the dtype the batch was read in (the map's stored dtype, or the
      ``dtype=`` given to `PackedTokens`), or ``dtype`` if given (one conversion). A batch read at once is
      handed over without copying its tokens (``torch.from_numpy``); widen it where it is used
      (``batch["input_ids"].long()`` on the device) rather than before it crosses processes;
    - ``cu_seqlens``: int32, every row's boundaries shifted by the row's offset ``b * seq_len`` and joined
      without repeating the boundary between rows (FlashAttention's ``flash_attn_varlen_func`` on the batch
      flattened to ``B * seq_len`` tokens);
    - ``max_seqlen``: the longest segment, a Python int;
    - ``doc_ids``: int64, the document of each segment of ``cu_seqlens``;
    - ``position_ids`` (unless ``position_ids=False``): ``(B, seq_len)`` int64, each token's position within its
      segment (restarting at 0 at every boundary, as position ids of packed sequences do).

    The result is a `PackedTensors` (a dict): sent from a DataLoader worker to the training process it carries
    only the tokens in their dtype and the small boundary arrays, by value, with no shared-memory segment per
    tensor; the position ids (four times the bytes of uint16 tokens) are rebuilt from ``cu_seqlens`` on arrival.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import RaggedMmap
        >>> lengths = (5, 3, 9, 1, 6)
        >>> docs = RaggedMmap.from_lists("docs", [np.arange(n, dtype=np.int32) for n in lengths], overwrite=True)
        >>> from mmap_ninja.adapters.torch import PackedTokens, collate_packed
        >>> windows = PackedTokens(docs, 9, stride=8)
        >>> batch = collate_packed([windows[0], windows[1]])
        >>> batch["input_ids"].shape, batch["cu_seqlens"], batch["max_seqlen"]
        (torch.Size([2, 9]), tensor([ 0,  5,  8,  9, 18], dtype=torch.int32), 9)
    """
    if isinstance(batch, PackedBatch):
        batch = batch.arrays
    if isinstance(batch, dict):  # read at once: the tokens are already one array
        array = batch["input_ids"]
        input_ids = torch.from_numpy(array) if array.flags.writeable else torch.tensor(array)
        cu_seqlens, doc_ids = np.asarray(batch["cu_seqlens"]), np.asarray(batch["doc_ids"], dtype=np.int64)
        rows, seq_len = input_ids.shape
    else:
        if not batch:
            raise ValueError("cannot collate an empty batch")
        seq_len = len(batch[0]["input_ids"])
        if any(len(item["input_ids"]) != seq_len for item in batch):
            raise ValueError(f"the windows of a batch must have one length; got "
                             f"{[len(i['input_ids']) for i in batch]}")
        rows = len(batch)
        if rows * seq_len > _INT32_MAX:
            raise ValueError(f"{rows} windows of {seq_len} tokens are more than int32 cu_seqlens can count")
        stored = np.asarray(batch[0]["input_ids"]).dtype
        input_ids = torch.from_numpy(np.empty((rows, seq_len), stored if dtype is None else _numpy_dtype(dtype)))
        for row, item in zip(input_ids.numpy(), batch):
            np.copyto(row, item["input_ids"], casting="unsafe")
        cuts = [np.zeros(1, dtype=np.int64)]
        cuts.extend(item["cu_seqlens"][1:].astype(np.int64) + row * seq_len for row, item in enumerate(batch))
        cu_seqlens = np.concatenate(cuts)
        doc_ids = np.concatenate([np.asarray(item["doc_ids"], dtype=np.int64) for item in batch])
    if dtype is not None and input_ids.dtype != dtype:
        input_ids = input_ids.to(dtype)
    tensors = PackedTensors(input_ids=input_ids, **_boundary_tensors(rows, seq_len, cu_seqlens, doc_ids, position_ids))
    tensors.derived_positions = tensors.get("position_ids")
    return tensors


def _boundary_tensors(rows: int, seq_len: int, cu_seqlens: np.ndarray, doc_ids: np.ndarray,
                      with_positions: bool) -> dict[str, Any]:
    """``cu_seqlens``, ``max_seqlen``, ``doc_ids`` and (``with_positions``) ``position_ids``: the batch's own arrays
    (``torch.from_numpy``) and a new one for the positions."""
    cuts = cu_seqlens if cu_seqlens.dtype == np.int32 and cu_seqlens.flags.writeable else \
        cu_seqlens.astype(np.int32)
    doc_ids = doc_ids if doc_ids.flags.writeable else doc_ids.copy()
    tensors: dict[str, Any] = {"cu_seqlens": torch.from_numpy(cuts), "max_seqlen": 0,
                               "doc_ids": torch.from_numpy(doc_ids)}
    if with_positions:
        positions = np.empty((rows, seq_len), dtype=np.int64)
        lengths = _positions_into(positions.reshape(-1), cuts)
        tensors["position_ids"] = torch.from_numpy(positions)
    else:
        lengths = np.subtract(cuts[1:], cuts[:-1])
    tensors["max_seqlen"] = int(lengths.max()) if len(lengths) else 0
    return tensors


class PackedTensors(dict[str, Any]):
    """The dict of tensors `collate_packed` returns, made to cross processes cheaply: pickled (as a DataLoader
    worker sends its batches to the training process), its CPU tensors go by value as NumPy arrays through the
    worker's pipe, not as one shared-memory segment each (each costs a connection to the worker to pass its file
    descriptor), and ``position_ids``, while still the ones `collate_packed` made (``derived_positions``), are not
    sent at all but rebuilt from ``cu_seqlens`` when the batch arrives. Keys added or replaced by a ``collate_fn``
    wrapping `collate_packed` are sent as they are.

    Example:

        >>> import pickle
        >>> import numpy as np
        >>> from mmap_ninja import RaggedMmap
        >>> docs = RaggedMmap.from_lists("docs", [np.arange(n, dtype=np.uint16) for n in (5, 3, 9)], overwrite=True)
        >>> from mmap_ninja.adapters.torch import PackedTokens, collate_packed
        >>> batch = collate_packed(PackedTokens(docs, 6).__getitems__([1, 0]))
        >>> received = pickle.loads(pickle.dumps(batch))  # the position ids are rebuilt, not sent
        >>> received["position_ids"]
        tensor([[0, 1, 0, 1, 2, 3],
                [0, 1, 2, 3, 4, 0]])
    """

    derived_positions: Optional[torch.Tensor] = None

    def __reduce__(self) -> tuple[Any, ...]:
        fields: list[tuple[str, int, Any]] = []  # (key, how to rebuild it, what is sent)
        for key, value in self.items():
            if value is not None and value is self.derived_positions:
                fields.append((key, _DERIVED, None))
            elif type(value) is torch.Tensor and value.device.type == "cpu" and not value.requires_grad and \
                    value.dtype in _NUMPY_DTYPES:
                fields.append((key, _ARRAY, value.numpy()))
            else:
                fields.append((key, _AS_IS, value))
        return _rebuild_packed_tensors, (fields,)


_AS_IS, _ARRAY, _DERIVED = 0, 1, 2
_NUMPY_DTYPES = frozenset({torch.uint8, torch.int8, torch.uint16, torch.int16, torch.uint32, torch.int32, torch.uint64,
                           torch.int64, torch.float16, torch.float32, torch.float64, torch.bool})


def _rebuild_packed_tensors(fields: list[tuple[str, int, Any]]) -> PackedTensors:
    """A pickled `PackedTensors` back: the arrays as tensors, derived position ids rebuilt from ``cu_seqlens``."""
    tensors = PackedTensors()
    for key, how, value in fields:
        tensors[key] = torch.from_numpy(value) if how == _ARRAY else value
    for key, how, _ in fields:
        if how == _DERIVED:
            rows, seq_len = tensors["input_ids"].shape
            positions = np.empty((rows, seq_len), dtype=np.int64)
            _positions_into(positions.reshape(-1), tensors["cu_seqlens"].numpy())
            tensors[key] = tensors.derived_positions = torch.from_numpy(positions)
    return tensors


_COUNTING: np.ndarray = np.arange(0, dtype=np.int64)


def _positions_into(positions: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Write each token's position within its segment (``cuts`` its boundaries) into ``positions``: the token's
    index minus its segment's start. Returns the segments' lengths."""
    global _COUNTING
    if len(_COUNTING) < len(positions):  # 0, 1, 2, ... kept for the next batches
        _COUNTING = np.arange(len(positions), dtype=np.int64)
    lengths: np.ndarray = np.subtract(cuts[1:], cuts[:-1])
    np.subtract(_COUNTING[:len(positions)], np.repeat(cuts[:-1], lengths), out=positions)
    return lengths


def _check_token_kind(tokens: Any) -> None:
    """Refuse a map whose samples are not sequences of tokens (strings, images, records, fixed-shape arrays),
    naming its kind: their bytes would otherwise be read as token ids."""
    layout = getattr(tokens, "layout", None)
    kind = getattr(layout, "kind", None) if layout is not None else getattr(tokens, "kind", None)
    if isinstance(kind, str) and kind != "ragged":
        hint = " (tokenize the strings into a RaggedMmap of token ids first)" if kind == "strings" else ""
        raise TypeError(f"PackedTokens needs a ragged map (or records field) of integer token ids, but "
                        f"{_name(tokens)} is a {kind!r} map{hint}")


def _positive(name: str, value: Any) -> int:
    """``value`` of parameter ``name`` as a positive int: a TypeError for a bool or a non-integer (2.0 included,
    as ``range`` refuses it), a ValueError below 1."""
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be a positive integer (an int), got {type(value).__name__} {value!r}") from None
    if number < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return number


def _window_position(index: Any, what: str = "window") -> int:
    """``index`` as an int; a bool is refused (it is an int to Python, but a map refuses ``m[True]``)."""
    if isinstance(index, (bool, np.bool_)):
        raise TypeError(f"a {what} is indexed by an int, not by the boolean {index!r}; use a list of positions")
    try:
        return operator.index(index)
    except TypeError:
        raise TypeError(f"a {what} is indexed by an int, not by {type(index).__name__} {index!r}") from None


def _numpy_dtype(dtype: Any) -> np.dtype:
    """A NumPy dtype from a NumPy or torch one."""
    converted: np.dtype = torch.empty(0, dtype=dtype).numpy().dtype if isinstance(dtype, torch.dtype) else \
        np.dtype(dtype)
    return converted


def _name(tokens: Any) -> str:
    return str(getattr(tokens, "path", None) or getattr(tokens, "url", None) or type(tokens).__name__)
