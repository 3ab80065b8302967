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
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["PackedTokens", "collate_packed"]

# Below this many documents in one window, its boundaries are found with Python lists rather than NumPy.
_LIST_DOCUMENTS = 64


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

    def __init__(self, tokens: Any, seq_len: int, *, stride: Optional[int] = None):
        seq_len = _positive("seq_len", seq_len)
        stride = seq_len if stride is None else _positive("stride", stride)
        if seq_len > np.iinfo(np.int32).max:
            raise ValueError(f"seq_len must fit int32 cu_seqlens (at most 2**31 - 1), got {seq_len}")
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
        self._templates()

    def _templates(self) -> None:
        """The boundaries and document id of a window inside one document, copied for each such window."""
        self._whole = np.array([0, self.seq_len], dtype=np.int32)
        self._one_id = np.zeros(1, dtype=np.int64)

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
        self._values = values
        self._offsets = offsets[:self.documents + 1]
        self._starts = self._offsets.data  # Python ints on indexing, for bisect
        if int(self._offsets[-1]) > len(values):
            raise ValueError(f"{_name(self.tokens)}'s offsets point past its {len(values)} tokens")

    def __len__(self) -> int:
        return self._length

    def window_start(self, index: int) -> int:
        """The position in the concatenation of the first token of window ``index`` (negative counts from the end)."""
        position = operator.index(index)
        if position < 0:
            position += self._length
        if not 0 <= position < self._length:
            raise IndexError(f"window {index} is out of range: {self._length} windows of {self.seq_len} tokens "
                             f"(stride {self.stride}) fit in {self.total_tokens} tokens")
        return position * self.stride

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        fast = type(index) is int and 0 <= index < self._length  # a plain position: no checks to make
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

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
        """The windows at ``indices`` as a list of items (PyTorch's batched fetch; see also `get_batch`)."""
        return [self[i] for i in indices]

    def get_batch(self, indices: Any, *, out: Optional[np.ndarray] = None, boundaries: bool = True) -> dict[str, Any]:
        """Windows ``indices`` as one batch of NumPy arrays, the boundaries found for all rows at once:

        ``input_ids`` ``(B, seq_len)`` (a new array of the map's dtype, or ``out``: C-contiguous, writable, that
        shape, any dtype the tokens convert to safely, such as int64), ``cu_seqlens`` (int32, flattened as
        `collate_packed` does), ``max_seqlen`` (int) and ``doc_ids`` (int64, one per segment). `collate_packed`
        turns this dict into tensors too. ``boundaries=False`` gives ``input_ids`` alone (for plain causal attention
        across documents, Megatron's default), skipping the search for boundaries.
        """
        windows = np.asarray(indices)
        if windows.dtype == np.bool_ or (windows.size and windows.dtype.kind not in "iu"):
            raise TypeError(f"window indices must be integers, got an array of {windows.dtype}")
        windows = windows.astype(np.int64, copy=False).reshape(-1)
        bad = (windows < -self._length) | (windows >= self._length)
        if bad.any():
            self.window_start(int(windows[bad][0]))  # raises the IndexError naming it
        windows = np.where(windows < 0, windows + self._length, windows)
        rows, seq_len, values, offsets = len(windows), self.seq_len, self._values, self._offsets
        shape = (rows, seq_len)
        if out is None:
            out = np.empty(shape, dtype=values.dtype)
        elif out.shape != shape or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError(f"out must be a writable C-contiguous array of shape {shape}, got shape {out.shape}")
        elif not np.can_cast(values.dtype, out.dtype, "safe"):
            raise TypeError(f"tokens of dtype {values.dtype} do not convert safely to out's {out.dtype}")
        starts = windows * self.stride
        for row, start in zip(out, starts.tolist()):
            np.copyto(row, values[start:start + seq_len])
        if not boundaries:
            return {"input_ids": out}
        # Every document each row touches, then those that are not empty.
        first = np.searchsorted(offsets, starts, side="right") - 1
        last = np.searchsorted(offsets, starts + (seq_len - 1), side="right") - 1
        counts = last - first + 1
        row_of = np.repeat(np.arange(rows, dtype=np.int64), counts)
        row_firsts = np.cumsum(counts) - counts
        docs = first[row_of] + (np.arange(len(row_of), dtype=np.int64) - row_firsts[row_of])
        keep = offsets[docs + 1] != offsets[docs]
        keep[row_firsts] = True  # a row's first document holds its first token
        docs, row_of = docs[keep], row_of[keep]
        cuts = np.empty(len(docs) + 1, dtype=np.int64)
        cuts[:-1] = np.maximum(offsets[docs] - starts[row_of], 0) + row_of * seq_len
        cuts[-1] = rows * seq_len
        if cuts[-1] > np.iinfo(np.int32).max:
            raise ValueError(f"{rows} windows of {seq_len} tokens are more than int32 cu_seqlens can count")
        return {"input_ids": out, "cu_seqlens": cuts.astype(np.int32), "max_seqlen": int(np.diff(cuts).max()),
                "doc_ids": docs}

    @staticmethod
    def collate(batch: Any) -> dict[str, Any]:
        """`collate_packed` with int64 ``input_ids``."""
        return collate_packed(batch)

    def __getstate__(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "seq_len": self.seq_len, "stride": self.stride, "documents": self.documents,
                "total_tokens": self.total_tokens, "length": self._length}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.tokens, self.seq_len, self.stride = state["tokens"], state["seq_len"], state["stride"]
        self.documents, self.total_tokens, self._length = state["documents"], state["total_tokens"], state["length"]
        self._attach()
        self._templates()

    def __repr__(self) -> str:
        return (f"PackedTokens({_name(self.tokens)}, seq_len={self.seq_len}, stride={self.stride}: {self._length} "
                f"windows over {self.total_tokens} tokens in {self.documents} documents)")


