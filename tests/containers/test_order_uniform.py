"""Order version 3: small orders are (statistically) uniform over permutations, larger ones kept version 2's order.

The statistical tests are deterministic: a fixed range of seeds (or epochs), so each chi-square is one fixed number.
Their bounds sit about six standard deviations above the chi-square's mean under uniformity; version 2 of the
order went far past them (the values are in the tests' comments).
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmap_ninja import Order
from mmap_ninja.containers.order import ORDER_VERSION, SMALL_ORDER_MAX, OrderFamily, take_many


def _orders(n: int, seeds: np.ndarray, epochs: np.ndarray, positions: tuple[int, ...]) -> np.ndarray:
    """``[[Order(n, seed=s, epoch=e)[p] for p in positions] for s, e in zip(seeds, epochs)]``, vectorized."""
    count, width = len(seeds), len(positions)
    values = take_many(np.full(count * width, n, dtype=np.int64), np.repeat(seeds, width), np.repeat(epochs, width),
                       np.tile(np.array(positions, dtype=np.int64), count))
    return values.reshape(count, width)


def _chi_square(codes: np.ndarray, cells: int) -> float:
    """Pearson's chi-square of ``codes`` (ints in ``range(cells)``) against the uniform distribution."""
    counts = np.bincount(codes, minlength=cells).astype(np.float64)
    expected = len(codes) / cells
    return float(((counts - expected) ** 2).sum() / expected)


def _bound(cells: int) -> float:
    """Six standard deviations above the chi-square's mean (``cells - 1`` degrees of freedom)."""
    freedom = cells - 1
    return freedom + 6 * math.sqrt(2 * freedom)


def _permutation_chi_square(n: int, seeds: np.ndarray, epochs: np.ndarray) -> float:
    values = _orders(n, seeds, epochs, tuple(range(n)))
    assert (np.sort(values, axis=1) == np.arange(n)).all()
    codes = values @ (n ** np.arange(n, dtype=np.int64))  # a code per permutation (base n), then ranked densely
    _, dense = np.unique(codes, return_inverse=True)
    assert int(dense.max()) < math.factorial(n)
    return _chi_square(dense.reshape(-1), math.factorial(n))


# Chi-squares (seeds range(100 * n!), epoch 0), version 2 -> version 3 (bound): n=2 0.0 -> 0.3 (9.5), n=3 13.0 ->
# 8.3 (24.0), n=4 71.9 -> 18.1 (63.7), n=5 4,265 -> 124.1 (211.6), n=6 139,531 -> 733.5 (946.5); over the epochs
# 0..11,999 of seed 7 at n=5: 4,507 -> 101.2 (211.6); n=8 over 10**5 seeds: 174,873 -> 40,011 (42,023).
@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_small_orders_are_uniform_over_permutations_across_seeds(n: int) -> None:
    cells = math.factorial(n)
    seeds = np.arange(100 * cells, dtype=np.int64)
    assert _permutation_chi_square(n, seeds, np.zeros_like(seeds)) < _bound(cells)


def test_small_orders_are_uniform_over_permutations_across_epochs() -> None:
    epochs = np.arange(12_000, dtype=np.int64)
    assert _permutation_chi_square(5, np.full_like(epochs, 7), epochs) < _bound(120)


def test_eight_indices_are_uniform_over_their_40320_permutations() -> None:
    seeds = np.arange(100_000, dtype=np.int64)
    assert _permutation_chi_square(8, seeds, np.zeros_like(seeds)) < _bound(40_320)


