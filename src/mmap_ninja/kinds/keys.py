"""The key index of a records map: ``rec.index_of(key)`` finds a row by its key without reading the keys into RAM.

One field of a records map may be its *key* (strings, or a scalar field of an integer dtype); no two rows have the
same key. The index is an open-addressing hash table with linear probing, kept in the derived column
``derived-key.slots`` (FORMAT.md, "Keys"): slot ``s`` is two int64 items, ``(hash, row)``, with ``row = -1`` for an
empty slot. ``attrs["key"]["table"] = [start, capacity]`` says which slots of the column are the current table (a power
of two of them); tables replaced by a bigger one stay in the column, unused.

Crash safety does not need the slots to be committed: **a slot whose row is not below the map's committed number
of rows is empty** to every reader and writer. A writer fills only slots that are empty in that sense, with rows
it is about to commit, in place, before it publishes them; until that commit nobody sees these slots, and after a
crash they are empty again, as their rows do not exist (an undone transaction also puts their old bytes back). A
lookup compares the key stored in the row it finds, so even a slot left by a crashed write whose row number was
later reused can only ever name the row holding the key. When the table would become more than 70% full, the
writer appends a new one (twice as many slots as needed) through the ordinary append-and-publish path, so the
index grows in amortized O(batch).

Keys compare exactly: strings by their code points (no Unicode normalization, no case folding), integers by value
(``index_of(np.int64(3))`` finds the key 3 of an int32 field; bools, floats and bytes are refused).

Hashes: a string's is the first 8 bytes of BLAKE2b (``digest_size=8``) of its UTF-8 bytes, little-endian; an
integer's is SplitMix64's finalizer of its value modulo 2**64. Both are stored as int64.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from hashlib import blake2b
from typing import Any, Optional

import numpy as np

from mmap_ninja.errors import CorruptMapError

__all__ = ["FEATURE", "SLOTS", "KeyIndex", "check_unique", "hash_keys", "hash_one", "insert_keys", "key_attrs",
           "key_field", "key_mismatch"]

FEATURE = "records.keys"
"""The name a records map with a key lists in its header's ``requires`` (see FORMAT.md, "Keys")."""

SLOTS = "derived-key.slots"  # the derived column holding the tables
MAX_LOAD = 0.7  # a table is replaced when it would be fuller than this
_M64 = (1 << 64) - 1
_EMPTY = -1


def key_attrs(field: str) -> dict[str, Any]:
    """The ``attrs["key"]`` of a new map keyed by ``field`` (no table yet)."""
    return {"field": field, "hash": "blake2b-64/splitmix64", "table": [0, 0]}


def key_field(attrs: dict[str, Any]) -> Optional[str]:
    """The field a records map with these attributes is keyed by (``key=``), or None."""
    spec = attrs.get("key")
    return spec.get("field") if isinstance(spec, dict) and isinstance(spec.get("field"), str) else None


