"""`BlockOrder`, `block_layout`, `shuffle_quality` (NumPy only) and `BlockShuffleSampler` (torch): every index once per
epoch, each block read inside one window, blocks found from the maps' offsets, and exact resumes."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmap_ninja import (
    BlockLayout,
    BlockOrder,
    Order,
    RaggedMmap,
    ShardedMap,
    StringsMmap,
    blend,
    block_layout,
    merge,
    np_from_ndarray,
    shuffle_quality,
)
from mmap_ninja.containers.block_order import DEFAULT_BLOCK_BYTES


def layout_of(sizes: list[int]) -> BlockLayout:
    return BlockLayout(np.concatenate([[0], np.cumsum(sizes)]))


def windows_of(order: BlockOrder, stream: list[int]) -> list[list[int]]:
    """The stream cut at the order's window ends."""
    ends = order._window_ends.tolist()
    return [stream[a:b] for a, b in zip([0, *ends[:-1]], ends)]


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 9), min_size=1, max_size=30), window=st.integers(1, 5),
       seed=st.integers(0, 2**40), epoch=st.integers(0, 3))
def test_every_index_once_and_each_block_inside_one_window(sizes: list[int], window: int, seed: int,
                                                          epoch: int) -> None:
    layout = layout_of(sizes)
    order = BlockOrder(layout, window_blocks=window, seed=seed, epoch=epoch)
    stream = order.take(np.arange(len(layout))).tolist()
    assert sorted(stream) == list(range(len(layout)))
    assert [order[k] for k in range(len(layout))] == stream == list(order)
    block_of = layout.block_of(np.array(stream)).tolist()
    windows = windows_of(order, stream)
    assert sum(len(w) for w in windows) == len(stream) and order.num_windows == -(-len(sizes) // window)
    seen_blocks: set[int] = set()
    at = 0
    for piece in windows:
        blocks = set(block_of[at:at + len(piece)])
        assert len(blocks) <= window and not blocks & seen_blocks  # a block is read within one window only
        seen_blocks |= blocks
        at += len(piece)
    if window == 1:  # a window of one block: each block's samples are contiguous in the stream
        runs = [b for k, b in enumerate(block_of) if k == 0 or block_of[k - 1] != b]
        assert len(runs) == len(sizes)


def test_epochs_and_seeds_give_other_orders_and_the_blocks_go_in_a_shuffled_order() -> None:
    layout = layout_of([4] * 50)
    first = BlockOrder(layout, window_blocks=2, seed=1).take(np.arange(200)).tolist()
    assert first != BlockOrder(layout, window_blocks=2, seed=1, epoch=1).take(np.arange(200)).tolist()
    assert first != BlockOrder(layout, window_blocks=2, seed=2).take(np.arange(200)).tolist()
    assert first == BlockOrder(layout, window_blocks=2, seed=1).with_epoch(0).take(np.arange(200)).tolist()
    block_sequence = list(dict.fromkeys(i // 4 for i in first))
    assert block_sequence != sorted(block_sequence)
    with pytest.raises(IndexError, match="200 is out of range"):
        BlockOrder(layout).take([200])
    with pytest.raises(ValueError, match="window_blocks"):
        BlockOrder(layout, window_blocks=0)


def test_shuffle_quality_on_known_orders() -> None:
    n, block = 4096, 64
    block_of = np.arange(n) // block
    identity = shuffle_quality(range(n), block_of, batch_size=32)
    assert identity["mean_displacement"] == 0.0 and identity["same_block_share"] == 1.0
    assert identity["blocks_per_batch"] == 1.0
    full = shuffle_quality(Order(n, seed=3), block_of, batch_size=256)
    expected = (block - 1) / (n - 1)  # the chance that two samples of a uniform shuffle share a block
    assert full["random_same_block_share"] == pytest.approx(expected)
    assert abs(full["same_block_share"] - expected) < 0.3 * expected
    assert 0.28 < full["mean_displacement"] < 0.38  # about 1/3 for a uniform shuffle
    layout = BlockLayout(np.arange(0, n + 1, block))
    windowed = shuffle_quality(BlockOrder(layout, window_blocks=4, seed=3), layout, batch_size=256)
    assert windowed["same_block_share"] == pytest.approx(0.25, abs=0.03)  # 4 blocks mixed: 1/4 of the pairs
    assert windowed["same_block_share"] > 10 * full["same_block_share"]
    assert shuffle_quality([], block_of, batch_size=4)["same_block_share"] == 0.0
    assert shuffle_quality(range(8), lambda indices: np.asarray(indices) // 4, 4)["same_block_share"] == 1.0
    with pytest.raises(ValueError, match="batch_size"):
        shuffle_quality(range(8), block_of, batch_size=0)


def test_block_layout_from_the_maps_offsets(tmp_path: Path) -> None:
    rows = np_from_ndarray(tmp_path / "rows", np.zeros((10, 4), dtype=np.int64))  # 32 bytes a row
    assert block_layout(rows, block_bytes=64).bounds.tolist() == [0, 2, 4, 6, 8, 10]
    assert block_layout(rows, block_bytes=50).bounds.tolist() == [0, 2, 4, 5, 7, 8, 10]  # first byte in [50k, 50k+50)
    assert block_layout(rows).bounds.tolist() == [0, 10] and block_layout(rows).block_bytes == DEFAULT_BLOCK_BYTES
    texts = ["a" * 30, "b" * 5, "c" * 5, "d" * 60, "e", "f" * 10]  # first bytes 0, 30, 35, 40, 100, 101
    strings = StringsMmap.from_strings(tmp_path / "strings", texts)
    assert block_layout(strings, block_bytes=32).bounds.tolist() == [0, 2, 4, 6]  # none start in [64, 96)
    ragged = RaggedMmap.from_lists(tmp_path / "ragged", [np.zeros(k, dtype=np.int32) for k in (3, 1, 4, 2)])
    # first bytes 0, 12, 16, 32 (offsets count int32 elements)
    assert block_layout(ragged, block_bytes=16).bounds.tolist() == [0, 2, 3, 4]

    class Remote:  # a map that states its fetch block, as a remote map read by blocks does
        fetch_block_size = 64

        def __init__(self, inner: Any):
            self._store = inner._store

        def __len__(self) -> int:
            return 10

    assert block_layout(Remote(rows)).bounds.tolist() == [0, 2, 4, 6, 8, 10]
    with pytest.raises(TypeError, match="no byte offsets"):
        block_layout(list(range(5)))
    with pytest.raises(ValueError, match="block_bytes"):
        block_layout(rows, block_bytes=0)


def test_block_layout_of_sharded_maps_and_blends(tmp_path: Path) -> None:
    parts = []
    for k, n in enumerate((5, 3, 6)):
        np_from_ndarray(tmp_path / f"part{k}", np.full((n, 4), k, dtype=np.int64)).close()
        parts.append(tmp_path / f"part{k}")
    sharded = merge(tmp_path / "sharded", parts)
    layout = block_layout(sharded, block_bytes=64)  # two rows a block, never across shards
    assert layout.bounds.tolist() == [0, 2, 4, 5, 7, 8, 10, 12, 14]

    class ReadByBlocks(ShardedMap):  # as a remote map opened with fetch="blocks": its shards are its blocks
        fetch_block_size = 4096

    blocky = ReadByBlocks(tmp_path / "sharded", mode="r")
    assert block_layout(blocky).bounds.tolist() == [0, 5, 8, 14]  # the shards, none opened
    assert blocky.open_shards == 0
    with pytest.raises(ValueError, match="read by blocks of 4096 bytes"):
        block_layout(blocky, 64)
    a = np_from_ndarray(tmp_path / "a", np.arange(24, dtype=np.int64).reshape(6, 4))
    b = np_from_ndarray(tmp_path / "b", np.arange(24, 40, dtype=np.int64).reshape(4, 4))
    mixed = blend([a, b], [0.5, 0.5], seed=1, length=14)
    layout = block_layout(mixed, block_bytes=64)
    sources, local = mixed.sources_of(slice(None))
    for block in range(layout.num_blocks):
        members = layout.members[layout.bounds[block]:layout.bounds[block + 1]]  # type: ignore[index]
        keys = {(int(sources[p]), int(local[p]) // 2) for p in members}
        assert len(keys) == 1  # one source block (a cycled source's block appears with each of its reads)
    order = BlockOrder(layout, window_blocks=1, seed=0)
    assert sorted(order.take(np.arange(len(mixed))).tolist()) == list(range(len(mixed)))



@pytest.mark.parametrize("options", [{"seed": 1.5}, {"seed": True}, {"epoch": 2.0}, {"epoch": "1"}])
def test_a_block_order_refuses_a_float_bool_or_str_seed_or_epoch(options: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match=r"BlockOrder: (seed|epoch) must be an int, got"):
        BlockOrder(layout_of([3, 4, 5]), **options)

torch = pytest.importorskip("torch")
from mmap_ninja.adapters.torch import BlockShuffleSampler, ResumableSampler  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")


def rows_map(tmp_path: Path, n: int) -> Any:
    return np_from_ndarray(tmp_path / f"rows{n}", np.arange(n * 4, dtype=np.int64).reshape(n, 4), overwrite=True)


def rank_streams(layout: BlockLayout, world: int, **options: Any) -> list[list[int]]:
    samplers = [BlockShuffleSampler(layout, rank=r, world_size=world, **options) for r in range(world)]
    return [list(sampler) for sampler in samplers]


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 12), min_size=1, max_size=40), window=st.integers(1, 4),
       world=st.integers(2, 8), drop_last=st.booleans(), epoch=st.integers(0, 2))
def test_each_block_is_read_by_one_rank(sizes: list[int], window: int, world: int, drop_last: bool,
                                        epoch: int) -> None:
    layout = layout_of(sizes)
    n, block_bytes = len(layout), layout.block_bytes
    samplers = [BlockShuffleSampler(layout, window_blocks=window, seed=5, rank=r, world_size=world,
                                    drop_last=drop_last) for r in range(world)]
    for sampler in samplers:
        sampler.set_epoch(epoch)
    streams = [list(sampler) for sampler in samplers]
    length = len(samplers[0])
    assert all(len(stream) == length == len(sampler) for stream, sampler in zip(streams, samplers))
    read = [i for stream in streams for i in stream]
    assert samplers[0].padding == len(read) - n
    if drop_last:
        assert len(set(read)) == len(read)
    else:
        assert set(read) == set(range(n))
        assert len(read) - n <= world * max(sizes)  # padding: at most about one block per rank
    order = samplers[0]._order
    if order.parts != world:  # a rank would get no block: the epoch is striped (test_fewer_blocks_than_ranks_...)
        assert (np.diff(BlockOrder(layout, window_blocks=window, seed=5, epoch=epoch, parts=world).part_bounds) == 0
                ).any()
        return
    # each rank's own run: whole blocks, none shared with another rank
    touched = [set(layout.block_of(np.array(stream, dtype=np.int64)).tolist()) for stream in streams]
    owners = [r for r in range(world) if order.part_bounds[r + 1] > order.part_bounds[r]]
    for r in owners:
        for q in owners:
            if q != r:
                assert not touched[r] & touched[q]
        run = order.take(np.arange(order.part_bounds[r], order.part_bounds[r + 1]))
        assert set(streams[r]) <= set(run.tolist())  # padding comes from the rank's own blocks
    distinct_bytes = sum(len(blocks) for blocks in touched) * block_bytes
    assert distinct_bytes <= 1.1 * layout.num_blocks * block_bytes + world * block_bytes
    # a rank's windows hold window_blocks of its own blocks
    for r in owners:
        ends = [int(e) for e in order._window_ends if order.part_bounds[r] < e <= order.part_bounds[r + 1]]
        starts = [int(order.part_bounds[r]), *ends[:-1]]
        assert all(len(set(layout.block_of(order.take(np.arange(a, e))).tolist())) <= window
                   for a, e in zip(starts, ends))


def test_one_rank_reads_the_block_order_and_parts_balance_unequal_blocks() -> None:
    layout = layout_of([4, 1, 7, 3, 9, 2, 2, 5, 8, 1] * 10)
    single = BlockShuffleSampler(layout, window_blocks=3, seed=2)
    single.set_epoch(1)
    assert list(single) == BlockOrder(layout, window_blocks=3, seed=2, epoch=1).take(np.arange(len(layout))).tolist()
    assert single.padding == 0
    order = BlockOrder(layout, window_blocks=3, seed=2, parts=8)
    runs = np.diff(order.part_bounds)
    assert runs.sum() == len(layout) and runs.max() - runs.min() <= 2 * 9  # within a block or so of n / 8
    with pytest.raises(ValueError, match="parts"):
        BlockOrder(layout, parts=0)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 9), min_size=1, max_size=25), window=st.integers(1, 3),
       worlds=st.lists(st.integers(1, 6), min_size=2, max_size=3), fractions=st.lists(st.floats(0, 1), min_size=2,
                                                                                    max_size=2))
