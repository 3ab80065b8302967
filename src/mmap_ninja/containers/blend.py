"""`blend`: a read-only map that mixes several maps by weight, computed per position with nothing precomputed.

``m = blend([web, books, code], [0.7, 0.2, 0.1], seed=0)`` is a map of ``len(m)`` samples (the sum of the sources'
lengths unless ``length=`` says otherwise). Position ``i`` belongs to one source (`BlendedMap.source_of`) and reads
that source's next sample in its own shuffled order:

- *Which source.* The sources' weights (quantized to 2**-23 of their sum) are the leaves of a Huffman tree.
  Position ``i`` enters the root as its ``i``-th arrival; a node whose left side weighs ``a`` of its total ``d``
  sends its ``j``-th arrival left exactly when ``round(j * a / d)`` steps up between ``j`` and ``j + 1`` (integer
  arithmetic), and the arrival numbers of the child follow from the same rounding. So the path of a position, and
  how many earlier positions went to the same leaf, take O(tree depth) integer operations, vectorized over a batch
  with NumPy, with no table over the length. Each node's split is within one half of exact on every prefix, and
  (by the sibling property of Huffman trees) the errors along a path add up to less than 2 samples: over every
  prefix of length ``L`` a source of weight ``w`` is drawn ``w·L`` times, within 2 (plus the quantization,
  ≤ 6e-8·L).
- *Which sample.* The ``c``-th draw of source ``k`` (of length ``n``) reads ``Order(n, seed=..., epoch=c // n)[c %
  n]``: within a source epoch every sample of the source once, in an order of its own; a small source cycles with a
  new order each time, a large one is cut where the blend ends.
- *Schedules.* ``schedule=[(position, weights), ...]`` switches to other weights at those positions. Each source's
  draw counter carries over, so no sample is repeated or skipped within a source epoch across a change.

Sources are maps (or paths, opened with `mmap_ninja.open_existing` read-only), or anything with ``len`` and
indexing that pickles. At most ``max_open_sources`` are held open (least recently used first out); the others are
reopened from their pickle (a map pickles as its path). A blend pickles as its sources' pickles and its parameters,
so ``DataLoader`` workers reopen the files. The sources' lengths are taken when the blend is built.
"""

from __future__ import annotations

import heapq
import math
import numbers
import operator
import os
import pickle
import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Optional

import numpy as np

from mmap_ninja.containers.order import (
    ORDER_VERSION,
    Order,
    OrderFamily,
    _mix64,
    older_order_pickle_message,
    order_version_unchanged,
)
from mmap_ninja.kinds.maps import resolve_positions

__all__ = ["BlendedMap", "blend"]

QUANTUM_BITS = 23  # weights are integers out of 2**23 of their sum
MAX_LENGTH = 1 << 39  # arrival numbers times quantized weights stay within int64
DEFAULT_MAX_OPEN_SOURCES = 64
_ITER_CHUNK = 1024
_STRAGGLERS = 16  # positions still descending below which a batch finishes them one by one
_DROP_SHARE = 0.5  # a batch drops its finished rows when the rows expected to descend on are this share or fewer
_DTYPE_OF = operator.attrgetter("dtype")
_ORDER_CACHE = 4096  # per-(source, source epoch) orders kept (a few hundred bytes each, up to 2 KiB for small ones)


