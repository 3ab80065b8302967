"""A shuffled order of ``range(n)`` computed per position, in O(1) time and memory.

`Order(n, seed=..., epoch=...)` is a keyed bijection of ``range(n)``: ``order[k]`` is the index at position
``k`` of the epoch's order, computed on its own, so nothing of size ``n`` is ever built (a permutation of 10⁹
indices would take 8 GB and minutes; an `Order` of any size takes a few hundred bytes and opens at once).
``order.take(positions)`` computes many positions at once with NumPy.

How: a Feistel network over the smallest power of two ``2**b >= n`` (an unbalanced one when ``b`` is odd, so
the domain is never more than twice ``n``), with round keys derived from ``(seed, epoch)`` by a 64-bit mixing
function; a value that falls outside ``range(n)`` is sent through the network again ("cycle walking") until it
lands inside, which keeps the map a bijection of ``range(n)``. On average fewer than two passes are needed.

The order depends only on ``(n, seed, epoch, shuffle)``, never on the platform or NumPy's random generators,
so it is the same on every rank, worker and machine and can be recomputed after a restart. ``shuffle=False``
gives the identity order ``range(n)``. This module needs only NumPy (no torch): JAX and grain users can use it too.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence
from typing import Any, Optional

import numpy as np

__all__ = ["Order", "OrderFamily"]

_MASK64 = (1 << 64) - 1
_ROUNDS = 6
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB
_GOLDEN = 0x9E3779B97F4A7C15
# Values still cycle-walking below which `OrderFamily.take` finishes them one by one in Python.
_STRAGGLERS = 4
# How many positions `__iter__` computes at once.
_ITER_CHUNK = 4096


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


class Order:
    """The order of one epoch: a pseudo-random permutation of ``range(n)`` evaluated position by position.

    ``Order(n, seed=0, epoch=0, shuffle=True)``; ``len(order) == n``; ``order[k]`` (``k`` in ``range(n)``,
    negative ``k`` counts from the end) is the index at position ``k``; ``order.take(positions)`` is the same for
    an array of positions (vectorized, int64 result); ``order.with_epoch(e)`` is the order of another epoch;
    iterating yields ``order[0], order[1], ...``. Each ``(seed, epoch)`` gives another order; ``shuffle=False``
    is ``range(n)``. Memory is O(1) whatever ``n``; an order pickles as its four parameters.

    Example:

        >>> from mmap_ninja import Order
        >>> order = Order(10, seed=0, epoch=1)
        >>> len(order), sorted(order.take(range(10)).tolist()) == list(range(10))
        (10, True)
        >>> order[0], order.with_epoch(2)[0]
        (6, 5)
        >>> Order(4, shuffle=False).take([0, 1, 2, 3])
        array([0, 1, 2, 3])
    """

    __slots__ = ("_bits", "_high_bits", "_keys", "_low_bits", "_n", "_rounds", "epoch", "seed", "shuffle")

    def __init__(self, n: int, *, seed: int = 0, epoch: int = 0, shuffle: bool = True):
        n = _as_int(n, "n")
        if n < 0:
            raise ValueError(f"Order: n must be >= 0, got {n}")
        if n >= 1 << 63:
            raise ValueError(f"Order: n must be below 2**63 (int64 positions), got {n}")
        self._n = n
        self.seed = _as_int(seed, "seed")
        self.epoch = _as_int(epoch, "epoch")
        if self.epoch < 0:
            raise ValueError(f"Order: epoch must be >= 0, got {self.epoch}")
        self.shuffle = bool(shuffle)
        self._bits = max(n - 1, 0).bit_length()  # 2**bits >= n
        self._high_bits = (self._bits + 1) // 2
        self._low_bits = self._bits // 2
        self._keys = _round_keys(self.seed, self.epoch) if self.shuffle else ()
        # Each round's key and the shift that keeps the top bits of its hash (the high half's width alternates).
        widths = (self._high_bits, self._low_bits)
        self._rounds = tuple((key, 64 - widths[r % 2]) for r, key in enumerate(self._keys))

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"Order({self._n}, seed={self.seed}, epoch={self.epoch}, shuffle={self.shuffle})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Order):
            return NotImplemented
        return self._parameters() == other._parameters()

    def __hash__(self) -> int:
        return hash(self._parameters())

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, self._parameters())

    def _parameters(self) -> tuple[int, int, int, bool]:
        return (self._n, self.seed, self.epoch, self.shuffle)

    def with_epoch(self, epoch: int) -> Order:
        """The order of ``epoch`` with the same ``n``, seed and shuffle."""
        return Order(self._n, seed=self.seed, epoch=epoch, shuffle=self.shuffle)

    # -- one position (pure Python ints: a few microseconds, no NumPy call overhead) --

    def _index(self, position: int, mul1: int = _MUL1, mul2: int = _MUL2, mask: int = _MASK64) -> int:
        """The index at ``position`` (an int in ``range(n)``, not checked): the Feistel network, unrolled, with cycle
        walking. Each round maps (high: h bits, low: l bits) to (low, high ^ F(low)), so the halves swap roles every
        round; unrolled, the same is ``high ^= F(low)`` then ``low ^= F(high)``. F keeps the top bits of a
        multiply-xorshift-multiply hash of (half, key) (none when the width is 0: a shift by 64 leaves nothing)."""
        if not self.shuffle:
            return position
        n, low_bits = self._n, self._low_bits
        low_mask = (1 << low_bits) - 1
        (k0, s0), (k1, s1), (k2, s2), (k3, s3), (k4, s4), (k5, s5) = self._rounds
        value = position
        while True:
            high, low = value >> low_bits, value & low_mask
            mixed = (low ^ k0) * mul1 & mask
            high ^= ((mixed ^ (mixed >> 32)) * mul2 & mask) >> s0
            mixed = (high ^ k1) * mul1 & mask
            low ^= ((mixed ^ (mixed >> 32)) * mul2 & mask) >> s1
            mixed = (low ^ k2) * mul1 & mask
            high ^= ((mixed ^ (mixed >> 32)) * mul2 & mask) >> s2
            mixed = (high ^ k3) * mul1 & mask
            low ^= ((mixed ^ (mixed >> 32)) * mul2 & mask) >> s3
            mixed = (low ^ k4) * mul1 & mask
            high ^= ((mixed ^ (mixed >> 32)) * mul2 & mask) >> s4
            mixed = (high ^ k5) * mul1 & mask
            low ^= ((mixed ^ (mixed >> 32)) * mul2 & mask) >> s5
            value = (high << low_bits) | low
            if value < n:  # cycle walking: stays a bijection of range(n)
                return value

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

    def _permute_array(self, values: np.ndarray, keys: Sequence[Any]) -> np.ndarray:
        """One pass of the Feistel network (as in `_index`) on a uint64 array (multiplication wraps modulo 2**64, as
        the masking does in `_index`).
        ``keys`` holds each round's key: a uint64 scalar, or an array of one key per value."""
        high_bits, low_bits = self._high_bits, self._low_bits
        high = values >> np.uint64(low_bits)
        low = values & np.uint64((1 << low_bits) - 1)
        mul1, mul2, shift32 = np.uint64(_MUL1), np.uint64(_MUL2), np.uint64(32)
        for key in keys:
            if high_bits:
                mixed = (low ^ key) * mul1
                mixed = (mixed ^ (mixed >> shift32)) * mul2
                high, low = low, high ^ (mixed >> np.uint64(64 - high_bits))
            else:
                high, low = low, high
            high_bits, low_bits = low_bits, high_bits
        result: np.ndarray = (high << np.uint64(low_bits)) | low
        return result

    def _walk(self, values: np.ndarray, keys: Sequence[Any]) -> np.ndarray:
        """The Feistel network with cycle walking on a flat uint64 array of positions in ``range(n)``."""
        per_value = any(isinstance(key, np.ndarray) for key in keys)
        with np.errstate(over="ignore"):
            values = self._permute_array(values, keys)
            outside = np.flatnonzero(values >= np.uint64(self._n))
            while outside.size:
                walked = self._permute_array(values[outside], [key[outside] for key in keys] if per_value else keys)
                values[outside] = walked
                outside = outside[walked >= np.uint64(self._n)]
        return values.astype(np.int64)

    def _positions(self, positions: Any) -> np.ndarray:
        array = np.asarray(positions)
        if array.dtype == np.bool_ or (array.size and array.dtype.kind not in "iu"):
            raise TypeError(f"Order.take needs integer positions, got an array of {array.dtype}")
        array = array.astype(np.int64, copy=False)
        if array.size:
            low, high = int(array.min()), int(array.max())
            if low < -self._n or high >= self._n:
                bad = low if low < -self._n else high
                raise IndexError(f"Order position {bad} is out of range for an order of {self._n} indices")
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
        keys = [np.uint64(key) for key in self._keys]
        return self._walk(array.reshape(-1).astype(np.uint64), keys).reshape(array.shape)

    def take_in_epochs(self, epochs: Any, positions: Any) -> np.ndarray:
        """``[self.with_epoch(e)[p] for e, p in zip(epochs, positions)]``, vectorized over the epochs too (for a
        stream that runs through many epochs of a small dataset); ``self.epoch`` is not used."""
        array = self._positions(positions).reshape(-1)
        epoch_array = np.asarray(epochs, dtype=np.int64).reshape(-1)
        if epoch_array.shape != array.shape:
            raise ValueError(f"take_in_epochs needs one epoch per position: {epoch_array.size} epochs for "
                             f"{array.size} positions")
        if epoch_array.size and int(epoch_array.min()) < 0:
            raise ValueError(f"epochs must be >= 0, got {int(epoch_array.min())}")
        if not self.shuffle or self._n <= 1:
            return np.array(array, dtype=np.int64, copy=True)
        return self._walk(array.astype(np.uint64), _round_keys_array(self.seed, epoch_array.astype(np.uint64)))