def test_elastic_resumes_read_the_rest_once(sizes: list[int], window: int, worlds: list[int],
                                            fractions: list[float]) -> None:
    layout = layout_of(sizes)
    n = len(layout)
    read_before: set[int] = set()
    state: Any = None
    for step, world in enumerate(worlds):
        samplers = [BlockShuffleSampler(layout, window_blocks=window, seed=9, rank=r, world_size=world)
                    for r in range(world)]
        for sampler in samplers:
            if state is not None:
                sampler.load_state_dict(state)
            else:
                sampler.set_epoch(1)
        length = len(samplers[0])
        assert all(len(sampler) == length for sampler in samplers)
        last = step == len(worlds) - 1
        steps = length if last else int(fractions[step] * length)
        now = [list(itertools.islice(sampler, steps)) for sampler in samplers]
        assert len({len(stream) for stream in now}) == 1  # the same count on every rank
        done = samplers[0]._base // world  # steps each rank had taken in this deal (an exact resume)
        runs = np.diff(samplers[0]._cuts).tolist()  # each rank's own samples; what follows is padding
        fresh = [i for stream, run in zip(now, runs) for i in stream[:max(run - done, 0)]]
        assert len(set(fresh)) == len(fresh) and not set(fresh) & read_before  # nothing read twice
        read_before |= set(fresh)
        if last:
            assert read_before == set(range(n))
        state = json.loads(json.dumps(samplers[0].state_dict()))
        assert all(sampler.state_dict() == state for sampler in samplers)


