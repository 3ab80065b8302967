"""A shuffled order of ``range(n)`` computed per position, in O(1) time and memory.

`Order(n, seed=..., epoch=...)` is a keyed bijection of ``range(n)``: ``order[k]`` is the index at position
``k`` of the epoch's order, computed on its own, so nothing of size ``n`` is ever built (a permutation of 10⁹
indices would take 8 GB and minutes; an `Order` of any size takes a few hundred bytes and opens at once).
``order.take(positions)`` computes many positions at once with NumPy.

How (order version 3), in two ranges of ``n``:

- *Small orders* (``n <= SMALL_ORDER_MAX``, 1,024): the permutation that sorts ``n`` keyed hashes, one per index
  (the splitmix64 stream started at the order's first key: index ``i`` gets the top 54 bits of ``mix64(key + (i +
  1) * golden)``, with ``i`` in the 10 bits below, so that the keys are distinct and any sort orders them alike;
  a tie of the 54 bits, about one order of 1,024 indices in 10¹⁰, keeps index order). I.i.d. keys give each of
  the ``n!`` permutations the same chance, so these orders are uniform over permutations as far as the hash is
  random (as ``torch.randperm`` / ``np.random.permutation`` are), which the network below is not on small grids.
  An `Order` sorts its ``n`` keys once, on its first read, and keeps the permutation (2 bytes an index, at most
  2 KiB: constant memory); many orders at once (`OrderFamily`, `Order.take_in_epochs`) sort one row of keys per
  distinct ``(order, epoch)`` of the batch, rows sorted together in NumPy calls, and a family keeps the tables of
  its last batches (4 MiB at most) when a batch touches few of them, as consecutive batches of a blend do. A sort
  rather than a keyed Fisher-Yates: the same uniformity, and a sort is one vectorized call over many rows where
  Fisher-Yates takes ``n`` dependent steps. The cost is O(n) per distinct order read, not per position: at most
  1,024 keys (about 20 ns each), paid once per `Order`, or per ``(order, epoch)`` new to a family's batch (so a
  batch whose positions fall in many epochs of small orders, as random reads of a blend that cycles small
  sources, costs up to about 20 µs a position of those sources, against 0.3 µs for version 2's network).
- *Larger orders*: a Feistel network over a grid of ``rows x columns`` cells (``rows = ceil(sqrt(n))``, ``columns
  = ceil(n / rows)``, so the grid holds fewer than ``rows`` cells past ``n``): position ``p`` is the cell
  ``divmod(p, columns)``, and each of six rounds adds a keyed hash of one coordinate to the other, modulo its side.
  The round keys come from ``(seed, epoch)`` through a 64-bit mixing function. A value that falls outside
  ``range(n)`` is sent through the network again ("cycle walking") until it lands inside, which keeps the map a
  bijection of ``range(n)``; as the grid is at most ``1 / columns`` (about ``1 / sqrt(n)``) larger than ``n``,
  nearly every value lands at the first pass, so a batch needs one vectorized pass.

Versions. Version 1 ran the network over the smallest power of two ``>= n`` (up to twice as many passes per value,
several per batch). Version 2 ran the grid network above for every ``n``; on small grids six rounds leave the order
far from uniform over permutations (over 3,000 seeds, the 120 orders of 5 indices came 1 to 67 times each instead
of 25; 583 of the 720 orders of 6 indices were reached), and positions sharing a grid column kept their relative
order too often (measured up to sides of about 16: ``n`` near 300). Version 3 sorts keys for ``n <= 1,024`` and
keeps version 2's network, unchanged, above: over 10⁶ seeds, the relative order of four positions of one grid
square of ``n = 1,025`` (sides 33 x 32) showed no deviation from uniform (chi-square 21 for 23 degrees of
freedom). So an order of version 2 equals version 3's when ``n > 1,024``, ``n <= 1`` or ``shuffle=False``: states
and pickles of version 2 whose orders are all of those load (`order_version_unchanged`); others are refused,
saying why, as those of version 1 are.

The order depends only on ``(n, seed, epoch, shuffle)``, never on the platform or NumPy's random generators
(integer arithmetic modulo 2**64 and sorts of distinct keys), so it is the same on every rank, worker and machine
and can be recomputed after a restart. ``shuffle=False`` gives the identity order ``range(n)``. This module needs
only NumPy (no torch): JAX and grain users can use it too.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Optional

import numpy as np

__all__ = ["ORDER_VERSION", "SMALL_ORDER_MAX", "Order", "OrderFamily", "older_order_message",
           "older_order_pickle_message", "order_version_unchanged", "refuse_older_order_state"]

ORDER_VERSION = 3  # which algorithm computes the orders: states saved with another one cannot be resumed exactly
SMALL_ORDER_MAX = 1 << 10
"""Orders of at most this many indices sort keyed hashes (uniform over permutations); larger ones run the network."""

_MASK64 = (1 << 64) - 1
_ROUNDS = 6
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB
_GOLDEN = 0x9E3779B97F4A7C15
# The network's multipliers and shifts as 0-d uint64 arrays: a ufunc takes a 0-d array operand faster than a NumPy
# scalar (about 0.3 µs less a call, 24 calls a pass), with the same result.
_NETWORK_CONSTANTS = tuple(np.array(value, dtype=np.uint64) for value in (_MUL1, _MUL2, 32, 1))
# Values still cycle-walking below which a vectorized walk finishes them one by one in Python.
_STRAGGLERS = 16
# How many positions `__iter__` computes at once.
_ITER_CHUNK = 4096
# Keys sorted at once by `_small_take` (rows of one small order each): 256 KiB of keys.
_SMALL_CHUNK = 1 << 15
# A family's batch touching at most this many (member, epoch) of small members reads their tables from its cache
# (consecutive batches mostly share them); one touching more sorts them all at once, vectorized, uncached.
_CACHED_ROWS = 256
# A small order's sort keys: a hash's top 54 bits above the index's 10 (SMALL_ORDER_MAX - 1 = 0x3FF).
_INDEX_BITS = np.uint64(SMALL_ORDER_MAX - 1)
_HASH_BITS = np.uint64(_MASK64 ^ (SMALL_ORDER_MAX - 1))


def order_version_unchanged(version: Any, lengths: Iterable[int], shuffle: bool = True) -> bool:
    """Whether orders of ``lengths`` indices computed by order ``version`` are this version's: always for this
    version; for version 2, when they are not shuffled or every length is above `SMALL_ORDER_MAX` or below 2
    (version 3 kept version 2's network there); never for version 1."""
    if version == ORDER_VERSION:
        return True
    return version == 2 and (not shuffle or all(n > SMALL_ORDER_MAX or n <= 1 for n in lengths))


_KEPT = (f"(orders of more than {SMALL_ORDER_MAX} indices did not change since order version 2: its states and "
         f"pickles of those still load)")


def older_order_message(what: str, version: Any) -> str:
    """The error of a sampler asked to load a state saved with an older order algorithm (``version``)."""
    return (f"{what} state version {version!r} was saved by an older mmap_ninja whose shuffled order "
            f"(mmap_ninja.Order) differs from this one's (order version {ORDER_VERSION}) for this state's dataset: "
            f"resuming it would silently read other samples, so it is refused; start the epoch again, or resume with "
            f"the mmap_ninja that saved it {_KEPT}")


def older_order_pickle_message(what: str, version: Any) -> str:
    """The error of unpickling ``what`` (an `Order`, or an object whose order comes from one) pickled by an
    mmap_ninja whose order algorithm was ``version``."""
    return (f"this {what} was pickled by an older mmap_ninja (order version {version!r}) whose shuffled order "
            f"(mmap_ninja.Order) differs from this one's (order version {ORDER_VERSION}) for its orders: loading it "
            f"would silently give another order of the samples, so it is refused; build it again (and start the "
            f"epoch again), or load it with the mmap_ninja that pickled it {_KEPT}")


def refuse_older_order_state(what: str, state: dict[str, Any], lengths: Optional[Iterable[int]] = None,
                             shuffle: bool = True) -> None:
    """Raise `ValueError` if a pickled ``state`` (an object's ``__dict__``) was saved by another order version
    (``state["_order_version"]``; pickles of version 1 have no such key) whose orders differ from this one's.
    ``lengths`` are the lengths of every order the object computes (None: not known, so only this version loads);
    a state of an older version whose orders did not change (`order_version_unchanged`) is marked as this one's."""
    version = state.get("_order_version", 1)
    if version == ORDER_VERSION:
        return
    if lengths is None or not order_version_unchanged(version, lengths, shuffle):
        raise ValueError(older_order_pickle_message(what, version))
    state["_order_version"] = ORDER_VERSION


def _mix64(value: int) -> int:
    """A 64-bit mixing function (the splitmix64 finalizer) on a Python int in ``range(2**64)``."""
    value = (value ^ (value >> 30)) * _MUL1 & _MASK64
    value = (value ^ (value >> 27)) * _MUL2 & _MASK64
    return value ^ (value >> 31)


def _round_keys(seed: int, epoch: int) -> tuple[int, ...]:
    """The Feistel round keys of ``(seed, epoch)``: each round's key depends on both through the mixing function."""
    state = _mix64((seed & _MASK64) ^ _GOLDEN)
    state = _mix64((state + (epoch & _MASK64) * _GOLDEN) & _MASK64)
    keys = []
    for round_number in range(_ROUNDS):
        state = _mix64((state + _GOLDEN + round_number) & _MASK64)
        keys.append(state)
    return tuple(keys)


def _mix64_array(values: np.ndarray) -> np.ndarray:
    """`_mix64` on a uint64 array."""
    values = (values ^ (values >> np.uint64(30))) * np.uint64(_MUL1)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(_MUL2)
    result: np.ndarray = values ^ (values >> np.uint64(31))
    return result


def _round_keys_array(seed: int, epochs: np.ndarray) -> list[np.ndarray]:
    """`_round_keys` for a uint64 array of epochs: one array of keys per round."""
    golden = np.uint64(_GOLDEN)
    with np.errstate(over="ignore"):
        state = _mix64_array(np.uint64(_mix64((seed & _MASK64) ^ _GOLDEN)) + epochs * golden)
        keys = []
        for round_number in range(_ROUNDS):
            state = _mix64_array(state + golden + np.uint64(round_number))
            keys.append(state)
    return keys


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"Order: {name} must be an int, got {value!r} ({type(value).__name__})")
    return int(value)