def take_many(lengths: Any, seeds: Any, epochs: Any, positions: Any) -> np.ndarray:
    """``[Order(n, seed=s, epoch=e)[p] for n, s, e, p in zip(lengths, seeds, epochs, positions)]`` vectorized over
    all four (for reading many orders at once, as a blend of many sources does). Seeds are taken modulo 2**64 and
    must fit in int64 or uint64 arrays; every position must lie in ``range(n)`` (not checked: an internal helper)."""
    n = np.asarray(lengths, dtype=np.int64).reshape(-1).astype(np.uint64)
    values = np.asarray(positions, dtype=np.int64).reshape(-1).astype(np.uint64)
    seed_array = np.asarray(seeds).reshape(-1).astype(np.uint64)
    epoch_array = np.asarray(epochs, dtype=np.int64).reshape(-1).astype(np.uint64)
    one = np.uint64(1)
    with np.errstate(over="ignore"):
        bits = np.zeros(len(n), dtype=np.uint64)
        big = n > one
        # bits = (n - 1).bit_length(), exactly, through float64 and a correction step
        guess = np.where(big, np.floor(np.log2(np.maximum(n, 2).astype(np.float64) - 1)) + 1, 0).astype(np.uint64)
        guess = np.where(big & ((one << guess) < n), guess + one, guess)
        guess = np.where(big & (guess > one) & ((one << (guess - one)) >= n), guess - one, guess)
        bits[:] = guess
        golden = np.uint64(_GOLDEN)
        state = _mix64_array(_mix64_array(seed_array ^ golden) + epoch_array * golden)
        keys = []
        for round_number in range(_ROUNDS):
            state = _mix64_array(state + golden + np.uint64(round_number))
            keys.append(state)

        def permute(v: np.ndarray, ks: list[np.ndarray], high_bits: np.ndarray, low_bits: np.ndarray) -> np.ndarray:
            high, low = v >> low_bits, v & ((one << low_bits) - one)
            for key in ks:
                mixed = (low ^ key) * np.uint64(_MUL1)
                mixed = (mixed ^ (mixed >> np.uint64(32))) * np.uint64(_MUL2)
                has_bits = high_bits > 0
                shifted = mixed >> np.where(has_bits, np.uint64(64) - high_bits, np.uint64(0))
                high, low = low, high ^ np.where(has_bits, shifted, np.uint64(0))
                high_bits, low_bits = low_bits, high_bits
            result: np.ndarray = (high << low_bits) | low
            return result

        high_bits, low_bits = (bits + one) // np.uint64(2), bits // np.uint64(2)
        values = permute(values, keys, high_bits, low_bits)
        outside = np.flatnonzero(values >= n)
        while outside.size:
            walked = permute(values[outside], [key[outside] for key in keys], high_bits[outside], low_bits[outside])
            values[outside] = walked
            outside = outside[walked >= n[outside]]
    return values.astype(np.int64)