def test_sampler_on_a_map_state_resume_skip_and_refusals(tmp_path: Path) -> None:
    m = rows_map(tmp_path, 100)
    sampler = BlockShuffleSampler(m, 128, window_blocks=2, seed=3, rank=1, world_size=3)  # 4 rows a block
    assert sampler.layout.num_blocks == 25 and sampler.block_bytes == 128
    sampler.set_epoch(2)
    whole = list(sampler)
    sampler.set_epoch(2)
    iterator = iter(sampler)
    first = [next(iterator) for _ in range(10)]
    state = json.loads(json.dumps(sampler.state_dict()))
    assert len(json.dumps(state)) <= 256
    assert state["epoch"] == 2 and state["window_blocks"] == 2 and state["blocks"] == 25
    fresh = BlockShuffleSampler(m, 128, window_blocks=2, seed=0, rank=1, world_size=3)
    fresh.load_state_dict(state)  # continues epoch 2 without set_epoch, with the state's seed
    assert first + list(fresh) == whole
    # another world size: what no rank read is re-planned over the new ranks, each once
    before: list[int] = []
    for r in range(3):
        peer = BlockShuffleSampler(m, 128, window_blocks=2, seed=3, rank=r, world_size=3)
        peer.set_epoch(2)
        before += list(peer)[:10]
    ranks = [BlockShuffleSampler(m, 128, window_blocks=2, rank=r, world_size=2) for r in range(2)]
    for r in ranks:
        r.load_state_dict(state)
    rest = [i for r in ranks for i in r]
    assert len(ranks[0]) == len(ranks[1]) and len(rest) - len(set(rest)) < 2
    assert not set(rest) & set(before) and set(rest) | set(before) == set(range(100))
    order = BlockOrder(sampler.layout, window_blocks=2, seed=3, epoch=2).take(np.arange(100)).tolist()
    # skip: the global stream's next positions are stepped over
    skipping = BlockShuffleSampler(m, 128, window_blocks=2, seed=3, rank=0, world_size=1)
    skipping.set_epoch(2)
    skipping.skip(30)
    assert list(skipping) == order[30:]
    with pytest.raises(ValueError, match="blocks of 256 bytes"):
        BlockShuffleSampler(m, 256, window_blocks=2).load_state_dict(state)
    with pytest.raises(ValueError, match="queue must hold ranges"):
        BlockShuffleSampler(m, 128, window_blocks=2).load_state_dict({**state, "queue": [[90, 120]]})
    with pytest.raises(ValueError, match="not a BlockShuffleSampler state"):
        BlockShuffleSampler(m, 128).load_state_dict(ResumableSampler(100).state_dict())
    with pytest.raises(ValueError, match="older mmap_ninja whose shuffled order"):
        BlockShuffleSampler(m, 128, window_blocks=2).load_state_dict({**state, "version": 1})
    with pytest.raises(ValueError, match="version 99 is not supported"):
        BlockShuffleSampler(m, 128, window_blocks=2).load_state_dict({**state, "version": 99})
    with pytest.raises(ValueError, match="version 2 was saved by an older mmap_ninja whose shuffled order"):
        BlockShuffleSampler(m, 128, window_blocks=2).load_state_dict({**state, "version": 2})  # small windows
    with pytest.raises(ValueError, match="window_blocks"):
        BlockShuffleSampler(m, 128, window_blocks=0)