# Chi-squares over 20,000 seeds, version 2 -> version 3 (bound): n=9 positions (0, 3, 6) 248.5 -> 5.6 (24.0), n=17
# (0, 4, 8) 86.4 -> 7.0 (24.0), (0, 1, 4, 5) 84.2 -> 29.4 (63.7): positions in one column of version 2's 3x3 and
# 5x4 grids kept their relative order far too often. n=300 (0, 1, 2): 5.0 -> 13.2 (24.0).
@pytest.mark.parametrize(("n", "positions"), [(9, (0, 3, 6)), (17, (0, 4, 8)), (17, (0, 1, 4, 5)), (300, (0, 1, 2))])
def test_the_relative_order_of_a_few_positions_is_uniform(n: int, positions: tuple[int, ...]) -> None:
    seeds = np.arange(20_000, dtype=np.int64)
    values = _orders(n, seeds, np.zeros_like(seeds), positions)
    ranks = np.argsort(np.argsort(values, axis=1), axis=1)
    codes = ranks @ (len(positions) ** np.arange(len(positions), dtype=np.int64))
    _, dense = np.unique(codes, return_inverse=True)
    assert _chi_square(dense.reshape(-1), math.factorial(len(positions))) < _bound(math.factorial(len(positions)))


BIJECTION_SIZES = [0, 1, 2, 3, 4, 5, 7, 8, 13, 31, 64, 127, 251, 256, 257, 509, 1000, 1021, 1023, SMALL_ORDER_MAX,
                   SMALL_ORDER_MAX + 1, 1031, 1536, 2047, 2048, 4099]


@pytest.mark.parametrize("n", BIJECTION_SIZES)
def test_every_order_is_a_bijection_and_take_equals_each_position(n: int) -> None:
    for seed, epoch in [(0, 0), (1, 5), (-3, 2**40), (2**70, 1)]:
        order = Order(n, seed=seed, epoch=epoch)
        values = order.take(np.arange(n))
        assert values.dtype == np.int64
        assert np.array_equal(np.sort(values), np.arange(n))
        assert [order[k] for k in range(n)] == values.tolist()
        assert all(type(order[k]) is int for k in range(min(n, 3)))
        if n:
            one = order.take(np.int64(n - 1))
            assert type(one) is np.ndarray and one.shape == () and int(one) == order[n - 1]
        assert Order(n, seed=seed, epoch=epoch, shuffle=False).take(np.arange(n)).tolist() == list(range(n))


def test_small_orders_differ_by_seed_and_epoch() -> None:
    orders = {tuple(Order(50, seed=seed, epoch=epoch).take(np.arange(50)).tolist())
              for seed in range(5) for epoch in range(5)}
    assert len(orders) == 25 and tuple(range(50)) not in orders


def test_many_small_and_large_orders_in_one_call_equal_each_order() -> None:
    rng = np.random.default_rng(5)
    lengths = [1, 2, 3, 10, 10, 100, SMALL_ORDER_MAX, SMALL_ORDER_MAX + 1, 5000, 10**9]
    seeds = [4, 4, 4, 4, 5, 6, 7, 8, 9, 10]  # one seed for several lengths: still each length's own order
    family = OrderFamily(lengths, seeds)
    members = rng.integers(0, len(lengths), 4000)
    epochs = rng.integers(0, 50, 4000)
    positions = (rng.random(4000) * np.array(lengths)[members]).astype(np.int64)
    want = [Order(lengths[k], seed=seeds[k], epoch=e)[p]
            for k, e, p in zip(members.tolist(), epochs.tolist(), positions.tolist())]
    assert family.take(members, epochs, positions).tolist() == want
    assert family.cache_keys([49] * len(lengths))
    assert family.take_cached(members, epochs, positions).tolist() == want
    small = Order(37, seed=5)
    assert small.take_in_epochs(epochs, positions % 37).tolist() == [
        small.with_epoch(e)[p] for e, p in zip(epochs.tolist(), (positions % 37).tolist())]


def test_orders_above_the_small_bound_are_version_2s() -> None:
    # Values computed by version 2 (mmap_ninja at 671356d): version 3 left orders above SMALL_ORDER_MAX unchanged,
    # which is why states and pickles of version 2 are still accepted for them.
    assert SMALL_ORDER_MAX == 1024 and ORDER_VERSION == 3
    assert Order(1025, seed=3, epoch=1).take([0, 1, 2, 1024]).tolist() == [368, 1006, 442, 771]
    assert Order(5000, seed=-9, epoch=7).take([0, 1, 4999]).tolist() == [4947, 1634, 3329]
    assert Order(2**20 + 3, seed=11).take([0, 5, 2**20 + 2]).tolist() == [749735, 806841, 250088]


