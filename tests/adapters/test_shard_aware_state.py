"""`ShardAwareSampler` state: an exact resume on the same world size, a re-plan of the unread samples on another."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
from mmap_ninja.adapters.shards import ShardAwareSampler, shard_aware_indices

pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")


def sharded(tmp_path: Path, lengths: list[int]) -> Any:
    from mmap_ninja import StringsMmap, merge

    paths = []
    start = 0
    for k, n in enumerate(lengths):
        StringsMmap.from_generator(tmp_path / f"s{k}", (str(start + i) for i in range(n)), 8).close()
        paths.append(tmp_path / f"s{k}")
        start += n
    return merge(tmp_path / "sharded", paths)


LENGTHS = [10, 7, 13, 10, 4, 16, 10, 10]
N = sum(LENGTHS)


def ranks(m: Any, world_size: int, **options: Any) -> list[ShardAwareSampler]:
    return [ShardAwareSampler(m, rank=r, world_size=world_size, seed=3, **options) for r in range(world_size)]


def take(iterator: Any, count: int) -> list[int]:
    return [next(iterator) for _ in range(count)]


@pytest.fixture(scope="module")
def m(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return sharded(tmp_path_factory.mktemp("shards"), LENGTHS)


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_same_world_size_resume_is_exact(m: Any, world_size: int, drop_last: bool) -> None:
    for epoch in (0, 1):
        want = [shard_aware_indices(LENGTHS, rank=r, world_size=world_size, epoch=epoch, seed=3,
                                    drop_last=drop_last).tolist() for r in range(world_size)]
        for consumed in (0, 1, len(want[0]) // 2, len(want[0])):
            samplers = ranks(m, world_size, drop_last=drop_last)
            for sampler in samplers:
                sampler.set_epoch(epoch)
            got = [take(iter(sampler), consumed) for sampler in samplers]
            state = json.loads(json.dumps(samplers[0].state_dict()))
            assert all(s.state_dict() == samplers[0].state_dict() for s in samplers)
            fresh = ranks(m, world_size, drop_last=drop_last)
            for sampler in fresh:
                sampler.load_state_dict(state)
            assert [g + list(f) for g, f in zip(got, fresh)] == want
            assert fresh[0].epoch == epoch


@pytest.mark.parametrize(("old", "new"), [(2, 3), (3, 2), (4, 1), (1, 5)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_another_world_size_replans_the_unread_samples_once_with_equal_counts(m: Any, old: int, new: int,
                                                                             drop_last: bool) -> None:
    first = ranks(m, old, drop_last=drop_last)
    read = [index for sampler in first for index in take(iter(sampler), 9)]
    state = first[0].state_dict()
    second = ranks(m, new, drop_last=drop_last)
    for sampler in second:
        sampler.load_state_dict(state)
    rest = [list(sampler) for sampler in second]
    assert len({len(stream) for stream in rest}) == 1
    unread = set(range(N)) - set(read)
    rest_all = [index for stream in rest for index in stream]
    if drop_last:
        assert len(rest_all) == len(set(rest_all)) and set(rest_all) <= unread
        assert len(unread) - len(rest_all) < new
    else:
        assert set(rest_all) == unread and len(rest_all) - len(unread) < new
    # locality: each new rank reads few shards (whole remainders of shards first)
    starts = np.cumsum([0, *LENGTHS])
    for stream in rest:
        shards = np.searchsorted(starts, stream, side="right") - 1
        assert len(set(shards.tolist())) <= len(LENGTHS) // new + 3


def test_three_resumes_on_changing_world_sizes_read_every_sample_once(m: Any) -> None:
    state = None
    read: list[int] = []
    for world_size, steps in [(3, 5), (2, 8), (4, 3), (2, None)]:
        samplers = ranks(m, world_size)
        iterators = []
        for sampler in samplers:
            if state is not None:
                sampler.load_state_dict(state)
            iterators.append(iter(sampler))
        if steps is None:
            read += [index for iterator in iterators for index in iterator]
        else:
            read += [index for iterator in iterators for index in take(iterator, steps)]
            state = json.loads(json.dumps(samplers[0].state_dict()))
    assert set(read) == set(range(N)) and len(read) - N < 4


def test_state_at_and_refusals(m: Any) -> None:
    sampler = ShardAwareSampler(m, rank=0, world_size=2, seed=3)
    iterator = iter(sampler)
    states = []
    for _ in range(5):
        states.append(sampler.state_dict())
        next(iterator)
    assert [sampler.state_at(k) for k in range(5)] == states
    with pytest.raises(ValueError, match="samples_consumed"):
        sampler.state_at(len(sampler) + 1)
    other = {**sampler.state_dict(), "n": N + 1}
    with pytest.raises(ValueError, match=f"{N + 1} samples.*has {N}"):
        sampler.load_state_dict(other)


def test_through_a_stateful_dataloader(m: Any) -> None:
    stateful_dataloader = pytest.importorskip("torchdata.stateful_dataloader")

    def loader() -> tuple[Any, ShardAwareSampler]:
        sampler = ShardAwareSampler(m, rank=1, world_size=2, seed=3)
        return stateful_dataloader.StatefulDataLoader(m, batch_size=4, sampler=sampler,
                                                      collate_fn=list), sampler

    whole, _ = loader()
    want = [batch for batch in whole]
    first, _ = loader()
    iterator = iter(first)
    got = take(iterator, 3)
    state = first.state_dict()
    second, _ = loader()
    second.load_state_dict(state)
    assert got + list(second) == want


def test_state_at_counts_from_the_loaded_place_after_a_resume(m: Any) -> None:
    sampler = ShardAwareSampler(m, rank=0, world_size=2, seed=3)
    take(iter(sampler), 4)
    fresh = ShardAwareSampler(m, rank=0, world_size=2, seed=3)
    fresh.load_state_dict(sampler.state_dict())
    assert fresh.state_at(0) == sampler.state_dict()
    iterator = iter(fresh)
    take(iterator, 3)
    assert fresh.state_at(3) == fresh.state_dict()


def interleaved(plans: list[list[int]]) -> list[int]:
    """The epoch's global stream: step t holds sample t of rank 0, of rank 1, ..."""
    return [plan[t] for t in range(len(plans[0])) for plan in plans]


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_skip_of_whole_steps_continues_the_reference_stream(m: Any, world_size: int, drop_last: bool) -> None:
    want = [shard_aware_indices(LENGTHS, rank=r, world_size=world_size, epoch=1, seed=3,
                                drop_last=drop_last).tolist() for r in range(world_size)]
    for read, steps in [(0, 2), (3, 1), (2, 0), (1, 1000)]:
        samplers = ranks(m, world_size, drop_last=drop_last)
        got = []
        for sampler in samplers:
            sampler.set_epoch(1)
            iterator = iter(sampler)
            first = take(iterator, read)
            sampler.skip(steps * world_size)  # while the iterator runs
            got.append(first + list(iterator))
        kept = min(read + steps, len(want[0]))
        assert got == [plan[:read] + plan[kept:] for plan in want]
        # before iter(): the skip counts from the epoch's start (or the loaded place)
        fresh = ranks(m, world_size, drop_last=drop_last)
        for sampler in fresh:
            sampler.set_epoch(1)
            sampler.skip(steps * world_size)
        assert [list(sampler) for sampler in fresh] == [plan[min(steps, len(plan)):] for plan in want]