class _Tree:
    """A Huffman tree over the positive weights: node ``k < S`` is source ``k``'s leaf; internal nodes follow."""

    __slots__ = ("deeper", "depth", "first_inner", "first_leaf", "half", "inner", "left", "left_weight", "nodes",
                 "right", "root", "root_step", "shallowest_leaf", "step_child", "step_table", "total")

    def __init__(self, units: Sequence[int]):
        sources = len(units)
        left: list[int] = [-1] * sources
        right: list[int] = [-1] * sources
        left_weight: list[int] = [0] * sources
        total: list[int] = list(units)
        heap = [(unit, k, k) for k, unit in enumerate(units) if unit > 0]
        heapq.heapify(heap)
        next_tiebreak = sources
        while len(heap) > 1:
            weight_a, _, a = heapq.heappop(heap)
            weight_b, _, b = heapq.heappop(heap)
            node = len(total)
            # The heavier child goes left (an arbitrary but fixed convention).
            heavy, light = (b, a) if weight_b >= weight_a else (a, b)
            left.append(heavy)
            right.append(light)
            left_weight.append(total[heavy])
            total.append(weight_a + weight_b)
            heapq.heappush(heap, (weight_a + weight_b, next_tiebreak, node))
            next_tiebreak += 1
        self.root = heap[0][2]
        self.left = np.array(left, dtype=np.int64)
        self.right = np.array(right, dtype=np.int64)
        self.left_weight = np.array(left_weight, dtype=np.int64)
        self.total = np.array(total, dtype=np.int64)
        self.half = self.total // 2
        # The same, as Python ints per node, for one position at a time (NumPy scalars are slower there).
        self.nodes = [(left[k], right[k] if left[k] >= 0 else k, left_weight[k], total[k], total[k] // 2)
                      for k in range(len(total))]
        self.inner = np.array([left[k] >= 0 for k in range(len(total))], dtype=bool)
        self.first_inner = sources  # leaves are the nodes below it
        # `descend_many`'s tables, indexed by twice a node's number: ``step_table`` holds rows ``a, h, d, b`` (an
        # arrival goes left when the remainder of ``j·a + h`` by ``d`` reaches ``b = d - a``, the right side's
        # weight) with each node's column at 2·k and 2·k + 1, and ``step_child`` the doubled number of the child an
        # arrival goes to at 2·k + went_left. A leaf is a fixed point of a step: weight 0 of 1, ``h = 0``, every
        # arrival goes "right", to itself.
        columns = [(left_weight[k], total[k] // 2, total[k], total[k] - left_weight[k]) if left[k] >= 0
                   else (0, 0, 1, 1) for k in range(len(total))]
        self.step_table = np.repeat(np.array(columns, dtype=np.int64).T, 2, axis=1)
        self.step_child = np.array([2 * child for k in range(len(total)) for child in
                                    ((right[k], left[k]) if left[k] >= 0 else (k, k))], dtype=np.int64)
        # The root's constants as 0-d arrays (a ufunc takes them faster than Python ints), and its doubled children.
        self.root_step = (*(np.array(value, dtype=np.int64) for value in columns[self.root]),
                          np.array([2 * right[self.root], 2 * left[self.root]], dtype=np.int64))
        self.first_leaf = np.array(2 * sources, dtype=np.int64)  # doubled numbers below it are leaves
        # How deep each leaf is, and ``deeper[L]``: the share of the arrivals (by weight) still descending below
        # depth ``L``, which tells `descend_many` when dropping the finished rows pays off.
        leaf_depth = [0] * sources
        stack = [(self.root, 0)]
        while stack:
            node, level = stack.pop()
            if left[node] >= 0:
                stack += [(left[node], level + 1), (right[node], level + 1)]
            else:
                leaf_depth[node] = level
        weighing = [k for k in range(sources) if units[k] > 0]
        self.depth = max(leaf_depth[k] for k in weighing)
        self.shallowest_leaf = min(leaf_depth[k] for k in weighing)
        whole = sum(units)
        self.deeper = [sum(units[k] for k in weighing if leaf_depth[k] > level) / whole
                       for level in range(self.depth + 1)]

    def descend(self, arrival: int, node: int = -1) -> tuple[int, int]:
        """``(source, how many earlier arrivals went to that source)`` for the ``arrival``-th position.

        A node whose left side weighs ``a`` of ``d`` sends arrival ``j`` left when ``(j·a + h) // d`` steps up
        from ``j`` to ``j + 1``: with ``before, rest = divmod(j·a + h, d)``, exactly when ``rest + a >= d``."""
        nodes = self.nodes
        left, right, a, d, h = nodes[self.root if node < 0 else node]  # or from ``node`` on, if given
        while left >= 0:
            before, rest = divmod(arrival * a + h, d)
            if rest + a >= d:
                left, right, a, d, h = nodes[left]
                arrival = before
            else:
                left, right, a, d, h = nodes[right]
                arrival -= before
        return right, arrival  # a leaf's entry holds its own number as ``right``

    def descend_many(self, arrivals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`descend` for an int64 array of arrivals, one tree level per step for all of them.

        Nodes are numbered twice over in the step (``2·k``): a step gathers the constants of every row's node with
        one lookup in ``step_table``, and the child taken is one lookup of ``2·k + went_left`` in ``step_child``; a
        leaf is a fixed point of a step. The rows that reached a leaf are dropped (their results written out) when
        the share of the arrivals expected to be still descending has halved, and the last few finish one by one
        (cheaper than more levels of NumPy calls)."""
        count = len(arrivals)
        if not self.inner[self.root] or not count:
            return np.full(arrivals.shape, self.root, dtype=np.int64), arrivals.copy()
        a, h, d, b, children = self.root_step  # the root's step, with its constants as 0-d arrays
        scaled = arrivals * a
        scaled += h
        before, rest = np.divmod(scaled, d)
        went_left = rest >= b
        node = children.take(went_left.view(np.uint8))
        arrival = np.subtract(arrivals, before)
        np.putmask(arrival, went_left, before)  # elementwise (a masked copyto is 2-4x slower)
        table, child_of, deeper, depth = self.step_table, self.step_child, self.deeper, self.depth
        first_leaf = self.first_leaf
        nodes: Any = None  # the results (doubled), written when finished rows are dropped
        found: Any = None
        active: Any = None  # which rows of the results ``node`` and ``arrival`` hold (None: all, in order)
        rows = count
        for level in range(1, depth + 1):  # the rows at depth ``level``: finished ones dropped, then a step
            if level >= self.shallowest_leaf:
                expected = count * deeper[level]  # rows expected to be still descending
                if level == depth or expected <= _STRAGGLERS or expected <= _DROP_SHARE * rows:
                    if active is None:
                        nodes, found = node, arrival
                    else:
                        nodes[active] = node
                        found[active] = arrival
                    inner = (node >= first_leaf).nonzero()[0]
                    rows = len(inner)
                    if not rows:
                        break
                    active = inner if active is None else active.take(inner)
                    node, arrival = node.take(inner), arrival.take(inner)
                    if rows <= _STRAGGLERS:  # the last few go on one by one
                        descend = self.descend
                        for row, at, drawn in zip(active.tolist(), node.tolist(), arrival.tolist()):
                            k, found[row] = descend(drawn, at >> 1)
                            nodes[row] = 2 * k
                        break
            constants = table.take(node, axis=1)
            scaled = arrival * constants[0]
            scaled += constants[1]
            before, rest = np.divmod(scaled, constants[2])
            went_left = rest >= constants[3]
            node = child_of.take(node + went_left)
            arrival -= before
            np.putmask(arrival, went_left, before)
        else:  # not reached: at ``depth`` every row is at a leaf, dropped by the check at that level
            raise AssertionError("a blend's tree walk went past the tree's depth")
        return nodes >> 1, found

    def counts(self, arrivals: int, sources: int) -> list[int]:
        """How many of the first ``arrivals`` positions go to each source."""
        result = [0] * sources
        stack = [(self.root, arrivals)]
        while stack:
            node, count = stack.pop()
            if self.left[node] < 0:
                result[node] = count
                continue
            a, d, h = int(self.left_weight[node]), int(self.total[node]), int(self.half[node])
            went_left = (count * a + h) // d
            stack += [(int(self.left[node]), went_left), (int(self.right[node]), count - went_left)]
        return result


def _check_weights(weights: Any, sources: int, what: str) -> list[float]:
    if isinstance(weights, (str, bytes, Mapping)) or not hasattr(weights, "__iter__"):
        kind = "a dict" if isinstance(weights, Mapping) else repr(weights)
        raise TypeError(f"{what} must be a sequence of numbers, one per source, got {kind}")
    values = []
    for k, w in enumerate(weights):
        if isinstance(w, (bool, np.bool_, str, bytes)) or not hasattr(w, "__float__"):
            raise TypeError(f"{what}: the weight of source {k} must be a number, got {w!r}")
        values.append(float(w))
    if len(values) != sources:
        raise ValueError(f"{what} has {len(values)} weights for {sources} sources")
    for k, value in enumerate(values):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{what}: the weight of source {k} must be a finite number >= 0, got {value}")
    if not sum(values) > 0:
        raise ValueError(f"{what}: at least one weight must be positive, got {values}")
    return values


def _quantize(weights: Sequence[float]) -> list[int]:
    """Integer units out of about 2**23 (largest remainders), at least one for each positive weight."""
    largest = max(weights)
    weights = [w / largest for w in weights]  # first to about 1: subnormal weights would overflow the scale
    scale = (1 << QUANTUM_BITS) / sum(weights)
    exact = [w * scale for w in weights]
    units = [int(x) for x in exact]
    short = (1 << QUANTUM_BITS) - sum(units)
    for k in sorted(range(len(weights)), key=lambda j: units[j] - exact[j])[:max(short, 0)]:
        units[k] += 1
    return [max(unit, 1) if w > 0 else 0 for unit, w in zip(units, weights)]


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be an int, got {value!r}")
    return int(value)


def _reopen_source(recipe: Any) -> Any:
    if isinstance(recipe, str):
        from mmap_ninja.containers.generic import open_existing

        return open_existing(recipe, mode="r")
    return pickle.loads(recipe)


class BlendedMap:
    """A read-only map over several maps mixed by weight (see `blend`, which builds it, and the module's notes).

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import blend, np_from_ndarray
        >>> evens = np_from_ndarray("evens", np.arange(0, 20, 2), overwrite=True)
        >>> odds = np_from_ndarray("odds", np.arange(1, 20, 2), overwrite=True)
        >>> halves = blend([evens, odds], [0.5, 0.5], seed=0)
        >>> len(halves), halves.counts(20)
        (20, [10, 10])
    """

    def __init__(self, recipes: Sequence[Any], lengths: Sequence[int], segments: Sequence[tuple[int, list[float]]],
                 *, seed: int, length: int, max_open_sources: int, shuffle: bool = True,
                 opened: Optional[dict[int, Any]] = None):
        self._recipes = list(recipes)
        self._shuffle = bool(shuffle)
        self._lengths = [int(n) for n in lengths]
        self._seed = int(seed)
        self._length = int(length)
        self._max_open = int(max_open_sources)
        self._schedule = [(int(start), list(weights)) for start, weights in segments]
        self._starts = [start for start, _ in self._schedule]
        sources = len(self._recipes)
        self._trees = [_Tree(_quantize(weights)) for _, weights in self._schedule]
        # How many draws each source had before each segment, so its counter carries over at a change.
        before = [0] * sources
        self._before: list[list[int]] = []
        for k, tree in enumerate(self._trees):
            self._before.append(before)
            if k + 1 < len(self._trees):
                span = self._starts[k + 1] - self._starts[k]
                before = [b + c for b, c in zip(before, tree.counts(span, sources))]
        self._before_arrays = [np.array(b, dtype=np.int64) for b in self._before]
        self._lengths_array = np.array(self._lengths, dtype=np.int64)
        self._starts_array = np.array(self._starts, dtype=np.int64)
        self._family = OrderFamily(self._lengths, [self._source_seed(k) for k in range(sources)], shuffle=self._shuffle)
        self._cached = False  # whether the keys of every (source, source epoch) the blend reaches are cached
        if self._shuffle and self._length:  # every (source, source epoch) the blend reaches, if they are not too many
            reached = self.counts(self._length)
            self._cached = self._family.cache_keys([(c - 1) // n if c and n else -1
                                                    for c, n in zip(reached, self._lengths)])
        # Each source's order of the source epoch read last: consecutive reads of a source mostly share its epoch.
        self._current: list[Optional[Order]] = [None] * sources
        self._open: OrderedDict[int, Any] = OrderedDict()
        for k, source in (opened or {}).items():
            if len(self._open) < self._max_open:
                self._open[k] = source
        self._lock = threading.Lock()
        self._orders: OrderedDict[tuple[int, int], Order] = OrderedDict()
        self._batch_class: Any = None

    # -------------------------------------------------------------- what it is

    def __len__(self) -> int:
        return self._length

    @property
    def num_sources(self) -> int:
        """How many sources the blend mixes (weight 0 included)."""
        return len(self._recipes)

    @property
    def source_lengths(self) -> list[int]:
        """Each source's length, as taken when the blend was built."""
        return list(self._lengths)

    @property
    def schedule(self) -> list[tuple[int, list[float]]]:
        """``[(start position, weights), ...]``: the weights in force from each position on (the first at 0)."""
        return [(start, list(weights)) for start, weights in self._schedule]

    @property
    def seed(self) -> int:
        """The seed of the sources' shuffled orders."""
        return self._seed

    def __repr__(self) -> str:
        return (f"BlendedMap({self.num_sources} sources, length={self._length}, seed={self._seed}, "
                f"weights={self._schedule[0][1]}" + (f", {len(self._schedule) - 1} changes)"
                                                     if len(self._schedule) > 1 else ")"))

    # -------------------------------------------------------------- which source, which sample

    def _source_seed(self, k: int) -> int:
        """The seed of source ``k``'s orders (modulo 2**64, as `Order` takes it): ``(seed << 32) + k`` for a seed in
        ``range(2**32)``; any other seed (negative, or up to 64 bits) is hashed with ``k``, since shifting it would
        give two seeds that differ by a multiple of 2**32 the same orders."""
        seed, mask = self._seed, (1 << 64) - 1
        if 0 <= seed < 1 << 32:
            return (seed << 32) + k
        return _mix64((_mix64(seed & mask) + (k + 1) * 0x9E3779B97F4A7C15) & mask)

    def _order(self, k: int, epoch: int) -> Order:
        key = (k, epoch)
        order = self._orders.get(key)
        if order is None:
            order = Order(self._lengths[k], seed=self._source_seed(k), epoch=epoch, shuffle=self._shuffle)
            self._orders[key] = order
            if len(self._orders) > _ORDER_CACHE:
                self._orders.popitem(last=False)
        return order

    def _position(self, index: Any) -> int:
        if type(index) is not int:
            if isinstance(index, (bool, np.bool_)):
                raise TypeError("a map cannot be indexed by a boolean scalar; use a boolean mask of the map's length")
            try:
                index = operator.index(index)
            except TypeError:
                raise TypeError(f"a blend is indexed by an int here, got {index!r} ({type(index).__name__})") from None
        position = index + self._length if index < 0 else index
        if not 0 <= position < self._length:
            raise IndexError(f"index {index} is out of range for a blend of length {self._length}")
        return int(position)

    def _positions(self, indices: Any) -> np.ndarray:
        """`resolve_positions` for a batch, with a shortcut for what a sampler hands over: a 1-D int64 array
        already in ``range(len(self))`` is used as it is (two reductions instead of the general checks and copy;
        nothing downstream writes to it)."""
        if (type(indices) is np.ndarray and indices.dtype == np.int64 and indices.ndim == 1 and indices.size
                and int(np.minimum.reduce(indices)) >= 0 and int(np.maximum.reduce(indices)) < self._length):
            return indices
        return resolve_positions(indices, self._length)

    def source_of(self, index: Any) -> tuple[int, int]:
        """``(k, local)``: position ``index`` reads ``sources[k][local]``."""
        return self._locate(self._position(index))

    def _locate(self, position: int) -> tuple[int, int]:
        """`source_of` for a position in ``range(len(self))``, with Python ints only (no NumPy scalars)."""
        segment = bisect_right(self._starts, position) - 1 if len(self._starts) > 1 else 0
        k, drawn = self._trees[segment].descend(position - self._starts[segment])
        draw = self._before[segment][k] + drawn
        n = self._lengths[k]
        epoch, within = divmod(draw, n) if draw >= n else (0, draw)
        order = self._current[k]
        if order is None or order.epoch != epoch:
            order = self._current[k] = self._order(k, epoch)
        return k, order._index(within)

    def sources_of(self, indices: Any) -> tuple[np.ndarray, np.ndarray]:
        """`source_of` for many positions (any indexing form but an int): two int64 arrays, sources and locals."""
        return self._sources_of(self._positions(indices))

    def _sources_of(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        starts = self._starts
        if len(starts) == 1:
            sources, draws = self._trees[0].descend_many(positions)
        else:
            first = bisect_right(starts, int(positions.min())) - 1 if len(positions) else 0
            last = bisect_right(starts, int(positions.max())) - 1 if len(positions) else 0
            if first == last:  # every position in one segment of the schedule (as a sampler's batches mostly are)
                sources, draws = self._trees[first].descend_many(positions - starts[first] if first else positions)
                if first:
                    draws += self._before_arrays[first].take(sources)
            else:
                sources = np.empty(len(positions), dtype=np.int64)
                draws = np.empty(len(positions), dtype=np.int64)
                segment_of = np.searchsorted(self._starts_array, positions, side="right") - 1
                for segment in np.unique(segment_of).tolist():
                    rows = np.flatnonzero(segment_of == segment)
                    ks, drawn = self._trees[segment].descend_many(positions[rows] - starts[segment])
                    sources[rows] = ks
                    draws[rows] = self._before_arrays[segment][ks] + drawn
        epochs, within = np.divmod(draws, self._lengths_array.take(sources))
        if self._cached and len(positions):
            return sources, self._family.take_cached(sources, epochs, within)
        return sources, self._family.take(sources, epochs, within)

    def counts(self, prefix: int) -> list[int]:
        """How many of the first ``prefix`` positions read each source."""
        prefix = min(max(_as_int(prefix, "prefix"), 0), self._length)
        segment = bisect_right(self._starts, prefix) - 1 if prefix else 0
        drawn = self._trees[segment].counts(prefix - self._starts[segment], self.num_sources)
        return [b + c for b, c in zip(self._before[segment], drawn)]

    # -------------------------------------------------------------- sources

    def source(self, k: int) -> Any:
        """Source ``k``, opened if it is not (and counted in the open-sources budget)."""
        if type(k) is not int or not 0 <= k < len(self._recipes):
            k = _as_int(k, "a source number")
            if not 0 <= k < len(self._recipes):
                raise IndexError(f"source {k} is out of range: the blend has {len(self._recipes)} sources")
        found = self._open.get(k)
        if found is not None:
            try:  # noqa: SIM105 - contextlib.suppress would cost a context manager on every read
                self._open.move_to_end(k)
            except KeyError:  # another thread evicted it meanwhile: it is still usable
                pass
            return found
        with self._lock:
            found = self._open.get(k)
            if found is None:
                found = _reopen_source(self._recipes[k])
                if len(found) < self._lengths[k]:
                    raise ValueError(f"source {k} of the blend holds {len(found)} samples now, but it held "
                                     f"{self._lengths[k]} when the blend was built")
                self._open[k] = found
                while len(self._open) > self._max_open:
                    self._open.popitem(last=False)  # dropped, not closed: another thread may still read it
            return found

    @property
    def open_sources(self) -> int:
        """How many sources are open now (at most ``max_open_sources``)."""
        return len(self._open)

    # -------------------------------------------------------------- reading

    def __getitem__(self, index: Any) -> Any:
        """``m[i]`` is one sample; a slice, a sequence of ints or a boolean mask gives a list of samples."""
        if type(index) is int and 0 <= index < self._length:
            k, local = self._locate(index)
        elif type(index) is not int and not isinstance(index, (np.integer, numbers.Integral)) and not (
                isinstance(index, np.ndarray) and index.ndim == 0):
            try:  # a 0-d tensor reads one sample, as every map reads it; other indices give lists
                position = None if isinstance(index, np.ndarray) else operator.index(index)
            except TypeError:
                position = None
            if position is None:
                return self.__getitems__(index)
            k, local = self._locate(self._position(position))
        else:
            k, local = self._locate(self._position(index))
        found = self._open.get(k)
        if found is None:
            return self.source(k)[local]
        if next(reversed(self._open), k) != k:  # least recently used first out: mark it used (if not already last)
            try:  # noqa: SIM105 - contextlib.suppress would cost a context manager on every read
                self._open.move_to_end(k)
            except KeyError:  # another thread evicted it meanwhile: it is still usable
                pass
        return found[local]

    def _grouped(self, positions: np.ndarray) -> tuple[np.ndarray, list[int], list[int], np.ndarray]:
        """The positions grouped by source: ``(order, touched, bounds, local)`` where ``order`` lists the rows by
        source (rows of one source in increasing order), ``touched`` the sources read, and the rows
        ``order[bounds[j]:bounds[j + 1]]`` read ``local[bounds[j]:bounds[j + 1]]`` of source ``touched[j]``."""
        sources, local = self._sources_of(positions)
        # A stable sort of small integers is a radix sort: sort the sources as 16-bit numbers when they fit.
        keys = sources.astype(np.uint16) if self.num_sources <= 1 << 16 else sources
        order = keys.argsort(kind="stable")
        counts = np.bincount(sources, minlength=self.num_sources)
        touched = counts.nonzero()[0]
        bounds = [0, *counts.take(touched).cumsum().tolist()]
        return order, touched.tolist(), bounds, local.take(order)

    def _groups(self, positions: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """``(source, rows, local indices)`` for each source the positions read, the rows in increasing order."""
        if not len(positions):
            return []
        order, touched, bounds, local = self._grouped(positions)
        return [(k, order[start:end], local[start:end]) for k, start, end in zip(touched, bounds, bounds[1:])]

    def _per_source(self, touched: list[int], bounds: list[int], local: np.ndarray) -> Iterator[tuple[Any, Any]]:
        """``(source, its local rows)`` for each source a grouped batch touches (`_grouped`), opening it if needed."""
        opened = self._open.get
        start = 0
        for k, end in zip(touched, bounds[1:]):
            source = opened(k)
            yield (self.source(k) if source is None else source), local[start:end]
            start = end

    def __getitems__(self, indices: Any) -> list[Any]:
        """The samples at ``indices`` as a list: one batched read per source touched."""
        positions = self._positions(indices)
        if not len(positions):
            return []
        order, touched, bounds, local = self._grouped(positions)
        by_source: list[Any] = []  # the samples in the order of ``order``
        extend = by_source.extend
        for source, rows in self._per_source(touched, bounds, local):
            getitems = getattr(source, "__getitems__", None)
            extend(getitems(rows) if getitems is not None else [source[i] for i in rows.tolist()])
        if len(positions) == 1:
            return by_source
        where = np.empty(len(order), dtype=np.int64)  # where each row's sample is in ``by_source``
        where[order] = np.arange(len(order), dtype=np.int64)
        return list(operator.itemgetter(*where.tolist())(by_source))

    def _batch_kind(self) -> Any:
        """The class whose ``get_batch`` and ``combine_batches`` serve the blend: every source must have the same
        kind and schema (as `mmap_ninja.merge` requires)."""
        if self._batch_class is not None:
            return self._batch_class
        from mmap_ninja.containers.sharded import ShardedMap, _same_schema, _schema

        first: Any = None
        batch_class: Any = None
        for k in range(self.num_sources):
            source = self.source(k)
            if isinstance(source, ShardedMap):
                header: Any = source._header
                cls: Any = source.shard_class
            else:
                store = getattr(source, "_store", None)
                header = None if store is None else store.header
                cls = type(source)
            if header is None or getattr(cls, "get_batch", None) is None:
                raise TypeError(f"source {k} of the blend ({type(source).__name__}) has no get_batch(); index the "
                                f"blend instead")
            schema = _schema(header.kind, header.attrs, header.requires)
            if first is None:
                first, batch_class = schema, cls
            elif not _same_schema(first, schema):
                raise TypeError(f"get_batch needs sources of one kind and schema: source 0 has {first}, source {k} "
                                f"has {schema}")
        self._batch_class = batch_class
        return batch_class

    def get_batch(self, indices: Any, *args: Any, **options: Any) -> Any:
        """The samples at ``indices`` as one batch, as the sources' own ``get_batch`` gives it (they must share
        kind and schema); each source touched reads its rows with one ``get_batch``."""
        cls = self._batch_kind()
        arguments: dict[str, Any] = {}
        if args or options:
            from mmap_ninja.containers.sharded_map import _batch_arguments

            arguments = _batch_arguments(cls.get_batch, indices, args, options)
        positions = self._positions(indices)
        if not len(positions):
            return self.source(0).get_batch(positions, **arguments)
        order, touched, bounds, local = self._grouped(positions)
        if len(touched) == 1:
            return self.source(touched[0]).get_batch(local, **arguments)  # one source: rows in their order
        per_source = {name: value for name, value in arguments.items() if name != "out"}
        arrays: list[Any] = []
        append = arrays.append
        for source, rows in self._per_source(touched, bounds, local):
            append(source.get_batch(rows, **per_source) if per_source else source.get_batch(rows))
        if not arguments and set(map(type, arrays)) == {np.ndarray} and len(set(map(_DTYPE_OF, arrays))) == 1:
            # Arrays of one dtype: if their samples have one shape too (else concatenate refuses them), what
            # combine_batches would stack, as one gather of their rows in the batch's order (a take is about twice
            # as fast as a scatter of rows).
            try:
                stacked: Optional[np.ndarray] = np.concatenate(arrays)
            except ValueError:
                stacked = None
            if stacked is not None:
                inverse = np.empty(len(order), dtype=np.int64)  # where each position's row is in the parts
                inverse[order] = np.arange(len(order), dtype=np.int64)
                result: np.ndarray = stacked.take(inverse, axis=0)
                return result
        parts = [(order[start:end], part) for start, end, part in zip(bounds, bounds[1:], arrays)]
        return cls.combine_batches(parts, positions, arguments)

    def __iter__(self) -> Iterator[Any]:
        for start in range(0, self._length, _ITER_CHUNK):
            yield from self.__getitems__(range(start, min(start + _ITER_CHUNK, self._length)))

    # -------------------------------------------------------------- processes

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_blend, (ORDER_VERSION, self._recipes, self._lengths, self._schedule, self._seed, self._length,
                                self._max_open, self._shuffle)

    def close(self) -> None:
        """Drop every open source (they are reopened on the next read)."""
        with self._lock:
            self._open.clear()

    def __enter__(self) -> BlendedMap:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _rebuild(*parameters: Any) -> BlendedMap:
    """What pickles of order version 1 name (``mmap_ninja.blend._rebuild``): refused, never another order."""
    raise ValueError(older_order_pickle_message("BlendedMap", 1))


def _rebuild_blend(version: int, recipes: list[Any], lengths: list[int], schedule: list[tuple[int, list[float]]],
                   seed: int, length: int, max_open: int, shuffle: bool) -> BlendedMap:
    """A `BlendedMap` back from its pickle (``version``: the order algorithm of the mmap_ninja that pickled it; an
    older one loads only if its sources' orders are this version's)."""
    if not order_version_unchanged(version, lengths, shuffle):
        raise ValueError(older_order_pickle_message("BlendedMap", version))
    return BlendedMap(recipes, lengths, schedule, seed=seed, length=length, max_open_sources=max_open,
                      shuffle=shuffle)


def blend(sources: Sequence[Any], weights: Sequence[float], *, seed: int = 0, length: Optional[int] = None,
          schedule: Optional[Sequence[tuple[int, Sequence[float]]]] = None,
          max_open_sources: int = DEFAULT_MAX_OPEN_SOURCES, shuffle: bool = True) -> BlendedMap:
    """A read-only map mixing ``sources`` (maps, or paths of maps) by ``weights`` (see `BlendedMap`).

    ``length`` defaults to the sum of the sources' lengths. ``schedule=[(position, weights), ...]`` (increasing
    positions) changes the weights from each position on. ``seed`` (any int, counted modulo 2**64) selects the
    sources' shuffled orders (``shuffle=False`` reads each source in its stored order, cycling). Each source of
    positive weight must be non-empty. At most ``max_open_sources`` sources are kept open.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import blend, np_from_ndarray
        >>> web = np_from_ndarray("web", np.arange(100), overwrite=True)
        >>> books = np_from_ndarray("books", np.arange(100, 110), overwrite=True)
        >>> mixed = blend([web, books], [0.8, 0.2], seed=0, length=50)
        >>> len(mixed), mixed.counts(50), mixed.source_of(0)
        (50, [40, 10], (0, 42))
    """
    if isinstance(sources, (str, bytes, os.PathLike)) or not isinstance(sources, Sequence):
        raise TypeError("blend() takes a sequence of maps (or paths of maps)")
    if not sources:
        raise ValueError("blend() needs at least one source")
    seed = _as_int(seed, "seed")
    max_open_sources = _as_int(max_open_sources, "max_open_sources")
    if max_open_sources < 1:
        raise ValueError(f"max_open_sources must be >= 1, got {max_open_sources}")
    recipes: list[Any] = []
    opened: dict[int, Any] = {}
    lengths: list[int] = []
    for k, source in enumerate(sources):
        if isinstance(source, (str, os.PathLike)):
            recipe: Any = os.path.abspath(os.fspath(source))
            source = _reopen_source(recipe)
        else:
            try:
                recipe = pickle.dumps(source)
            except Exception as e:
                raise TypeError(f"source {k} of the blend ({type(source).__name__}) cannot be pickled, so the blend "
                                f"could not reopen it: {e}") from None
        try:
            lengths.append(len(source))
        except TypeError:
            raise TypeError(f"source {k} of the blend ({type(source).__name__}) has no length") from None
        recipes.append(recipe)
        opened[k] = source
    first = _check_weights(weights, len(sources), "weights")
    segments: list[tuple[int, list[float]]] = [(0, first)]
    total = sum(lengths) if length is None else _as_int(length, "length")
    if not 0 <= total < MAX_LENGTH:
        raise ValueError(f"the blend's length must be in [0, 2**39), got {total}")
    for entry, pair in enumerate(schedule or ()):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise TypeError(f"schedule entry {entry} must be a (position, weights) pair, got {pair!r}")
        at, changed = pair
        at = _as_int(at, "a schedule position")
        if not segments[-1][0] < at or at > total:
            if at == 0 and entry == 0:
                segments[0] = (0, _check_weights(changed, len(sources), "schedule weights at position 0"))
                continue
            raise ValueError(f"schedule positions must increase and lie in [0, {total}], got {at} after "
                             f"{segments[-1][0]}")
        segments.append((at, _check_weights(changed, len(sources), f"schedule weights at position {at}")))
    for start, values in segments:
        for k, value in enumerate(values):
            if value > 0 and lengths[k] == 0 and total > start:
                raise ValueError(f"source {k} of the blend is empty but has weight {value} (from position {start})")
    return BlendedMap(recipes, lengths, segments, seed=seed, length=total, max_open_sources=max_open_sources,
                      shuffle=shuffle, opened=opened)
