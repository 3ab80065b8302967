"""`ResumableSampler`: DistributedSampler's contract, an O(1)-memory order, and exact elastic resumes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmap_ninja import Order

torch = pytest.importorskip("torch")
from mmap_ninja.adapters.torch import RankSampler, ResumableSampler  # noqa: E402


def reference(n: int, world_size: int, *, seed: int = 0, epoch: int = 0, shuffle: bool = True,
              drop_last: bool = False) -> list[list[int]]:
    """Each rank's indices of an uninterrupted epoch: DistributedSampler's layout over the epoch's `Order`."""
    order = Order(n, seed=seed, epoch=epoch, shuffle=shuffle).take(np.arange(n)).tolist()
    per_rank = n // world_size if drop_last else math.ceil(n / world_size)
    total = per_rank * world_size
    padded = (order * (total // max(n, 1) + 1))[:total]
    return [padded[rank:total:world_size] for rank in range(world_size)]


def samplers(n: int, world_size: int, **options: object) -> list[ResumableSampler]:
    return [ResumableSampler(n, rank=rank, world_size=world_size, **options) for rank in range(world_size)]


def take(iterator: object, count: int) -> list[int]:
    return [next(iterator) for _ in range(count)]  # type: ignore[call-overload]


@pytest.mark.parametrize("n", [0, 1, 2, 7, 10, 64, 1000, 4099])
@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
@pytest.mark.parametrize("drop_last", [False, True])
def test_an_uninterrupted_epoch_is_distributed_samplers_layout(n: int, world_size: int, drop_last: bool) -> None:
    ranks = samplers(n, world_size, seed=3, drop_last=drop_last)
    for sampler in ranks:
        sampler.set_epoch(2)
    streams = [list(sampler) for sampler in ranks]
    assert streams == reference(n, world_size, seed=3, epoch=2, drop_last=drop_last)
    assert all(len(stream) == len(ranks[0]) for stream in streams)
    assert len(ranks[0]) == len(torch.utils.data.DistributedSampler(range(n), num_replicas=world_size, rank=0,
                                                                    drop_last=drop_last))
    seen = sorted(index for stream in streams for index in stream)
    if drop_last:
        assert len(set(seen)) == len(seen) and len(seen) >= n - world_size + 1
    elif n:
        assert set(seen) == set(range(n))


def test_unshuffled_order_is_range_and_epochs_differ() -> None:
    assert list(ResumableSampler(10, rank=1, world_size=3, shuffle=False)) == [1, 4, 7, 0]
    sampler = ResumableSampler(500, rank=0, world_size=1, seed=1)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(list(sampler)) == sorted(first)
    assert list(sampler) == list(sampler)  # the same epoch again without set_epoch: the same order


@pytest.mark.parametrize("n", [1, 10, 97, 1024])
@pytest.mark.parametrize("world_size", [1, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_resume_with_the_same_world_size_continues_the_identical_stream(n: int, world_size: int,
                                                                       drop_last: bool) -> None:
    want = reference(n, world_size, seed=5, epoch=1, drop_last=drop_last)
    for consumed in sorted({0, min(1, len(want[0])), len(want[0]) // 2, max(len(want[0]) - 1, 0), len(want[0])}):
        for rank in range(world_size):
            sampler = ResumableSampler(n, rank=rank, world_size=world_size, seed=5, drop_last=drop_last)
            sampler.set_epoch(1)
            assert take(iter(sampler), consumed) == want[rank][:consumed]
            state = json.loads(json.dumps(sampler.state_dict()))
            fresh = ResumableSampler(n, rank=rank, world_size=world_size, seed=5, drop_last=drop_last)
            fresh.load_state_dict(state)  # continues epoch 1 without set_epoch
            assert fresh.epoch == 1
            assert list(fresh) == want[rank][consumed:]


@pytest.mark.parametrize(("n", "old", "new"), [(100, 4, 3), (100, 3, 4), (101, 2, 5), (37, 8, 1), (1000, 1, 7)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_resume_on_another_world_size_yields_every_remaining_index_once(n: int, old: int, new: int,
                                                                       drop_last: bool) -> None:
    consumed_per_rank = (n // old) // 3
    first = samplers(n, old, seed=9, drop_last=drop_last)
    consumed = [index for sampler in first for index in take(iter(sampler), consumed_per_rank)]
    states = [sampler.state_dict() for sampler in first]
    assert all(state == states[0] for state in states)  # the state means the same on every rank
    second = samplers(n, new, seed=9, drop_last=drop_last)
    for sampler in second:
        sampler.load_state_dict(states[0])
    rest = [list(sampler) for sampler in second]
    assert len({len(stream) for stream in rest}) == 1  # equal counts per rank
    remaining = n - consumed_per_rank * old
    everything = consumed + [index for stream in rest for index in stream]
    if drop_last:
        assert len(everything) == len(set(everything)) and len(everything) > n - new
        assert len(rest[0]) == remaining // new
    else:
        assert set(everything) == set(range(n))
        assert len(rest[0]) == math.ceil(remaining / new)
        assert len(everything) - n < new  # only the padding repeats


def test_three_resumes_in_a_row_on_changing_world_sizes_cover_the_epoch_once() -> None:
    n, seen = 1000, []
    state = None
    for world_size, steps in [(4, 30), (2, 45), (5, 20), (3, None)]:
        ranks = samplers(n, world_size, seed=2)
        for sampler in ranks:
            if state is not None:
                sampler.load_state_dict(state)
        iterators = [iter(sampler) for sampler in ranks]
        if steps is None:
            seen += [index for iterator in iterators for index in iterator]
        else:
            seen += [index for iterator in iterators for index in take(iterator, steps)]
            state = ranks[0].state_dict()
    assert len(seen) - n < 3 and set(seen) == set(range(n))


def test_state_is_small_json_and_versioned() -> None:
    sampler = ResumableSampler(10**12, rank=3, world_size=1024, seed=2**62)
    sampler.set_epoch(10**6)
    take(iter(sampler), 5)
    state = sampler.state_dict()
    assert len(json.dumps(state)) <= 256
    assert state["version"] == 3 and state["position"] == 5 * 1024 and state["epoch"] == 10**6


def test_a_state_of_the_older_order_is_refused_clearly() -> None:
    # Version 1 states were saved with version 1 of Order (another permutation): resuming one would read other
    # samples than the saved run, so it is refused, saying why.
    state = {**ResumableSampler(10).state_dict(), "version": 1}
    with pytest.raises(ValueError, match=r"version 1 was saved by an older mmap_ninja whose shuffled order"):
        ResumableSampler(10).load_state_dict(state)


@pytest.mark.parametrize(("n", "shuffle"), [(1025, True), (10**6, True), (100, False)])
def test_a_version_2_state_loads_where_its_order_did_not_change(n: int, shuffle: bool) -> None:
    # Order version 3 kept version 2's orders of more than 1,024 indices (and unshuffled ones): such states resume.
    sampler = ResumableSampler(n, rank=1, world_size=2, seed=5, shuffle=shuffle)
    sampler.set_epoch(3)
    take(iter(sampler), 7)
    state = sampler.state_dict()
    expected = ResumableSampler(n, rank=1, world_size=2, seed=5, shuffle=shuffle)
    expected.load_state_dict(state)
    older = ResumableSampler(n, rank=1, world_size=2, seed=5, shuffle=shuffle)
    older.load_state_dict({**state, "version": 2})
    assert list(older) == list(expected)


@pytest.mark.parametrize("n", [2, 100, 1024])
def test_a_version_2_state_of_a_small_shuffled_dataset_is_refused(n: int) -> None:
    state = {**ResumableSampler(n, seed=5).state_dict(), "version": 2}
    with pytest.raises(ValueError, match=r"version 2 was saved by an older mmap_ninja.*order version 3.*refused"):
        ResumableSampler(n, seed=5).load_state_dict(state)


def test_a_state_for_another_length_is_refused_naming_both() -> None:
    state = ResumableSampler(100).state_dict()
    with pytest.raises(ValueError, match=r"100 samples.*has 99"):
        ResumableSampler(99).load_state_dict(state)


@pytest.mark.parametrize(("change", "message"), [({"version": 99}, "version 99"), ({"position": -1}, "negative"),
                                                 ({"n": None}, None)])
def test_bad_states_are_refused(change: dict[str, object], message: str | None) -> None:
    state = {**ResumableSampler(10).state_dict(), **change}
    if change.get("n", 0) is None:
        del state["n"]
        message = "missing n"
    with pytest.raises(ValueError, match=message):
        ResumableSampler(10).load_state_dict(state)


def test_set_epoch_after_loading_keeps_the_loaded_position_and_another_epoch_restarts() -> None:
    sampler = ResumableSampler(50, seed=4)
    sampler.set_epoch(3)
    iterator = iter(sampler)
    take(iterator, 20)
    state = sampler.state_dict()
    rest = list(iterator)
    fresh = ResumableSampler(50, seed=4)
    fresh.load_state_dict(state)
    fresh.set_epoch(3)
    assert list(fresh) == rest
    fresh.load_state_dict(state)
    fresh.set_epoch(4)
    assert list(fresh) == reference(50, 1, seed=4, epoch=4)[0]


def test_a_state_saved_exactly_at_the_epochs_end_gives_an_empty_rest_then_the_next_epoch() -> None:
    sampler = ResumableSampler(10, rank=1, world_size=3, drop_last=True)
    list(sampler)
    state = sampler.state_dict()
    assert state["position"] == 10
    for world_size in (1, 3, 4):
        fresh = ResumableSampler(10, rank=0, world_size=world_size, drop_last=True)
        fresh.load_state_dict(state)
        assert list(fresh) == []
        fresh.set_epoch(1)
        assert list(fresh) == reference(10, world_size, epoch=1, drop_last=True)[0]


def test_state_at_is_the_state_after_consuming_that_many() -> None:
    sampler = ResumableSampler(30, rank=1, world_size=2, seed=8)
    expected = []
    iterator = iter(sampler)
    for consumed in range(len(sampler) + 1):
        expected.append(sampler.state_dict())
        if consumed < len(sampler):
            next(iterator)
    assert [sampler.state_at(k) for k in range(len(sampler) + 1)] == expected
    with pytest.raises(ValueError, match=r"samples_consumed must be in \[0, 15\]"):
        sampler.state_at(16)


def test_skip_steps_over_global_positions_without_reading_them() -> None:
    n, world_size = 100, 2
    want = reference(n, 1, seed=6)[0]  # the global stream
    ranks = samplers(n, world_size, seed=6)
    iterators = [iter(sampler) for sampler in ranks]
    got = [take(iterator, 5) for iterator in iterators]  # global positions 0..9
    for sampler in ranks:
        sampler.skip(30)  # positions 10..39 skipped
    got = [g + list(iterator) for g, iterator in zip(got, iterators)]
    assert got[0] == want[0:10:2] + want[40::2] and got[1] == want[1:10:2] + want[41::2]
    before = ResumableSampler(n, seed=6)
    before.skip(95)
    assert list(before) == want[95:]
    before.skip(1000)  # past the end: the epoch is over
    assert list(before) == []


def test_rank_sampler_keeps_distributed_samplers_exact_order() -> None:
    dataset = range(23)
    for rank in range(3):
        ours = RankSampler(dataset, rank=rank, world_size=3, seed=4)
        theirs = torch.utils.data.DistributedSampler(dataset, num_replicas=3, rank=rank, seed=4)
        ours.set_epoch(2)
        theirs.set_epoch(2)
        assert list(ours) == list(theirs)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="rank must be in"):
        ResumableSampler(10, rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size"):
        ResumableSampler(10, rank=0, world_size=0)
    with pytest.raises(ValueError, match="epoch"):
        ResumableSampler(10).set_epoch(-1)
    with pytest.raises(ValueError, match="num_samples"):
        ResumableSampler(10).skip(-3)


def test_a_billion_samples_start_at_once_in_little_memory() -> None:
    sampler = ResumableSampler(10**9, rank=5, world_size=8, seed=1)
    sampler.load_state_dict({**sampler.state_dict(), "position": 123_456_789 * 8})
    first = take(iter(sampler), 1000)
    assert len(set(first)) == 1000 and all(0 <= index < 10**9 for index in first)
    import pickle
    assert len(pickle.dumps(sampler)) < 2000


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 300), seed=st.integers(0, 2**32), old=st.integers(1, 6), new=st.integers(1, 6),
       fraction=st.floats(0, 1), drop_last=st.booleans())
def test_property_resume_anywhere_on_any_world_size(n: int, seed: int, old: int, new: int, fraction: float,
                                                    drop_last: bool) -> None:
    want = reference(n, old, seed=seed, drop_last=drop_last)
    consumed = int(fraction * len(want[0]))
    first = samplers(n, old, seed=seed, drop_last=drop_last)
    got = [take(iter(sampler), consumed) for sampler in first]
    assert got == [stream[:consumed] for stream in want]
    state = first[0].state_dict()
    same = samplers(n, old, seed=seed, drop_last=drop_last)
    for sampler in same:
        sampler.load_state_dict(state)
    assert [list(sampler) for sampler in same] == [stream[consumed:] for stream in want]
    other = samplers(n, new, seed=seed, drop_last=drop_last)
    for sampler in other:
        sampler.load_state_dict(state)
    rest = [list(sampler) for sampler in other]
    assert len({len(stream) for stream in rest}) == 1
    everything = [index for stream in got for index in stream] + [index for stream in rest for index in stream]
    consumed_unique = {index for stream in got for index in stream}
    if not drop_last:
        assert set(everything) == set(range(n))
    remaining = [index for stream in rest for index in stream]
    unique_remaining = set(remaining) - consumed_unique
    if drop_last or n == 0:
        assert len(remaining) == len(set(remaining)) and not (set(remaining) & consumed_unique)
    assert len(remaining) - len(unique_remaining) < new


@pytest.mark.parametrize("call", [
    lambda: ResumableSampler(10, rank=1.5, world_size=2),
    lambda: ResumableSampler(10, rank=True, world_size=2),
    lambda: ResumableSampler(10, rank="1", world_size=2),
    lambda: ResumableSampler(10, rank=0, world_size=2.9),
    lambda: ResumableSampler(10).set_epoch(1.7),
    lambda: ResumableSampler(10).set_epoch(True),
    lambda: ResumableSampler(10).set_epoch("3"),
    lambda: ResumableSampler(10).skip(2.5),
    lambda: ResumableSampler(10).skip(True),
    lambda: ResumableSampler(10).state_at(1.5),
    lambda: ResumableSampler(10).state_at(True),
])
def test_a_float_bool_or_str_count_is_refused_not_truncated(call: object) -> None:
    with pytest.raises(TypeError, match="must be an int, got"):
        call()  # type: ignore[operator]


@pytest.mark.parametrize("source", [10.0, True, None])
def test_a_length_that_is_not_an_int_is_refused_naming_data_source(source: object) -> None:
    with pytest.raises(TypeError, match=r"data_source must be a dataset \(with len\(\)\) or its length"):
        ResumableSampler(source)


@pytest.mark.parametrize("key, value", [("position", 2.5), ("n", 10.9), ("epoch", True), ("seed", 1.5),
                                        ("shuffle", "false"), ("drop_last", 0)])
def test_a_state_with_a_value_of_the_wrong_type_is_refused(key: str, value: object) -> None:
    state = {**ResumableSampler(10).state_dict(), key: value}
    with pytest.raises(TypeError, match=f"state's {key!r} must be"):
        ResumableSampler(10).load_state_dict(state)


@pytest.mark.parametrize("copy_of", [lambda s: __import__("copy").deepcopy(s),
                                     lambda s: __import__("pickle").loads(__import__("pickle").dumps(s))])
def test_a_copy_of_a_sampler_with_a_running_iterator_keeps_a_later_skip(copy_of: object) -> None:
    sampler = ResumableSampler(100, rank=1, world_size=2)
    running = iter(sampler)  # still running when copied
    next(running)
    copied = copy_of(sampler)  # type: ignore[operator]
    copied.skip(10)
    fresh = ResumableSampler(100, rank=1, world_size=2)
    fresh.skip(12)
    assert list(copied) == list(fresh)


def test_rank_sampler_refuses_float_and_bool_arguments() -> None:
    for call in (lambda: RankSampler(10, rank=0.5, world_size=2), lambda: RankSampler(10, rank=0, world_size=True),
                 lambda: RankSampler(10, seed=1.5), lambda: RankSampler(10, epoch=2.5),
                 lambda: RankSampler(10).set_epoch(1.5)):
        with pytest.raises(TypeError, match="must be an int, got"):
            call()