@pytest.mark.parametrize("world_size", [2, 3, 4])
@pytest.mark.parametrize("skipped", [1, 5, 7])
def test_skip_of_part_of_a_step_reads_every_other_sample_once_with_equal_counts(m: Any, world_size: int,
                                                                                skipped: int) -> None:
    want = [shard_aware_indices(LENGTHS, rank=r, world_size=world_size, seed=3).tolist() for r in range(world_size)]
    stream = interleaved(want)
    samplers = ranks(m, world_size)
    iterators = [iter(sampler) for sampler in samplers]
    read = [index for iterator in iterators for index in take(iterator, 2)]
    for sampler in samplers:
        sampler.skip(skipped)
    state = json.loads(json.dumps(samplers[0].state_dict()))
    rest = [list(iterator) for iterator in iterators]
    assert len({len(r) for r in rest}) == 1
    skipped_samples = stream[2 * world_size:2 * world_size + skipped]
    rest_all = [index for r in rest for index in r]
    assert set(read + skipped_samples + rest_all) == set(range(N))
    assert not set(rest_all) & (set(read) | set(skipped_samples))
    assert len(set(rest_all)) == len(set(range(N)) - set(read) - set(skipped_samples))
    assert len(rest_all) - len(set(rest_all)) < world_size  # padding only
    # the state after the partial skip resumes the same rest on the same world size
    fresh = ranks(m, world_size)
    for sampler in fresh:
        sampler.load_state_dict(state)
    assert [list(sampler) for sampler in fresh] == rest