class OrderFamily:
    """The orders of many datasets at once, for reading many of them in one vectorized call (a blend's batches).

    ``OrderFamily(lengths, seeds, shuffle=True).take(members, epochs, positions)`` is
    ``[Order(lengths[k], seed=seeds[k], epoch=e, shuffle=shuffle)[p] for k, e, p in zip(members, epochs,
    positions)]`` as an int64 array, computed with NumPy over all the positions together: each member's constants
    (domain split, seed state) once when the family is built, the round keys of each ``(member, epoch)`` on the fly,
    then the Feistel rounds and the cycle walking over the whole array. Memory is O(members), nothing of the
    datasets' size. Positions must lie in ``range(lengths[k])`` (not checked: the caller computed them).

    Example:

        >>> import numpy as np
        >>> from mmap_ninja.containers.order import Order, OrderFamily
        >>> family = OrderFamily([10, 1000], seeds=[3, 4])
        >>> family.take(np.array([0, 1, 1]), np.array([2, 0, 5]), np.array([7, 7, 999])).tolist() == [
        ...     Order(10, seed=3, epoch=2)[7], Order(1000, seed=4)[7], Order(1000, seed=4, epoch=5)[999]]
        True
    """

    def __init__(self, lengths: Sequence[int], seeds: Sequence[int], *, shuffle: bool = True):
        lengths = [int(n) for n in lengths]
        if len(seeds) != len(lengths):
            raise ValueError(f"OrderFamily needs one seed per member: {len(seeds)} seeds for {len(lengths)} lengths")
        self.shuffle = bool(shuffle)
        bits = [max(n - 1, 0).bit_length() for n in lengths]
        high_bits = [(b + 1) // 2 for b in bits]
        low_bits = [b // 2 for b in bits]
        self._n = np.array(lengths, dtype=np.uint64)
        self._low_bits = np.array(low_bits, dtype=np.uint64)
        self._low_mask = np.array([(1 << b) - 1 for b in low_bits], dtype=np.uint64)
        # Rounds 0, 2, 4 write the high half (h bits), rounds 1, 3, 5 the low one (l bits): F keeps the top bits of
        # its hash with a shift of 64 - width. A width of 0 (members of at most 2 elements) would need a shift by 64,
        # which NumPy does not define: those shift by 63 and mask the result to nothing.
        self._shifts = (np.array([64 - max(b, 1) for b in high_bits], dtype=np.uint64),
                        np.array([64 - max(b, 1) for b in low_bits], dtype=np.uint64))
        self._narrow = min(bits, default=2) < 2
        self._width_masks = (np.array([(1 << b) - 1 for b in high_bits], dtype=np.uint64),
                             np.array([(1 << b) - 1 for b in low_bits], dtype=np.uint64))
        self._seed_states = np.array([_mix64((int(seed) & _MASK64) ^ _GOLDEN) for seed in seeds], dtype=np.uint64)
        self._key_table: Optional[list[np.ndarray]] = None  # see `cache_keys`: each round's keys
        self._key_starts = self._key_epochs = np.zeros(len(lengths), dtype=np.int64)

    def __len__(self) -> int:
        return len(self._n)

    def cache_keys(self, max_epochs: Sequence[int], limit: int = 1 << 16) -> bool:
        """Precompute the round keys of epochs ``0 .. max_epochs[k]`` of every member ``k`` (when they are at most
        ``limit`` in all), so that `take` looks them up instead of deriving them; True if they were cached."""
        counts = np.maximum(np.asarray(max_epochs, dtype=np.int64) + 1, 0)
        if counts.shape != self._n.shape or int(counts.sum()) > limit:
            return False
        members = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        epochs = np.arange(len(members), dtype=np.int64) - np.repeat(starts, counts)
        self._key_table = self._derive_keys(members, epochs) if len(members) else None
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
        keys: list[np.ndarray]
        if self._key_table is not None and bool((epochs < self._key_epochs[members]).all()):
            rows = self._key_starts[members] + epochs
            keys = [table[rows] for table in self._key_table]
        else:
            keys = self._derive_keys(members, epochs)
        params = [self._n[members], self._low_bits[members], self._low_mask[members],
                  self._shifts[0][members], self._shifts[1][members]]
        if self._narrow:
            params += [self._width_masks[0][members], self._width_masks[1][members]]
        with np.errstate(over="ignore"):
            values = self._pass(positions.astype(np.uint64), keys, params)
            outside = np.flatnonzero(values >= params[0])
            while len(outside) > _STRAGGLERS:  # cycle walking, on the values that fell outside their member's range
                walked = self._pass(values[outside], [key[outside] for key in keys],
                                    [param[outside] for param in params])
                values[outside] = walked
                outside = outside[walked >= params[0][outside]]
        for j in outside.tolist():  # the last few walk on in Python: cheaper than more rounds of NumPy calls
            values[j] = self._walk_one(int(values[j]), [int(key[j]) for key in keys], [int(p[j]) for p in params])
        return values.astype(np.int64)

    def _walk_one(self, value: int, keys: list[int], params: list[int]) -> int:
        """`_pass` on one value (Python ints) until it lands in its member's range."""
        n, low_bits, low_mask, shift_high, shift_low = params[:5]
        masks = params[5:7] if self._narrow else [_MASK64, _MASK64]
        shifts = (shift_high, shift_low)
        while value >= n:
            high, low = value >> low_bits, value & low_mask
            for round_number, key in enumerate(keys):
                source = low if round_number % 2 == 0 else high
                mixed = (source ^ key) * _MUL1 & _MASK64
                mixed = (((mixed ^ (mixed >> 32)) * _MUL2 & _MASK64) >> shifts[round_number % 2]) & masks[
                    round_number % 2]
                if round_number % 2 == 0:
                    high ^= mixed
                else:
                    low ^= mixed
            value = (high << low_bits) | low
        return value

    def _pass(self, values: np.ndarray, keys: list[np.ndarray], params: list[np.ndarray]) -> np.ndarray:
        """One pass of the Feistel network (`Order._index`, unrolled) on uint64 arrays, in place where it can."""
        low_bits, low_mask, shifts = params[1], params[2], params[3:5]
        high = values >> low_bits
        low = values & low_mask
        mixed = np.empty_like(values)
        spread = np.empty_like(values)
        mul1, mul2, shift32 = np.uint64(_MUL1), np.uint64(_MUL2), np.uint64(32)
        for round_number, key in enumerate(keys):
            source, target = (low, high) if round_number % 2 == 0 else (high, low)
            np.bitwise_xor(source, key, out=mixed)
            np.multiply(mixed, mul1, out=mixed)
            np.right_shift(mixed, shift32, out=spread)
            np.bitwise_xor(mixed, spread, out=mixed)
            np.multiply(mixed, mul2, out=mixed)
            np.right_shift(mixed, shifts[round_number % 2], out=mixed)
            if self._narrow:
                np.bitwise_and(mixed, params[5 + round_number % 2], out=mixed)
            np.bitwise_xor(target, mixed, out=target)
        np.left_shift(high, low_bits, out=high)
        result: np.ndarray = np.bitwise_or(high, low, out=high)
        return result


def _rebuild(n: int, seed: int, epoch: int, shuffle: bool) -> Order:
    return Order(n, seed=seed, epoch=epoch, shuffle=shuffle)