def collate_packed(batch: Any, dtype: torch.dtype = torch.int64) -> dict[str, Any]:
    """Turn a list of `PackedTokens` items (or the dict of `PackedTokens.get_batch`) into one batch of torch
    tensors, for variable-length attention:

    - ``input_ids``: ``(B, seq_len)`` of ``dtype`` (int64 by default, what ``nn.Embedding`` takes), one copy;
    - ``cu_seqlens``: int32, every row's boundaries shifted by the row's offset ``b * seq_len`` and joined
      without repeating the boundary between rows (FlashAttention's ``flash_attn_varlen_func`` on the batch
      flattened to ``B * seq_len`` tokens);
    - ``max_seqlen``: the longest segment, a Python int;
    - ``doc_ids``: int64, the document of each segment of ``cu_seqlens``;
    - ``position_ids``: ``(B, seq_len)`` int64, each token's position within its segment (restarting at 0 at
      every boundary, as position ids of packed sequences do).

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
    if isinstance(batch, dict):  # a batch from PackedTokens.get_batch
        return _batch_tensors(batch, dtype)
    if not batch:
        raise ValueError("cannot collate an empty batch")
    seq_len = len(batch[0]["input_ids"])
    if any(len(item["input_ids"]) != seq_len for item in batch):
        raise ValueError(f"the windows of a batch must have one length; got {[len(i['input_ids']) for i in batch]}")
    rows = len(batch)
    if rows * seq_len > np.iinfo(np.int32).max:
        raise ValueError(f"{rows} windows of {seq_len} tokens are more than int32 cu_seqlens can count")
    cuts = [np.zeros(1, dtype=np.int64)]
    cuts.extend(item["cu_seqlens"][1:].astype(np.int64) + row * seq_len for row, item in enumerate(batch))
    doc_ids = np.concatenate([np.asarray(item["doc_ids"], dtype=np.int64) for item in batch])
    return _tensors([item["input_ids"] for item in batch], (rows, seq_len), np.concatenate(cuts), doc_ids, dtype)


def _batch_tensors(batch: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    input_ids = np.asarray(batch["input_ids"])
    return _tensors(input_ids, input_ids.shape, np.asarray(batch["cu_seqlens"]).astype(np.int64),
                    np.asarray(batch["doc_ids"], dtype=np.int64), dtype)


def _tensors(rows: Any, shape: tuple[int, int], cu_seqlens: np.ndarray, doc_ids: np.ndarray,
             dtype: torch.dtype) -> dict[str, Any]:
    """The batch's tensors, as views of one new buffer (with int64 ``input_ids``; otherwise those have their own):
    inside a DataLoader worker the buffer is made in shared memory, as ``default_collate`` makes its batches, and
    one buffer is one shared segment to send to the training process instead of one per tensor."""
    from mmap_ninja.adapters.torch import _new_batch_tensor  # imported here: torch.py imports this module

    tokens = shape[0] * shape[1]
    own_ids = dtype != torch.int64
    segments, cuts_words = len(doc_ids), (len(cu_seqlens) + 1) // 2  # int32 boundaries, two per int64 word
    buffer = _new_batch_tensor(((1 if own_ids else 2) * tokens + segments + cuts_words,), np.dtype(np.int64))
    if own_ids:
        input_ids = _new_batch_tensor(shape, torch.empty(0, dtype=dtype).numpy().dtype)
        position_ids, rest = buffer[:tokens].view(shape), buffer[tokens:]
    else:
        input_ids, position_ids, rest = buffer[:tokens].view(shape), buffer[tokens:2 * tokens].view(shape), \
            buffer[2 * tokens:]
    for row, window in zip(input_ids.numpy(), rows):
        np.copyto(row, window, casting="unsafe")
    lengths = np.diff(cu_seqlens)
    np.subtract(np.arange(tokens, dtype=np.int64), np.repeat(cu_seqlens[:-1], lengths),
                out=position_ids.numpy().reshape(-1))
    doc_tensor = rest[:segments]
    doc_tensor.numpy()[:] = doc_ids
    cu_tensor = rest[segments:].view(torch.int32)[:len(cu_seqlens)]
    cu_tensor.numpy()[:] = cu_seqlens
    return {"input_ids": input_ids, "cu_seqlens": cu_tensor, "max_seqlen": int(lengths.max()), "doc_ids": doc_tensor,
            "position_ids": position_ids}


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    number = operator.index(value)
    if number < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return number


def _name(tokens: Any) -> str:
    return str(getattr(tokens, "path", None) or getattr(tokens, "url", None) or type(tokens).__name__)