def key_mismatch(path: Any, key: Optional[str], other_path: Any, other_key: Optional[str]) -> Optional[str]:
    """Why the maps at ``path`` and ``other_path``, keyed by ``key`` and ``other_key`` (None: no key), cannot be
    shards of one sharded map (whose `index_of` asks every shard for one field), or None if they can."""
    if key == other_key:
        return None
    if key is None or other_key is None:
        keyed, keyed_by, unkeyed = (path, key, other_path) if key is not None else (other_path, other_key, path)
        return (f"{keyed} is keyed by the field {keyed_by!r} and {unkeyed} has no key; the shards of a sharded map "
                f"are all keyed by one field, or none is")
    return (f"it is keyed by the field {key!r}, the other by {other_key!r}; the shards of a sharded map are all "
            f"keyed by one field (index_of would look up different fields)")


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def hash_one(key: Any, strings: bool) -> int:
    """The (signed) 64-bit hash of one key."""
    if strings:
        return _signed(int.from_bytes(blake2b(key.encode("utf-8"), digest_size=8).digest(), "little"))
    z = (key + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return _signed(z ^ (z >> 31))


def hash_keys(keys: Any, strings: bool) -> np.ndarray[Any, Any]:
    """The hashes of a batch of keys (a list of str, or an integer array) as an int64 array."""
    if strings:
        return np.array([hash_one(k, True) for k in keys], dtype=np.int64)
    array = keys if isinstance(keys, np.ndarray) else np.asarray(keys)
    if array.dtype.kind not in "iu":  # Python ints beyond int64
        array = np.array([int(k) & _M64 for k in keys], dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = array.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z.view(np.int64)


def _home(hashes: np.ndarray[Any, Any], capacity: int) -> np.ndarray[Any, Any]:
    return (hashes.view(np.uint64) & np.uint64(capacity - 1)).astype(np.int64)


class KeyIndex:
    """The key index of one snapshot of a records map: ``find(key)`` is its row (or None)."""

    __slots__ = ("_get", "_mask", "_slots", "_strings", "field", "length")

    def __init__(self, field: str, strings: bool, table: Sequence[int], slots: np.ndarray[Any, Any],
                 get: Callable[[int], Any], length: int):
        self.field = field
        self._strings = strings
        start, capacity = int(table[0]), int(table[1])
        region = slots[2 * start:2 * (start + capacity)]
        self._slots: Optional[memoryview] = np.ascontiguousarray(region).data.cast("B").cast("q") \
            if capacity else None
        self._mask = capacity - 1
        self._get = get
        self.length = length

    def check(self, key: Any) -> Any:
        """``key`` as the key field holds it (a str, or a Python int); TypeError for another type."""
        if self._strings:
            if not isinstance(key, str):
                raise TypeError(f"the key field {self.field!r} holds str keys, got {type(key).__name__}")
            return key
        if isinstance(key, (bool, np.bool_, str, bytes)):
            raise TypeError(f"the key field {self.field!r} holds integer keys, got {type(key).__name__}")
        try:
            return operator.index(key)
        except TypeError:
            raise TypeError(f"the key field {self.field!r} holds integer keys, got {type(key).__name__}") from None

    def find(self, key: Any) -> Optional[int]:
        slots = self._slots
        if slots is None:
            return None
        wanted = hash_one(key, self._strings)
        mask, length, get = self._mask, self.length, self._get
        slot = (wanted & _M64) & mask
        for _ in range(mask + 1):  # a table is never full: only a damaged one would be probed through
            row = slots[2 * slot + 1]
            if row < 0 or row >= length:
                return None
            if slots[2 * slot] == wanted and get(row) == key:
                return int(row)
            slot = (slot + 1) & mask
        return None


def _probe_existing(table: np.ndarray[Any, Any], capacity: int, hashes: np.ndarray[Any, Any], visible: int,
                    same_key: Callable[[int, int], bool]) -> Optional[tuple[int, int]]:
    """The first (batch position, row) whose key is already a visible row's key, else None. ``table`` is the
    current table as (capacity, 2) int64; ``same_key(k, row)`` compares batch key k with row's key."""
    if not capacity or not len(hashes):
        return None
    positions = _home(hashes, capacity)
    pending = np.arange(len(hashes))
    found: list[tuple[int, int]] = []
    for _ in range(capacity + 1):  # every probe ends at an empty slot: a table is never full
        if not len(pending):
            break
        entries = table[positions[pending]]
        rows = entries[:, 1]
        occupied = (rows >= 0) & (rows < visible)
        candidates = np.flatnonzero(occupied & (entries[:, 0] == hashes[pending]))
        for c in candidates.tolist():
            k, row = int(pending[c]), int(rows[c])
            if same_key(k, row):
                found.append((k, row))
        pending = pending[occupied]
        positions[pending] = (positions[pending] + 1) & (capacity - 1)
    return min(found) if found else None


def _place(rows_at: Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]], capacity: int,
           hashes: np.ndarray[Any, Any], visible: int) -> np.ndarray[Any, Any]:
    """The slot each new entry takes: linear probing from its hash, over the slots ``rows_at`` shows (a slot is
    free if its row is not in ``[0, visible)`` and no earlier new entry took it)."""
    mask = capacity - 1
    positions = _home(hashes, capacity)
    placed = np.full(len(hashes), -1, dtype=np.int64)
    if len(hashes) * 64 < capacity:  # a few keys in a big table: probe one by one
        taken: set[int] = set()
        for k, slot in enumerate(positions.tolist()):
            for _ in range(capacity + 1):
                row = int(rows_at(np.array([slot]))[0])
                if slot not in taken and (row < 0 or row >= visible):
                    taken.add(slot)
                    placed[k] = slot
                    break
                slot = (slot + 1) & mask
            else:
                raise CorruptMapError(f"the key index ({SLOTS}) has no free slot left: it is damaged")
        return placed
    claimed = np.zeros(capacity, dtype=bool)
    bidder = np.empty(capacity, dtype=np.int64)  # which entry bids for a slot in this round
    pending = np.arange(len(hashes))
    for _ in range(capacity + 1):
        if not len(pending):
            break
        at = positions[pending]
        rows = rows_at(at)
        free = np.flatnonzero(((rows < 0) | (rows >= visible)) & ~claimed[at])
        wanted = at[free]
        bidder[wanted] = free  # several bids for one slot: exactly one of them is stored, and wins
        won = free[bidder[wanted] == free]
        slots = at[won]
        placed[pending[won]] = slots
        claimed[slots] = True
        keep = np.ones(len(pending), dtype=bool)
        keep[won] = False
        lost = np.ones(len(pending), dtype=bool)
        lost[free] = False  # an occupied slot: probe the next one (a lost bid retries the same, now taken)
        advance = pending[lost]
        positions[advance] = (positions[advance] + 1) & mask
        pending = pending[keep]
    if len(pending):
        raise CorruptMapError(f"the key index ({SLOTS}) has no free slot left: it is damaged")
    return placed