def test_sampler_reads_blocks_of_a_sharded_map_and_a_blend(tmp_path: Path) -> None:
    parts = []
    for k in range(3):
        np_from_ndarray(tmp_path / f"p{k}", np.full((10, 4), k, dtype=np.int64)).close()
        parts.append(tmp_path / f"p{k}")
    sharded = merge(tmp_path / "sharded", parts)
    stream = list(BlockShuffleSampler(sharded, 160, window_blocks=1, seed=1))  # 5 rows a block, 6 blocks
    assert sorted(stream) == list(range(30))
    assert len([k for k in range(30) if k == 0 or stream[k] // 5 != stream[k - 1] // 5]) == 6
    a, b = rows_map(tmp_path, 20), rows_map(tmp_path, 8)
    mixed = blend([a, b], [0.7, 0.3], seed=2)
    stream = list(BlockShuffleSampler(mixed, 64, window_blocks=2, seed=1))
    assert sorted(stream) == list(range(len(mixed)))


STATEFUL = pytest.importorskip("torchdata.stateful_dataloader")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_through_a_stateful_dataloader_is_exact(tmp_path: Path, num_workers: int) -> None:
    m = rows_map(tmp_path, 61)

    def loader() -> tuple[Any, BlockShuffleSampler]:
        sampler = BlockShuffleSampler(m, 96, window_blocks=3, seed=7, rank=0, world_size=2)  # 3 rows a block
        options: dict[str, Any] = {"num_workers": num_workers}
        if num_workers:
            options["prefetch_factor"] = 2
        return STATEFUL.StatefulDataLoader(list(range(61)), batch_size=4, sampler=sampler, **options), sampler

    def epochs(save_at: int | None) -> list[list[int]]:
        seen: list[list[int]] = []
        saved: Any = None
        step = 0
        while True:
            current, sampler = loader()
            start = 0
            if saved is not None:
                current.load_state_dict(saved[0])
                start = saved[1]
            crashed = False
            for epoch in range(start, 2):
                sampler.set_epoch(epoch)
                for batch in current:
                    seen.append(batch.tolist())
                    step += 1
                    if save_at is not None and step == save_at:
                        saved, save_at, crashed = (current.state_dict(), epoch), None, True
                        break
                if crashed:
                    break
            del current
            if not crashed:
                return seen

    whole = epochs(None)
    assert len(whole) == 2 * 8  # 31 indices on rank 0 of 2, in batches of 4
    for save_at in (1, 5, 8, 11):
        assert epochs(save_at) == whole


def test_skip_on_several_ranks_reads_the_rest_once() -> None:
    layout = layout_of([5, 3, 8, 2, 6, 4, 7, 1, 9, 5])
    n, world = len(layout), 3
    whole = rank_streams(layout, world, window_blocks=2, seed=4)
    interleaved = [whole[r][k] for k in range(len(whole[0])) for r in range(world)]
    for skipped in (6, 7):  # a multiple of the world size continues each rank's stream; another re-plans
        ranks = [BlockShuffleSampler(layout, window_blocks=2, seed=4, rank=r, world_size=world) for r in range(world)]
        for sampler in ranks:
            sampler.skip(skipped)
        rest = [list(sampler) for sampler in ranks]
        assert len({len(stream) for stream in rest}) == 1
        if skipped % world == 0:
            assert rest == [stream[skipped // world:] for stream in whole]
        else:
            assert set(interleaved[:skipped]) | {i for stream in rest for i in stream} == set(range(n))
            assert not set(interleaved[:skipped]) & {i for stream in rest for i in stream}
    running = BlockShuffleSampler(layout, window_blocks=2, seed=4, rank=1, world_size=world)
    iterator = iter(running)
    first = [next(iterator), next(iterator)]
    running.skip(3)  # a running iterator continues after the skipped positions
    assert first + list(iterator) == whole[1][:2] + whole[1][3:]


def test_fewer_blocks_than_ranks_deal_every_sample_once_in_equal_shuffled_counts() -> None:
    """DistributedSampler's contract when a rank would get no block (issue 22): ceil(n / world) indices per rank
    (floor with drop_last), every sample once across the ranks apart from the padding, shuffled."""
    for n, blocks, world, drop_last in itertools.product(range(1, 25), (1, 2, 3), range(1, 9), (False, True)):
        if blocks > n or (blocks >= world > 1):  # blocks >= ranks: dealt by blocks (the test above)
            continue
        layout = BlockLayout((np.arange(blocks + 1) * n) // blocks)
        streams = rank_streams(layout, world, seed=3, drop_last=drop_last)
        read = [i for stream in streams for i in stream]
        expected = n // world if drop_last else -(-n // world)
        assert all(len(stream) == expected for stream in streams), (n, blocks, world, drop_last, streams)
        if drop_last:
            assert len(set(read)) == len(read) == expected * world
        else:
            assert set(read) == set(range(n)) and len(read) == expected * world
    assert sum(stream == sorted(stream) for stream in rank_streams(layout_of([1000]), 4)) == 0  # shuffled


def test_a_small_map_read_by_more_ranks_than_blocks(tmp_path: Path) -> None:
    rows = np_from_ndarray(tmp_path / "rows", np.arange(10))  # one block of 8 MiB holds them all
    streams = [list(BlockShuffleSampler(rows, rank=r, world_size=4)) for r in range(4)]
    assert [len(stream) for stream in streams] == [3] * 4
    assert {i for stream in streams for i in stream} == set(range(10))
    assert all(stream != list(range(10)) for stream in streams)
    big = np_from_ndarray(tmp_path / "big", np.zeros((2000, 250), dtype=np.int64))  # 4 MB: one block, 2 ranks
    halves = [list(BlockShuffleSampler(big, rank=r, world_size=2, seed=1)) for r in range(2)]
    assert [len(half) for half in halves] == [1000, 1000] and set(halves[0]) | set(halves[1]) == set(range(2000))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 30), world=st.integers(2, 8), other=st.integers(1, 8), fraction=st.floats(0, 1),
       drop_last=st.booleans())
def test_a_striped_epoch_resumes_exactly_and_elastically(n: int, world: int, other: int, fraction: float,
                                                         drop_last: bool) -> None:
    layout = layout_of([n])  # one block: striped on every world size above 1
    first = [BlockShuffleSampler(layout, rank=r, world_size=world, seed=4, drop_last=drop_last)
             for r in range(world)]
    whole = [list(sampler) for sampler in first]
    steps = int(fraction * len(first[0]))
    partial = [list(itertools.islice(iter(sampler), steps)) for sampler in first]
    state = json.loads(json.dumps(first[0].state_at(steps)))
    again = [BlockShuffleSampler(layout, rank=r, world_size=world, seed=4) for r in range(world)]
    for sampler in again:
        sampler.load_state_dict(state)
    assert [p + list(sampler) for p, sampler in zip(partial, again)] == whole  # the same world size: exact
    runs = np.diff(first[0]._cuts).tolist()  # each rank's own samples; what follows is padding
    read = {i for p, run in zip(partial, runs) for i in p[:run]}
    rest = [BlockShuffleSampler(layout, rank=r, world_size=other, seed=4) for r in range(other)]
    for sampler in rest:
        sampler.load_state_dict(state)
    streams = [list(sampler) for sampler in rest]
    assert len({len(stream) for stream in streams}) == 1
    if not drop_last:
        assert read | {i for stream in streams for i in stream} == set(range(n))


def test_a_state_saved_before_striping_continues_its_own_deal_then_epochs_are_striped() -> None:
    """A state of a map with fewer blocks than ranks saved before 1.0.0's striping (one part per rank, no queue)
    continues the deal it was saved in (rank 0 read its block, the other ranks repeat it); the next epoch is
    striped."""
    layout = layout_of([10])
    state = {**BlockShuffleSampler(layout, world_size=4, rank=0).state_dict(), "position": 4, "parts": 4}
    del state["queue"]
    samplers = [BlockShuffleSampler(layout, world_size=4, rank=r) for r in range(4)]
    for sampler in samplers:
        sampler.load_state_dict(state)
    assert [len(sampler) for sampler in samplers] == [10] * 4  # the old deal: the longest run, 10
    rest = [list(sampler) for sampler in samplers]
    cuts = samplers[0]._cuts.tolist()
    owner = int(np.argmax(np.diff(cuts)))  # the rank holding the one block
    assert np.diff(cuts).tolist().count(10) == 1 and len(rest[owner]) == 9
    assert set(rest[owner]) | {BlockOrder(layout, parts=4)[cuts[owner]]} == set(range(10))
    for sampler in samplers:
        sampler.set_epoch(1)
    assert [len(sampler) for sampler in samplers] == [3] * 4


def test_a_version_2_state_loads_where_every_order_of_the_layout_did_not_change() -> None:
    # One block of 2,000 samples: its windows' orders have more than 1,024 indices, which version 3 kept as they were
    # (and an order of one block is the identity), so a version-2 state still resumes exactly.
    layout = BlockLayout([0, 2000])
    sampler = BlockShuffleSampler(layout, window_blocks=2, seed=3, rank=0, world_size=2)
    sampler.set_epoch(1)
    stream = iter(sampler)
    first = [next(stream) for _ in range(100)]
    state = sampler.state_dict()
    assert state["version"] == 3
    resumed = BlockShuffleSampler(layout, window_blocks=2, seed=3, rank=0, world_size=2)
    resumed.load_state_dict({**state, "version": 2})
    whole = BlockShuffleSampler(layout, window_blocks=2, seed=3, rank=0, world_size=2)
    whole.set_epoch(1)
    assert first + list(resumed) == list(whole)


def test_block_sampler_refuses_float_and_bool_counts_and_state_values() -> None:
    layout = layout_of([4, 3, 5, 2])
    with pytest.raises(TypeError, match="rank must be an int"):
        BlockShuffleSampler(layout, rank=0.5, world_size=2)
    sampler = BlockShuffleSampler(layout)
    for call in (lambda: sampler.set_epoch(1.5), lambda: sampler.skip(True), lambda: sampler.state_at(2.5)):
        with pytest.raises(TypeError, match="must be an int, got"):
            call()
    with pytest.raises(TypeError, match="state's 'position' must be an int"):
        sampler.load_state_dict({**sampler.state_dict(), "position": 2.5})


def test_a_copy_of_a_block_sampler_with_a_running_iterator_keeps_a_later_skip() -> None:
    import copy

    layout = layout_of([4, 3, 5, 2, 6])
    sampler = BlockShuffleSampler(layout)
    running = iter(sampler)  # still running when copied
    next(running)
    copied = copy.deepcopy(sampler)
    copied.skip(5)
    fresh = BlockShuffleSampler(layout)
    fresh.skip(6)
    assert list(copied) == list(fresh)


def test_a_block_sampler_state_is_refused_by_a_resumable_sampler() -> None:
    layout = layout_of([4, 3, 5, 2])
    sampler = BlockShuffleSampler(layout)
    running = iter(sampler)
    next(running)
    with pytest.raises(ValueError, match="a BlockShuffleSampler state"):
        ResumableSampler(len(layout)).load_state_dict(sampler.state_dict())