def _grid(n: int) -> tuple[int, int]:
    """``(rows, columns)`` of the grid the network permutes: ``rows = ceil(sqrt(n))``, ``columns = ceil(n / rows)``
    (both below 2**32 for ``n < 2**63``; ``(1, 1)`` for ``n <= 1``)."""
    if n <= 1:
        return 1, 1
    rows = math.isqrt(n - 1) + 1
    return rows, -(-n // rows)


def _network(values: np.ndarray, keys: Sequence[Any], rows: Any, columns: Any) -> np.ndarray:
    """One pass of the Feistel network (as `Order._index`) on a uint64 array of values below ``rows * columns``,
    as a new array. ``keys`` holds each round's key, ``rows`` and ``columns`` the grid's sides: uint64 scalars, or
    arrays of one per value. Even rounds add the hash of the column to the row (modulo ``rows``), odd rounds the
    hash of the row to the column (modulo ``columns``); the hash is a multiply-xorshift-multiply of (coordinate
    xor key), its top 63 bits (a sum below 2**64: the coordinates are below 2**32)."""
    high, low = np.divmod(values, columns)
    mixed = np.empty(high.shape, dtype=high.dtype)
    spread = np.empty(high.shape, dtype=high.dtype)
    mul1, mul2, shift32, one = _NETWORK_CONSTANTS
    with np.errstate(over="ignore"):
        for round_number, key in enumerate(keys):
            source, target, side = (low, high, rows) if round_number % 2 == 0 else (high, low, columns)
            np.bitwise_xor(source, key, out=mixed)
            np.multiply(mixed, mul1, out=mixed)
            np.right_shift(mixed, shift32, out=spread)
            np.bitwise_xor(mixed, spread, out=mixed)
            np.multiply(mixed, mul2, out=mixed)
            np.right_shift(mixed, one, out=mixed)
            np.add(target, mixed, out=target)
            np.remainder(target, side, out=target)
    np.multiply(high, columns, out=high)
    result: np.ndarray = np.add(high, low, out=high)
    return result


def _walk_one(value: int, keys: Sequence[int], n: int, rows: int, columns: int, mul1: int = _MUL1,
              mul2: int = _MUL2, mask: int = _MASK64) -> int:
    """The network on ``value`` (Python ints, its six rounds unrolled) until it lands in ``range(n)``: the cell
    ``(row, column) = divmod(value, columns)`` of the grid; even rounds add a hash of the column to the row modulo
    ``rows``, odd rounds a hash of the row to the column modulo ``columns`` (the hash: the top 63 bits of a
    multiply-xorshift-multiply of coordinate xor round key). Cycle walking keeps it a bijection of ``range(n)``."""
    k0, k1, k2, k3, k4, k5 = keys
    while True:
        row, column = divmod(value, columns)
        mixed = (column ^ k0) * mul1 & mask
        row = (row + (((mixed ^ (mixed >> 32)) * mul2 & mask) >> 1)) % rows
        mixed = (row ^ k1) * mul1 & mask
        column = (column + (((mixed ^ (mixed >> 32)) * mul2 & mask) >> 1)) % columns
        mixed = (column ^ k2) * mul1 & mask
        row = (row + (((mixed ^ (mixed >> 32)) * mul2 & mask) >> 1)) % rows
        mixed = (row ^ k3) * mul1 & mask
        column = (column + (((mixed ^ (mixed >> 32)) * mul2 & mask) >> 1)) % columns
        mixed = (column ^ k4) * mul1 & mask
        row = (row + (((mixed ^ (mixed >> 32)) * mul2 & mask) >> 1)) % rows
        mixed = (row ^ k5) * mul1 & mask
        column = (column + (((mixed ^ (mixed >> 32)) * mul2 & mask) >> 1)) % columns
        value = row * columns + column
        if value < n:
            return value


def _walk(values: np.ndarray, keys: Sequence[Any], n: Any, rows: Any, columns: Any) -> np.ndarray:
    """The network with cycle walking on a flat uint64 array of positions in ``range(n)``, as int64. ``keys``,
    ``n``, ``rows`` and ``columns`` are uint64 scalars or arrays of one per value; the values that fall outside
    walk on in vectorized passes over them alone, the last few one by one (cheaper than more NumPy calls)."""

    def pick(part: Any, rows_left: np.ndarray) -> Any:
        return part[rows_left] if isinstance(part, np.ndarray) else part

    values = _network(values, keys, rows, columns)
    outside = (values >= n).nonzero()[0]
    while len(outside) > _STRAGGLERS:
        walked = _network(values[outside], [pick(key, outside) for key in keys], pick(rows, outside),
                          pick(columns, outside))
        values[outside] = walked
        outside = outside[walked >= pick(n, outside)]
    if len(outside):  # each part's values for these rows as Python ints, read once
        count = len(outside)
        parts = [part[outside].tolist() if isinstance(part, np.ndarray) else [int(part)] * count
                 for part in (*keys, n, rows, columns)]
        values[outside] = [_walk_one(value, at[:-3], at[-3], at[-2], at[-1])
                           for value, at in zip(values[outside].tolist(), zip(*parts))]
    return values.view(np.int64)  # below n < 2**63: the same bits


def _small_keys(keys: np.ndarray, width: int) -> np.ndarray:
    """The sort keys of small orders, for a uint64 array ``keys`` (each order's first round key): row ``r`` holds,
    for ``i`` in ``range(width)``, the top 54 bits of ``mix64(keys[r] + (i + 1) * golden)`` (the splitmix64 stream
    started at the key) above ``i`` in the low 10 bits. The keys of a row are distinct, so any sort orders them
    alike (on every platform), and a tie of the hashes keeps index order; sorted, their low bits are the order."""
    steps = (np.arange(width, dtype=np.uint64) + np.uint64(1)) * np.uint64(_GOLDEN)
    with np.errstate(over="ignore"):
        hashes = _mix64_array(keys.reshape(-1, 1) + steps)
    np.bitwise_and(hashes, _HASH_BITS, out=hashes)
    result: np.ndarray = np.bitwise_or(hashes, np.arange(width, dtype=np.uint64), out=hashes)
    return result


def _small_table(key: int, n: int) -> np.ndarray:
    """The small order of ``n`` indices keyed by ``key`` (its first round key), as int16 (n <= SMALL_ORDER_MAX)."""
    ordered = np.sort(_small_keys(np.array([key], dtype=np.uint64), n)[0])
    table: np.ndarray = np.bitwise_and(ordered, _INDEX_BITS).astype(np.int16)
    return table


def _small_take(keys: np.ndarray, lengths: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The index at ``positions[j]`` of the small order of ``lengths[j]`` indices keyed by ``keys[j]``, for every
    ``j`` (flat arrays; lengths at most `SMALL_ORDER_MAX`, positions below them), as int64: `_small_table` of each
    distinct ``(key, length)`` once, rows sorted by length and sorted together (padded with keys above every key
    of the row's own indices) in chunks of about `_SMALL_CHUNK` keys."""
    keys = keys.astype(np.uint64, copy=False)
    lengths = lengths.astype(np.int64, copy=False)
    ordering = np.lexsort((keys, lengths))  # by length, then key
    sorted_keys, sorted_lengths = keys[ordering], lengths[ordering]
    sorted_positions = positions.astype(np.int64)[ordering]
    fresh = np.ones(len(ordering), dtype=bool)
    fresh[1:] = (sorted_keys[1:] != sorted_keys[:-1]) | (sorted_lengths[1:] != sorted_lengths[:-1])
    firsts = np.flatnonzero(fresh)  # where each distinct order's values start
    bounds = np.append(firsts, len(ordering))
    row_keys, row_lengths = sorted_keys[firsts], sorted_lengths[firsts]
    found = np.empty(len(ordering), dtype=np.int64)
    start, rows = 0, len(firsts)
    while start < rows:
        ends = np.arange(start + 1, min(rows, start + _SMALL_CHUNK) + 1)
        cost = (ends - start) * row_lengths[ends - 1]  # hashes of the chunk [start, end): increasing with end
        end = start + max(1, int(np.searchsorted(cost, _SMALL_CHUNK, side="right")))
        width = int(row_lengths[end - 1])
        sort_keys = _small_keys(row_keys[start:end], width)
        if int(row_lengths[start]) != width:  # past a row's length: keys above all of its own, in index order
            sort_keys[np.arange(width) >= row_lengths[start:end, None]] |= _HASH_BITS
        sort_keys.sort(axis=1)
        tables = np.bitwise_and(sort_keys, _INDEX_BITS)
        low, high = int(bounds[start]), int(bounds[end])
        row_of = np.repeat(np.arange(end - start), np.diff(bounds[start:end + 1]))
        found[low:high] = tables[row_of, sorted_positions[low:high]]
        start = end
    result = np.empty(len(ordering), dtype=np.int64)
    result[ordering] = found
    return result


class Order:
    """The order of one epoch: a pseudo-random permutation of ``range(n)`` evaluated position by position.

    ``Order(n, seed=0, epoch=0, shuffle=True)``; ``len(order) == n``; ``order[k]`` (``k`` in ``range(n)``,
    negative ``k`` counts from the end) is the index at position ``k``; ``order.take(positions)`` is the same for
    an array of positions (vectorized, int64 result); ``order.with_epoch(e)`` is the order of another epoch;
    iterating yields ``order[0], order[1], ...``. Each ``(seed, epoch)`` gives another order (seeds and epochs count
    modulo 2**64: ``seed=-1`` is ``seed=2**64 - 1``, and such orders compare equal); ``shuffle=False`` is ``range(n)``
    (equal whatever the seed and epoch). Memory is O(1) whatever ``n``; an order pickles as its four parameters.

    Example:

        >>> from mmap_ninja import Order
        >>> order = Order(10, seed=0, epoch=1)
        >>> len(order), sorted(order.take(range(10)).tolist()) == list(range(10))
        (10, True)
        >>> order[0], order.with_epoch(2)[0]
        (1, 8)
        >>> Order(4, shuffle=False).take([0, 1, 2, 3])
        array([0, 1, 2, 3])
    """

    __slots__ = ("_columns", "_epoch", "_keys", "_n", "_rows", "_seed", "_shuffle", "_table")

    def __init__(self, n: int, *, seed: int = 0, epoch: int = 0, shuffle: bool = True):
        n = _as_int(n, "n")
        if n < 0:
            raise ValueError(f"Order: n must be >= 0, got {n}")
        if n >= 1 << 63:
            raise ValueError(f"Order: n must be below 2**63 (int64 positions), got {n}")
        self._n = n
        self._seed = _as_int(seed, "seed")
        self._epoch = _as_int(epoch, "epoch")
        if self._epoch < 0:
            raise ValueError(f"Order: epoch must be >= 0, got {self._epoch}")
        self._shuffle = bool(shuffle)
        self._rows, self._columns = _grid(n)
        self._keys = _round_keys(self.seed, self.epoch) if self.shuffle else ()
        self._table: Optional[np.ndarray] = None  # a small order's permutation, sorted on the first read

    # Read-only: the order is computed from them once (an assigned epoch would keep the old order).
    @property
    def seed(self) -> int:
        """The seed of the shuffle."""
        return self._seed

    @property
    def epoch(self) -> int:
        """The epoch whose order this is (`with_epoch` gives another epoch's)."""
        return self._epoch

    @property
    def shuffle(self) -> bool:
        """False for the identity order ``range(n)``."""
        return self._shuffle

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"Order({self._n}, seed={self.seed}, epoch={self.epoch}, shuffle={self.shuffle})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Order):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_order, (ORDER_VERSION, *self._parameters()))

    def _parameters(self) -> tuple[int, int, int, bool]:
        return (self._n, self.seed, self.epoch, self.shuffle)

    def _key(self) -> tuple[int, int, int, bool]:
        """What the order depends on: seeds and epochs count modulo 2**64, an unshuffled order on ``n`` alone."""
        if not self.shuffle:
            return (self._n, 0, 0, False)
        return (self._n, self.seed & _MASK64, self.epoch & _MASK64, True)

    def with_epoch(self, epoch: int) -> Order:
        """The order of ``epoch`` with the same ``n``, seed and shuffle."""
        return Order(self._n, seed=self.seed, epoch=epoch, shuffle=self.shuffle)

    # -- one position (pure Python ints: a few microseconds, no NumPy call overhead) --

    def _small(self) -> np.ndarray:
        """A small order's permutation (``n <= SMALL_ORDER_MAX``, shuffled), sorted once and kept (int16)."""
        table = self._table
        if table is None:
            table = self._table = _small_table(self._keys[0], self._n)
        return table

    def _index(self, position: int) -> int:
        """The index at ``position`` (an int in ``range(n)``, not checked): a small order's sorted permutation, else
        the Feistel network with cycle walking (`_walk_one`)."""
        if not self.shuffle:
            return position
        if self._n <= SMALL_ORDER_MAX:
            return int(self._small()[position])
        return _walk_one(position, self._keys, self._n, self._rows, self._columns)

    def __getitem__(self, position: Any) -> Any:
        if isinstance(position, slice):
            return self.take(np.arange(*position.indices(self._n), dtype=np.int64))
        if type(position) is not int and (isinstance(position, bool) or not isinstance(position, numbers.Integral)):
            raise TypeError(f"Order indices must be ints or slices, got {position!r} ({type(position).__name__})")
        k = int(position)
        if not -self._n <= k < self._n:
            raise IndexError(f"Order position {k} is out of range for an order of {self._n} indices")
        if k < 0:
            k += self._n
        return self._index(k)

    def __iter__(self) -> Iterator[int]:
        for start in range(0, self._n, _ITER_CHUNK):
            yield from self.take(np.arange(start, min(start + _ITER_CHUNK, self._n), dtype=np.int64)).tolist()

    # -- many positions at once --

    def _positions(self, positions: Any) -> np.ndarray:
        array = np.asarray(positions)
        if array.dtype == object and array.size and all(
                isinstance(value, numbers.Integral) and not isinstance(value, bool) for value in array.flat):
            bad = max(array.flat, key=abs)  # ints NumPy could not hold in int64: out of range
            raise IndexError(f"Order position {bad} is out of range for an order of {self._n} indices")
        if array.dtype == np.bool_ or (array.size and array.dtype.kind not in "iu"):
            raise TypeError(f"Order.take needs integer positions, got an array of {array.dtype}")
        if array.size:  # checked before the cast to int64 (which would wrap uint64 positions past 2**63)
            low, high = int(array.min()), int(array.max())
            if low < -self._n or high >= self._n:
                bad = low if low < -self._n else high
                raise IndexError(f"Order position {bad} is out of range for an order of {self._n} indices")
        array = array.astype(np.int64, copy=False)
        result: np.ndarray = np.where(array < 0, array + self._n, array)
        return result

    def take(self, positions: Any) -> np.ndarray:
        """The indices at ``positions`` (any array-like of ints, negatives count from the end), as int64.

        The result has the shape of ``positions``. A position outside ``range(-n, n)`` raises `IndexError`
        naming it.
        """
        array = self._positions(positions)
        if not self.shuffle or self._n <= 1:
            return np.array(array, dtype=np.int64, copy=True)
        if self._n <= SMALL_ORDER_MAX:
            result: np.ndarray = self._small().take(array.reshape(-1)).astype(np.int64).reshape(array.shape)
            return result
        keys = [np.uint64(key) for key in self._keys]
        return _walk(array.reshape(-1).astype(np.uint64), keys, np.uint64(self._n), np.uint64(self._rows),
                     np.uint64(self._columns)).reshape(array.shape)

    def take_in_epochs(self, epochs: Any, positions: Any) -> np.ndarray:
        """``[self.with_epoch(e)[p] for e, p in zip(epochs, positions)]``, vectorized over the epochs too (for a
        stream that runs through many epochs of a small dataset); ``self.epoch`` is not used."""
        array = self._positions(positions).reshape(-1)
        epoch_array = np.asarray(epochs)
        if epoch_array.dtype == np.bool_ or (epoch_array.size and epoch_array.dtype.kind not in "iu"):
            raise TypeError(f"take_in_epochs needs integer epochs, got an array of {epoch_array.dtype}")
        if epoch_array.size and int(epoch_array.max()) >= 1 << 63:
            raise ValueError(f"epochs must be below 2**63, got {int(epoch_array.max())}")
        epoch_array = epoch_array.astype(np.int64, copy=False).reshape(-1)
        if epoch_array.shape != array.shape:
            raise ValueError(f"take_in_epochs needs one epoch per position: {epoch_array.size} epochs for "
                             f"{array.size} positions")
        if epoch_array.size and int(epoch_array.min()) < 0:
            raise ValueError(f"epochs must be >= 0, got {int(epoch_array.min())}")
        if not self.shuffle or self._n <= 1:
            return np.array(array, dtype=np.int64, copy=True)
        keys = _round_keys_array(self.seed, epoch_array.astype(np.uint64))
        if self._n <= SMALL_ORDER_MAX:
            return _small_take(keys[0], np.full(len(array), self._n, dtype=np.int64), array)
        return _walk(array.astype(np.uint64), keys, np.uint64(self._n), np.uint64(self._rows),
                     np.uint64(self._columns))


def take_many(lengths: Any, seeds: Any, epochs: Any, positions: Any) -> np.ndarray:
    """``[Order(n, seed=s, epoch=e)[p] for n, s, e, p in zip(lengths, seeds, epochs, positions)]`` vectorized over
    all four (for reading many orders at once, as a blend of many sources does). Seeds are taken modulo 2**64 and
    must fit in int64 or uint64 arrays; every position must lie in ``range(n)`` (not checked: an internal helper)."""
    n = np.asarray(lengths, dtype=np.int64).reshape(-1)
    seed_list = [int(seed) for seed in np.asarray(seeds).reshape(-1).tolist()]
    family = OrderFamily(n.tolist(), seed_list)
    return family.take(np.arange(len(n), dtype=np.int64), np.asarray(epochs, dtype=np.int64).reshape(-1),
                       np.asarray(positions, dtype=np.int64).reshape(-1))


class OrderFamily:
    """The orders of many datasets at once, for reading many of them in one vectorized call (a blend's batches).

    ``OrderFamily(lengths, seeds, shuffle=True).take(members, epochs, positions)`` is
    ``[Order(lengths[k], seed=seeds[k], epoch=e, shuffle=shuffle)[p] for k, e, p in zip(members, epochs,
    positions)]`` as an int64 array, computed with NumPy over all the positions together: each member's constants
    (domain split, seed state) once when the family is built, the round keys of each ``(member, epoch)`` on the fly,
    then the Feistel rounds and the cycle walking over the positions of large members, and one sorted row of hashes
    per distinct ``(member, epoch)`` of small members (``n <= SMALL_ORDER_MAX``). Memory is O(members), nothing of
    the datasets' size. Positions must lie in ``range(lengths[k])`` (not checked: the caller computed them).

    Example:

        >>> import numpy as np
        >>> from mmap_ninja.containers.order import Order, OrderFamily
        >>> family = OrderFamily([10, 1000], seeds=[3, 4])
        >>> family.take(np.array([0, 1, 1]), np.array([2, 0, 5]), np.array([7, 7, 999])).tolist() == [
        ...     Order(10, seed=3, epoch=2)[7], Order(1000, seed=4)[7], Order(1000, seed=4, epoch=5)[999]]
        True
    """

    def __init__(self, lengths: Sequence[int], seeds: Sequence[int], *, shuffle: bool = True):
        lengths = [_as_int(n, f"OrderFamily member {k}'s length") for k, n in enumerate(lengths)]
        seeds = [_as_int(seed, f"OrderFamily member {k}'s seed") for k, seed in enumerate(seeds)]
        for k, n in enumerate(lengths):
            if not 0 <= n < 1 << 63:
                raise ValueError(f"OrderFamily member {k}'s length must be in [0, 2**63), got {n}")
        if len(seeds) != len(lengths):
            raise ValueError(f"OrderFamily needs one seed per member: {len(seeds)} seeds for {len(lengths)} lengths")
        self.shuffle = bool(shuffle)
        grids = [_grid(n) for n in lengths]
        # Each member's length and grid sides, as rows of one table: one lookup gives all three for a batch.
        self._sides = np.array([lengths, [rows for rows, _ in grids], [columns for _, columns in grids]],
                               dtype=np.uint64).reshape(3, len(lengths))
        self._seed_states = np.array([_mix64((int(seed) & _MASK64) ^ _GOLDEN) for seed in seeds], dtype=np.uint64)
        self._set_small()
        # See `cache_keys`: rows 0-5 the round keys, rows 6-8 the member's sides, one column per (member, epoch).
        self._key_table: Optional[np.ndarray] = None
        self._key_starts = self._key_epochs = np.zeros(len(lengths), dtype=np.int64)

    table_cache_entries = 1 << 21
    """Indices of small orders' tables a family keeps (int16: 4 MiB): emptied when a batch's new tables would pass
    it."""

    def _set_small(self) -> None:
        """Which members are small orders (sorted hashes, not the network), and whether any is; an empty cache of
        their tables by ``(member, epoch)``."""
        self._small = (self._sides[0] <= np.uint64(SMALL_ORDER_MAX)) & self.shuffle
        self._any_small = bool(self._small.any())
        self._tables: dict[tuple[int, int], np.ndarray] = {}
        self._cached_entries = 0

    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key not in ("_tables", "_cached_entries")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "_sides" in state:  # (pickled by order version 2, inside a BlockOrder, which loads only if its orders did
            self._set_small()  # not change; one of version 1 is refused)

    def __len__(self) -> int:
        return self._sides.shape[1]

    def cache_keys(self, max_epochs: Sequence[int], limit: int = 1 << 16) -> bool:
        """Precompute the round keys of epochs ``0 .. max_epochs[k]`` of every member ``k`` (when they are at most
        ``limit`` in all), so that `take` looks them up instead of deriving them; True if they were cached."""
        counts = np.maximum(np.asarray(max_epochs, dtype=np.int64) + 1, 0)
        if counts.shape != (len(self),) or int(counts.sum()) > limit:
            return False
        members = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        epochs = np.arange(len(members), dtype=np.int64) - np.repeat(starts, counts)
        if len(members):
            self._key_table = np.concatenate([np.array(self._derive_keys(members, epochs)).reshape(_ROUNDS, -1),
                                              self._sides.take(members, axis=1)])
        else:
            self._key_table = None
        self._key_starts, self._key_epochs = starts, counts
        return self._key_table is not None

    def _derive_keys(self, members: np.ndarray, epochs: np.ndarray) -> list[np.ndarray]:
        """The six round keys of each ``(members[j], epochs[j])`` (as `_round_keys` derives them)."""
        golden = np.uint64(_GOLDEN)
        with np.errstate(over="ignore"):
            state = _mix64_array(self._seed_states[members] + epochs.astype(np.uint64) * golden)
            keys = []
            for round_number in range(_ROUNDS):
                state = _mix64_array(state + (golden + np.uint64(round_number)))
                keys.append(state)
        return keys

    def take(self, members: np.ndarray, epochs: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The index at ``positions[j]`` of member ``members[j]``'s order of epoch ``epochs[j]``, for every ``j``
        (three int64 arrays of one length), as an int64 array."""
        positions = np.asarray(positions, dtype=np.int64)
        if not self.shuffle or not positions.size:
            return np.array(positions, dtype=np.int64, copy=True)
        members = np.asarray(members, dtype=np.int64)
        epochs = np.asarray(epochs, dtype=np.int64)
        if self._key_table is not None and bool((epochs < self._key_epochs.take(members)).all()):
            return self.take_cached(members, epochs, positions)
        sides = self._sides.take(members, axis=1)
        return self._walk_members(members, epochs, positions.astype(np.uint64), self._derive_keys(members, epochs),
                                  sides[0], sides[1], sides[2])

    def take_cached(self, members: np.ndarray, epochs: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """`take` for int64 arrays whose epochs all have cached keys (`cache_keys` returned True and covered them:
        not checked, for a caller that knows, as a blend does of the epochs its length reaches)."""
        if not self.shuffle:
            return np.array(positions, dtype=np.int64, copy=True)
        assert self._key_table is not None, "take_cached needs cache_keys first"
        table = self._key_table.take(self._key_starts.take(members) + epochs, axis=1)
        unsigned = np.asarray(positions, dtype=np.int64).view(np.uint64)  # the walk reads it, never writes it
        return self._walk_members(members, epochs, unsigned, table[:_ROUNDS], table[_ROUNDS], table[_ROUNDS + 1],
                                  table[_ROUNDS + 2])

    def _walk_members(self, members: np.ndarray, epochs: np.ndarray, values: np.ndarray, keys: Sequence[np.ndarray],
                      n: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """`_walk` over the values of large members and `_small_orders` over those of small ones (arrays of one per
        value; ``values`` is only read)."""
        small = self._small.take(members) if self._any_small else None
        if small is None or not small.any():
            return _walk(values, keys, n, rows, columns)
        result = np.empty(len(values), dtype=np.int64)
        large = np.flatnonzero(~small)
        if len(large):
            result[large] = _walk(values[large], [key[large] for key in keys], n[large], rows[large], columns[large])
        picked = np.flatnonzero(small)
        result[picked] = self._small_orders(members[picked], epochs[picked], keys[0][picked], n[picked],
                                            values[picked])
        return result

    def _small_orders(self, members: np.ndarray, epochs: np.ndarray, keys: np.ndarray, n: np.ndarray,
                      positions: np.ndarray) -> np.ndarray:
        """The indices at ``positions`` of small members' orders (arrays of one per value; ``keys`` the first round
        key of each value's order): from the tables of each distinct ``(member, epoch)``, cached, when there are at
        most `_CACHED_ROWS` of them, else `_small_take` (sorting them all at once)."""
        ordering = np.lexsort((epochs, members))
        sorted_members, sorted_epochs = members[ordering], epochs[ordering]
        fresh = np.ones(len(ordering), dtype=bool)
        fresh[1:] = (sorted_members[1:] != sorted_members[:-1]) | (sorted_epochs[1:] != sorted_epochs[:-1])
        firsts = np.flatnonzero(fresh)
        if len(firsts) > _CACHED_ROWS:
            return _small_take(keys, n, positions)
        pairs = list(zip(sorted_members[firsts].tolist(), sorted_epochs[firsts].tolist()))
        cache = self._tables
        tables = [cache.get(pair) for pair in pairs]
        missing = [row for row, table in enumerate(tables) if table is None]
        if missing:
            starts = ordering[firsts[missing]]  # a value of each missing order: its key and length
            built = [_small_table(key, length) for key, length in zip(keys[starts].tolist(), n[starts].tolist())]
            if self._cached_entries + sum(len(table) for table in built) > self.table_cache_entries:
                cache = self._tables = {}  # a new dict (a concurrent reader keeps the old one)
                self._cached_entries = 0
            for row, table in zip(missing, built):
                tables[row] = cache[pairs[row]] = table
                self._cached_entries += len(table)
        ready = [table for table in tables if table is not None]  # every one, by now
        offsets = np.cumsum([0, *[len(table) for table in ready[:-1]]])
        rows = np.cumsum(fresh) - 1
        found = np.concatenate(ready)[offsets[rows] + positions[ordering].astype(np.int64)]
        result = np.empty(len(ordering), dtype=np.int64)
        result[ordering] = found
        return result


def _rebuild_order(version: int, n: int, seed: int, epoch: int, shuffle: bool) -> Order:
    """An `Order` back from its pickle (``version``: the order algorithm of the mmap_ninja that pickled it; an older
    one is refused unless its order is this version's, see `order_version_unchanged`)."""
    if not order_version_unchanged(version, [n], shuffle):
        raise ValueError(older_order_pickle_message("Order", version))
    return Order(n, seed=seed, epoch=epoch, shuffle=shuffle)


def _rebuild(n: int, seed: int, epoch: int, shuffle: bool) -> Order:
    """What pickles of order version 1 name (``mmap_ninja.order._rebuild``): refused, never another order."""
    raise ValueError(older_order_pickle_message(f"Order({n}, seed={seed}, epoch={epoch}, shuffle={shuffle})", 1))