def _write_slots(store: Any, table: np.ndarray[Any, Any], start: int, slots: np.ndarray[Any, Any],
                 entries: np.ndarray[Any, Any]) -> None:
    """Write ``entries`` into ``slots`` of the table in place, as few writes of nearby slots as it takes (the
    slots between them rewritten with what they hold)."""
    order = np.argsort(slots)
    slots, entries = slots[order], entries[order]
    breaks = np.flatnonzero(np.diff(slots) > 32) + 1
    writes = []
    for group in np.split(np.arange(len(slots)), breaks):
        first, last = int(slots[group[0]]), int(slots[group[-1]])
        span = np.array(table[first:last + 1])
        span[slots[group] - first] = entries[group]
        writes.append((2 * (start + first), span.reshape(-1)))
    store.write_items(SLOTS, writes)


def check_unique(keys: Any, first: int, field: str, strings: bool) -> Any:
    """The batch's keys as a list of str or an integer array; a ValueError naming the row and the key if one
    repeats."""
    if not strings:
        array = np.asarray(keys)
        if array.dtype.kind in "iu":
            order = np.argsort(array, kind="stable")
            ordered = array[order]
            repeats = np.flatnonzero(ordered[1:] == ordered[:-1]) + 1
            if len(repeats):
                k = int(order[repeats].min())  # the first row that repeats a key, then its first holder
                earlier = int(np.flatnonzero(array == array[k])[0])
                raise ValueError(f"row {first + k}: key {int(array[k])!r} (field {field!r}) repeats the key of row "
                                 f"{first + earlier}; keys are unique")
            return array
    values = list(keys) if strings else np.asarray(keys).tolist()
    seen: dict[Any, int] = {}
    for k, value in enumerate(values):
        earlier = seen.setdefault(value, k)
        if earlier != k:
            raise ValueError(f"row {first + k}: key {value!r} (field {field!r}) repeats the key of row "
                             f"{first + earlier}; keys are unique")
    return values


def _shown(key: Any) -> Any:
    return key.item() if isinstance(key, np.generic) else key


def insert_keys(store: Any, attrs: dict[str, Any], keys: Any, first: int, get: Callable[[int], Any],
                strings: bool) -> dict[str, Any]:
    """Index the keys of rows ``first``, ``first + 1``, ... (inside the store's transaction, before it publishes);
    returns the map's attributes with the index's (the table may have been replaced by a bigger one). A key
    repeated in the batch or equal to an existing row's is refused with a ValueError naming the row and the key,
    before anything is written. ``get(row)`` reads an existing row's key."""
    key = dict(attrs["key"])
    field = key["field"]
    count = len(keys)
    if not count:
        return attrs
    values = check_unique(keys, first, field, strings)
    hashes = hash_keys(values, strings)
    start, capacity = int(key["table"][0]), int(key["table"][1])
    column = store.column(SLOTS)
    table = column[2 * start:2 * (start + capacity)].reshape(-1, 2)
    clash = _probe_existing(table, capacity, hashes, first, lambda k, row: bool(get(row) == values[k]))
    if clash is not None:
        k, row = clash
        raise ValueError(f"row {first + k}: key {_shown(values[k])!r} (field {field!r}) is already the key of "
                         f"row {row}; keys are unique")
    rows = np.arange(first, first + count, dtype=np.int64)
    if (first + count) > MAX_LOAD * capacity:
        # A new table: every visible entry of the old one and the batch's, in twice as many slots as needed.
        old = table[(table[:, 1] >= 0) & (table[:, 1] < first)] if capacity else np.zeros((0, 2), np.int64)
        old = _drop_stale(old, get, strings)
        new_capacity = 16
        while new_capacity < 2 * (first + count):
            new_capacity *= 2
        fresh = np.full((new_capacity, 2), 0, dtype=np.int64)
        fresh[:, 1] = _EMPTY
        all_hashes = np.concatenate([old[:, 0], hashes])
        all_rows = np.concatenate([old[:, 1], rows])
        slots = _place(lambda at: fresh[at, 1], new_capacity, all_hashes, 0)
        fresh[slots, 0] = all_hashes
        fresh[slots, 1] = all_rows
        key["table"] = [len(column) // 2, new_capacity]
        new_attrs = {**attrs, "key": key}
        store.append({SLOTS: [fresh]}, new_attrs)
        return new_attrs
    slots = _place(lambda at: table[at, 1], capacity, hashes, first)
    _write_slots(store, table, start, slots, np.stack([hashes, rows], axis=1))
    return attrs


def _drop_stale(entries: np.ndarray[Any, Any], get: Callable[[int], Any], strings: bool) -> np.ndarray[Any, Any]:
    """``entries`` without the ones an undone write left for a row number that now holds another key (only rows
    that appear twice can have one)."""
    rows = entries[:, 1]
    unique, counts = np.unique(rows, return_counts=True)
    if (counts == 1).all():
        return entries
    keep = np.ones(len(entries), dtype=bool)
    for row in unique[counts > 1].tolist():
        actual = hash_one(get(row) if strings else int(get(row)), strings)
        keep[(rows == row) & (entries[:, 0] != actual)] = False
    return entries[keep]