def test_skip_after_an_elastic_resume_and_past_the_end(m: Any) -> None:
    first = ranks(m, 3)
    read = [index for sampler in first for index in take(iter(sampler), 4)]
    state = first[0].state_dict()
    second = ranks(m, 2)
    for sampler in second:
        sampler.load_state_dict(state)
    planned = [sampler.indices().tolist() for sampler in second]  # the re-plan of the unread samples on 2 ranks
    for sampler in second:
        sampler.skip(6)  # 3 steps of the new plan's global stream
    rest = [list(sampler) for sampler in second]
    assert rest == [plan[3:] for plan in planned]
    skipped = [index for plan in planned for index in plan[:3]]
    assert set(read) | set(skipped) | {i for r in rest for i in r} == set(range(N))
    for sampler in second:
        sampler.load_state_dict(state)
        sampler.skip(10 * N)
    assert [list(sampler) for sampler in second] == [[], []]
    assert second[0].state_dict()["stages"][-1][1] == len(planned[0])
    with pytest.raises(ValueError, match="num_samples >= 0"):
        second[0].skip(-1)


def test_float_bool_and_negative_arguments_are_refused_clearly(m: Any) -> None:
    for call in (lambda: ShardAwareSampler(m, rank=0.9, world_size=2), lambda: ShardAwareSampler(m, world_size=True),
                 lambda: ShardAwareSampler(m, seed=1.5), lambda: ShardAwareSampler(m).set_epoch(1.5),
                 lambda: ShardAwareSampler(m).skip(1.5), lambda: ShardAwareSampler(m).state_at(True)):
        with pytest.raises(TypeError, match="must be an int, got"):
            call()
    with pytest.raises(ValueError, match="epoch must be >= 0, got -1"):
        ShardAwareSampler(m).set_epoch(-1)
    with pytest.raises(ValueError, match=r"seed must be >= 0 .*got -1"):
        ShardAwareSampler(m, seed=-1)
    with pytest.raises(TypeError, match="state's 'epoch' must be an int"):
        ShardAwareSampler(m).load_state_dict({**ShardAwareSampler(m).state_dict(), "epoch": 1.5})
    with pytest.raises(ValueError, match="bad stages"):
        ShardAwareSampler(m).load_state_dict({**ShardAwareSampler(m).state_dict(), "stages": [[1, 2.5]]})
    with pytest.raises(TypeError, match="needs a dict"):
        ShardAwareSampler(m).load_state_dict([1])  # type: ignore[arg-type]


def test_a_copy_of_a_sampler_with_a_running_iterator_keeps_a_later_skip(m: Any) -> None:
    import copy

    sampler = ShardAwareSampler(m, seed=3)
    running = iter(sampler)  # still running when copied
    next(running)
    copied = copy.deepcopy(sampler)
    copied.skip(5)
    fresh = ShardAwareSampler(m, seed=3)
    fresh.skip(6)
    assert list(copied) == list(fresh)