class _Version2Order:
    """Pickles as an `Order` pickled by order version 2 did (the same callable, version 2)."""

    def __init__(self, n: int, seed: int, epoch: int, shuffle: bool):
        self.parameters = (n, seed, epoch, shuffle)

    def __reduce__(self) -> tuple[Any, ...]:
        from mmap_ninja.containers.order import _rebuild_order

        return (_rebuild_order, (2, *self.parameters))


@pytest.mark.parametrize(("n", "shuffle"), [(SMALL_ORDER_MAX + 1, True), (10**9, True), (1, True), (0, True),
                                            (10, False)])
def test_version_2_order_pickles_load_where_the_order_did_not_change(n: int, shuffle: bool) -> None:
    order = pickle.loads(pickle.dumps(_Version2Order(n, 3, 4, shuffle)))
    assert order == Order(n, seed=3, epoch=4, shuffle=shuffle)


@pytest.mark.parametrize("n", [2, 10, SMALL_ORDER_MAX])
def test_version_2_order_pickles_of_small_orders_are_refused(n: int) -> None:
    with pytest.raises(ValueError, match=r"order version 2.*order version 3.*refused"):
        pickle.loads(pickle.dumps(_Version2Order(n, 3, 4, True)))


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, SMALL_ORDER_MAX + 40), min_size=1, max_size=6),
       seed=st.integers(-(2**63), 2**63 - 1), data=st.data())
def test_property_families_and_epochs_agree_with_each_order(lengths: list[int], seed: int, data: Any) -> None:
    seeds = [seed + k for k in range(len(lengths))]
    count = data.draw(st.integers(1, 300))
    members = np.array(data.draw(st.lists(st.integers(0, len(lengths) - 1), min_size=count, max_size=count)))
    epochs = np.array(data.draw(st.lists(st.integers(0, 2**40), min_size=count, max_size=count)))
    fractions = np.array(data.draw(st.lists(st.floats(0, 1, exclude_max=True), min_size=count, max_size=count)))
    positions = (fractions * np.array(lengths)[members]).astype(np.int64)
    want = [Order(lengths[k], seed=seeds[k], epoch=e)[p]
            for k, e, p in zip(members.tolist(), epochs.tolist(), positions.tolist())]
    assert OrderFamily(lengths, seeds).take(members, epochs, positions).tolist() == want
    first = Order(lengths[0], seed=seeds[0])
    mine = members == 0
    assert first.take_in_epochs(epochs[mine], positions[mine]).tolist() == [
        value for value, keep in zip(want, mine.tolist()) if keep]


@pytest.mark.parametrize("cache_entries", [1 << 21, 100])  # 100: the cache is emptied again and again
def test_consecutive_batches_of_a_family_read_kept_tables_and_equal_each_order(cache_entries: int) -> None:
    lengths, seeds = [7, 300, SMALL_ORDER_MAX, 5000], [1, 2, 3, 4]
    family = OrderFamily(lengths, seeds)
    family.table_cache_entries = cache_entries
    rng = np.random.default_rng(8)
    draws = np.zeros(len(lengths), dtype=np.int64)
    for _ in range(30):  # as a blend reads: each member's draws go on from batch to batch, through its epochs
        members = rng.integers(0, len(lengths), 200)
        counts = np.bincount(members, minlength=len(lengths))
        draw = np.empty(200, dtype=np.int64)
        for k in range(len(lengths)):
            draw[members == k] = draws[k] + np.arange(counts[k])
        draws += counts
        epochs, positions = np.divmod(draw, np.array(lengths)[members])
        want = [Order(lengths[k], seed=seeds[k], epoch=e)[p]
                for k, e, p in zip(members.tolist(), epochs.tolist(), positions.tolist())]
        assert family.take(members, epochs, positions).tolist() == want
    assert family._cached_entries > 0
    again = pickle.loads(pickle.dumps(family))  # the cache is not pickled
    assert again._cached_entries == 0 and again.take(members, epochs, positions).tolist() == want
