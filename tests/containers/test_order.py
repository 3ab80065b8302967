"""`mmap_ninja.Order`: a keyed bijection of range(n) evaluated per position, never materialized."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mmap_ninja
from mmap_ninja import Order

SIZES = [0, 1, 2, 3, 4, 5, 7, 8, 13, 16, 31, 32, 33, 97, 127, 128, 129, 1000, 1021, 1024, 4096, 65_537]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("seed", [0, 1, 12345, -7])
def test_take_is_a_permutation_of_range_n(n: int, seed: int) -> None:
    order = Order(n, seed=seed, epoch=3)
    values = order.take(np.arange(n))
    assert values.dtype == np.int64
    assert len(order) == n
    assert np.array_equal(np.sort(values), np.arange(n))


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 8, 17, 100, 1024])
def test_scalar_indexing_matches_take_and_iteration(n: int) -> None:
    order = Order(n, seed=9, epoch=2)
    assert [order[k] for k in range(n)] == order.take(np.arange(n)).tolist() == list(order)
    assert all(type(order[k]) is int for k in range(n))


def test_negative_positions_count_from_the_end() -> None:
    order = Order(50, seed=1)
    assert order[-1] == order[49]
    assert order[-50] == order[0]
    assert order.take([-1, -50, 3]).tolist() == [order[49], order[0], order[3]]


@pytest.mark.parametrize("position", [10, -11, 1 << 40])
def test_out_of_range_positions_raise_index_error_naming_them(position: int) -> None:
    order = Order(10)
    with pytest.raises(IndexError, match=str(position)):
        order[position]
    with pytest.raises(IndexError, match=str(position)):
        order.take([0, position])


def test_empty_order_refuses_every_position() -> None:
    order = Order(0)
    with pytest.raises(IndexError):
        order[0]
    assert order.take(np.array([], dtype=np.int64)).size == 0
    assert list(order) == []


def test_take_keeps_the_shape_of_positions() -> None:
    order = Order(100, seed=4)
    grid = np.arange(12).reshape(3, 4)
    assert order.take(grid).shape == (3, 4)
    assert order.take(grid).ravel().tolist() == [order[k] for k in range(12)]
    assert order.take(np.int64(5)).shape == ()


def test_bad_positions_are_refused_clearly() -> None:
    order = Order(10)
    with pytest.raises(TypeError, match="int"):
        order[1.5]
    with pytest.raises(TypeError, match="integer positions"):
        order.take([0.5, 1.0])
    with pytest.raises(TypeError, match="integer positions"):
        order.take([True, False])


@pytest.mark.parametrize("bad", [-1, 1.0, "3", True])
def test_bad_sizes_are_refused(bad: object) -> None:
    with pytest.raises((TypeError, ValueError), match="n must"):
        Order(bad)  # type: ignore[arg-type]


def test_negative_epoch_is_refused() -> None:
    with pytest.raises(ValueError, match="epoch"):
        Order(5, epoch=-1)


def test_shuffle_false_is_the_identity() -> None:
    order = Order(1000, seed=5, epoch=7, shuffle=False)
    assert order.take(np.arange(1000)).tolist() == list(range(1000))
    assert order[123] == 123


def test_seeds_and_epochs_give_different_orders() -> None:
    n = 1000
    orders = [Order(n, seed=seed, epoch=epoch).take(np.arange(n)) for seed in range(4) for epoch in range(4)]
    for i, first in enumerate(orders):
        for second in orders[i + 1:]:
            assert not np.array_equal(first, second)
    assert not np.array_equal(orders[0], np.arange(n))  # a real shuffle, not the identity


def test_the_order_is_deterministic_across_objects_and_pickling() -> None:
    first = Order(12_345, seed=77, epoch=4)
    second = Order(12_345, seed=77, epoch=4)
    copy = pickle.loads(pickle.dumps(first))
    positions = np.arange(0, 12_345, 7)
    assert np.array_equal(first.take(positions), second.take(positions))
    assert np.array_equal(first.take(positions), copy.take(positions))
    assert first == second == copy and hash(first) == hash(copy)
    assert len(pickle.dumps(first)) < 200


def test_with_epoch_keeps_everything_but_the_epoch() -> None:
    order = Order(300, seed=8, epoch=0, shuffle=True)
    later = order.with_epoch(5)
    assert (len(later), later.seed, later.epoch, later.shuffle) == (300, 8, 5, True)
    assert later == Order(300, seed=8, epoch=5)
    assert order.epoch == 0


def test_known_values_do_not_change_between_releases() -> None:
    # The order is part of what a saved training state means: changing the algorithm would silently change
    # the order a resumed run continues with. A change must bump ORDER_VERSION (and the samplers' state versions).
    from mmap_ninja.containers.order import ORDER_VERSION

    assert ORDER_VERSION == 3
    assert Order(10, seed=0, epoch=0).take(np.arange(10)).tolist() == KNOWN_10
    assert Order(10**9, seed=3, epoch=2).take([0, 1, 999_999_999]).tolist() == KNOWN_BILLION


KNOWN_10 = [2, 3, 1, 9, 7, 0, 5, 4, 8, 6]  # version 2: [5, 9, 4, 1, 2, 0, 6, 7, 3, 8]
KNOWN_BILLION = [829484563, 869519208, 253350252]  # unchanged since version 2 (above SMALL_ORDER_MAX)


def test_huge_orders_take_no_memory_and_answer_at_once() -> None:
    order = Order(10**12, seed=1)
    assert sys.getsizeof(order) < 200
    values = order.take(np.arange(1000))
    assert len(set(values.tolist())) == 1000
    assert values.min() >= 0 and values.max() < 10**12
    assert order[10**12 - 1] < 10**12


def test_slices_give_arrays() -> None:
    order = Order(20, seed=2)
    assert order[2:8].tolist() == [order[k] for k in range(2, 8)]
    assert order[::-1].tolist() == [order[k] for k in range(19, -1, -1)]


def test_exported_from_the_package() -> None:
    assert "Order" in mmap_ninja.__all__
    assert mmap_ninja.Order is Order


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 3000), seed=st.integers(-(2**70), 2**70), epoch=st.integers(0, 2**40))
def test_property_bijection_and_scalar_agreement(n: int, seed: int, epoch: int) -> None:
    order = Order(n, seed=seed, epoch=epoch)
    values = order.take(np.arange(n))
    assert np.array_equal(np.sort(values), np.arange(n))
    for k in range(0, n, max(1, n // 17)):
        assert order[k] == values[k]


@pytest.mark.slow
@pytest.mark.parametrize("n", [2**20, 2**20 + 1, 3_000_017, 2**22 - 1])
def test_large_bijections(n: int) -> None:
    values = Order(n, seed=n).take(np.arange(n))
    assert np.array_equal(np.bincount(values, minlength=n), np.ones(n, dtype=np.int64))


def test_take_many_equals_one_order_per_element() -> None:
    from mmap_ninja.containers.order import take_many

    rng = np.random.default_rng(1)
    lengths = np.r_[1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 2**20, 2**20 + 1, 10**9, 10**12, rng.integers(1, 10**6, 500)]
    seeds = rng.integers(0, 2**62, len(lengths))
    epochs = rng.integers(0, 1000, len(lengths))
    positions = (rng.random(len(lengths)) * lengths).astype(np.int64)
    want = [Order(int(n), seed=int(s), epoch=int(e))[int(p)] for n, s, e, p in zip(lengths, seeds, epochs, positions)]
    assert take_many(lengths, seeds, epochs, positions).tolist() == want


def test_take_in_epochs_equals_with_epoch() -> None:
    order = Order(37, seed=5)
    epochs = np.array([0, 1, 2, 3, 100, 2**40] * 10)
    positions = np.arange(60) % 37
    want = [order.with_epoch(int(e))[int(p)] for e, p in zip(epochs, positions)]
    assert order.take_in_epochs(epochs, positions).tolist() == want
    with pytest.raises(ValueError, match="one epoch per position"):
        order.take_in_epochs([0, 1], [0])


@pytest.mark.parametrize("cached", [False, True])
def test_order_family_equals_one_order_per_element(cached: bool) -> None:
    from mmap_ninja.containers.order import OrderFamily

    rng = np.random.default_rng(2)
    lengths = [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 2**20 + 1, 10**9, 10**12, *rng.integers(1, 10**6, 40).tolist()]
    seeds = rng.integers(0, 2**62, len(lengths)).tolist()
    family = OrderFamily(lengths, seeds)
    if cached:
        assert family.cache_keys([3] * len(lengths))
        assert not OrderFamily(lengths, seeds).cache_keys([10**6] * len(lengths))  # too many: derived instead
    for size in (1, 5, 3000):  # one straggler walked in Python, and long vectorized walks
        members = rng.integers(0, len(lengths), size)
        epochs = rng.integers(0, 6, size)  # past the cached epochs too
        positions = (rng.random(size) * np.array(lengths)[members]).astype(np.int64)
        want = [Order(lengths[k], seed=seeds[k], epoch=e)[p]
                for k, e, p in zip(members.tolist(), epochs.tolist(), positions.tolist())]
        assert family.take(members, epochs, positions).tolist() == want
        if cached:
            within = epochs <= 3
            assert family.take_cached(members[within], epochs[within], positions[within]).tolist() == [
                value for value, keep in zip(want, within.tolist()) if keep]
    # a large member: many values in one vectorized walk, all landing inside
    walker = OrderFamily([2**16 + 1], [9])
    values = walker.take(np.zeros(2**16 + 1, dtype=np.int64), np.zeros(2**16 + 1, dtype=np.int64),
                         np.arange(2**16 + 1))
    assert np.array_equal(np.sort(values), np.arange(2**16 + 1))
    unshuffled = OrderFamily([5], [1], shuffle=False)
    assert unshuffled.take(np.zeros(3), np.zeros(3), np.array([4, 0, 2])).tolist() == [4, 0, 2]
    with pytest.raises(ValueError, match="one seed per member"):
        OrderFamily([5, 6], [1])


@pytest.mark.parametrize("n", [*range(2, 300), 2**16 + 1, 10**9, 10**12, 2**62 + 12345, 2**63 - 1])
def test_the_grid_overhangs_n_by_less_than_one_row(n: int) -> None:
    # rows x columns cells with rows = ceil(sqrt(n)): fewer than `rows` cells past n, so a value falls outside
    # range(n) with a chance below 1 / columns and nearly every value lands at the first pass of the network.
    from mmap_ninja.containers.order import _grid

    rows, columns = _grid(n)
    assert rows * columns >= n > rows * columns - rows
    assert rows * rows >= n > (rows - 1) ** 2 and max(rows, columns) < 2**32


@pytest.mark.parametrize("n", [2**32 + 1, 2**33, 2**62 + 12_345, 2**63 - 1])
def test_the_largest_orders_agree_between_take_and_one_position(n: int) -> None:
    # grid sides near 2**31.5: the rounds' sums stay below 2**64 and the cells below 2**63
    order = Order(n, seed=7, epoch=3)
    positions = np.array([0, 1, n // 2, n - 2, n - 1], dtype=np.int64)
    values = order.take(positions)
    assert values.tolist() == [order[int(p)] for p in positions]
    assert len(set(values.tolist())) == 5 and values.min() >= 0 and values.max() < n


def test_unsigned_positions_past_int64_are_out_of_range_not_wrapped_to_negative() -> None:
    order = Order(10, seed=1)
    with pytest.raises(IndexError, match=str(2**64 - 1)):
        order.take(np.array([2**64 - 1], dtype=np.uint64))
    with pytest.raises(IndexError, match=str(2**63)):
        Order(2000).take(np.array([0, 2**63], dtype=np.uint64))
    assert order.take(np.array([9], dtype=np.uint64)).tolist() == [order[9]]
    with pytest.raises(IndexError, match=f"position {2**70} is out of range"):
        order.take([3, 2**70])
    with pytest.raises(IndexError, match=f"position {-2**70} is out of range"):
        order.take([-2**70])


@pytest.mark.parametrize("epochs", [[1.7], [True], [2**64], np.array([2**63], dtype=np.uint64)])
def test_take_in_epochs_refuses_float_bool_and_too_large_epochs(epochs: object) -> None:
    with pytest.raises((TypeError, ValueError), match="epochs"):
        Order(10).take_in_epochs(epochs, [0])


def test_seeds_equal_modulo_2_64_give_equal_orders() -> None:
    assert Order(2000, seed=-1) == Order(2000, seed=2**64 - 1)
    assert hash(Order(2000, seed=-1)) == hash(Order(2000, seed=2**64 - 1))
    assert Order(2000, seed=-1).take(range(5)).tolist() == Order(2000, seed=2**64 - 1).take(range(5)).tolist()
    assert Order(2000, seed=1) != Order(2000, seed=2)


@pytest.mark.parametrize(("lengths", "seeds", "message"), [
    ([10.7], [0], "member 0's length must be an int, got 10.7"), ([True], [0], "member 0's length must be an int"),
    ([5, -1], [0, 0], r"member 1's length must be in \[0, 2\*\*63\), got -1"),
    ([2**64], [0], "member 0's length must be in"), ([10], [1.5], "member 0's seed must be an int, got 1.5")])
def test_an_order_family_refuses_float_bool_and_out_of_range_members(lengths: list[object], seeds: list[object],
                                                                    message: str) -> None:
    from mmap_ninja.containers.order import OrderFamily

    with pytest.raises((TypeError, ValueError), match=message):
        OrderFamily(lengths, seeds)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["seed", "epoch", "shuffle"])
def test_an_orders_parameters_are_read_only(name: str) -> None:
    order = Order(2000, seed=1, epoch=0)
    first = order.take(range(5)).tolist()
    with pytest.raises(AttributeError):
        setattr(order, name, 3)  # it would have kept the old order while reporting the new value
    assert order == Order(2000, seed=1, epoch=0)
    assert order.take(range(5)).tolist() == first
