"""`mmap_ninja.blend`: several maps mixed by weight, per position, with each source read in its own order."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mmap_ninja
from mmap_ninja import NumpyMmap, Order, RaggedMmap, StringsMmap, blend
from mmap_ninja.testing import assert_holds, spec_for


def reference_stream(blended: Any, lengths: list[int], seed: int, shuffle: bool = True) -> list[tuple[int, int]]:
    """(source, local) per position, from the sources the blend reports and per-source draw counters: the c-th
    draw of source k must be Order(n_k, seed=(seed << 32) + k, epoch=c // n_k)[c % n_k] (seeds below 2**32)."""
    drawn = [0] * len(lengths)
    stream = []
    sources, _ = blended.sources_of(slice(None))
    for k in sources.tolist():
        n, c = lengths[k], drawn[k]
        stream.append((k, Order(n, seed=(seed << 32) + k, epoch=c // n, shuffle=shuffle)[c % n]))
        drawn[k] += 1
    return stream


def assert_prefix_counts_close(sources: np.ndarray, segments: list[tuple[int, list[float]]], count: int) -> None:
    """Over every prefix of every segment, source k's count is within max(2, 0.01 w L) of w L."""
    bounds = [start for start, _ in segments] + [len(sources)]
    for (start, weights), stop in zip(segments, bounds[1:]):
        w = np.asarray(weights, dtype=float) / sum(weights)
        prefix = np.arange(1, stop - start + 1)
        for k in range(count):
            got = np.cumsum(sources[start:stop] == k)
            error = np.abs(got - w[k] * prefix)
            allowed = np.maximum(2, 0.01 * w[k] * prefix)
            worst = int(np.argmax(error - allowed)) if len(prefix) else 0
            assert (error <= allowed).all(), (f"source {k} (weight {w[k]:.2g}) drawn {got[worst]} times in the "
                                              f"first {worst + 1} positions after {start}")


def lists(lengths: list[int]) -> list[list[int]]:
    return [list(range(1000 * k, 1000 * k + n)) for k, n in enumerate(lengths)]


def test_each_position_reads_the_next_sample_of_its_source_in_that_sources_order() -> None:
    lengths = [5, 100, 1000]
    blended = blend(lists(lengths), [0.5, 0.3, 0.2], seed=4, length=3000)
    stream = reference_stream(blended, lengths, seed=4)
    assert [blended.source_of(i) for i in range(3000)] == stream
    assert blended[:] == [1000 * k + local for k, local in stream]
    assert blended.counts(3000) == [1500, 900, 600]


def test_every_source_epoch_holds_each_sample_once_and_small_sources_cycle() -> None:
    lengths = [7, 50, 400]
    blended = blend(lists(lengths), [1, 1, 1], seed=1, length=300)
    sources, local = blended.sources_of(slice(None))
    for k, n in enumerate(lengths):
        draws = local[sources == k]
        for start in range(0, len(draws), n):
            epoch = draws[start:start + n]
            assert len(set(epoch.tolist())) == len(epoch)  # no repeat within a source epoch
            if len(epoch) == n:
                assert sorted(epoch.tolist()) == list(range(n))
    first, second = local[sources == 0][:7], local[sources == 0][7:14]
    assert not np.array_equal(first, second)  # a new order in each source epoch


def test_length_defaults_to_the_sum_of_the_sources() -> None:
    assert len(blend(lists([3, 4, 5]), [1, 2, 3])) == 12


@pytest.mark.parametrize("weights", [[0.7, 0.2, 0.1], [1e-4, 0.5, 0.4999], [1, 0, 1]])
def test_prefix_counts_stay_close_to_the_weights(weights: list[float]) -> None:
    blended = blend(lists([10, 10, 10]), weights, length=200_000)
    sources, _ = blended.sources_of(slice(None))
    assert_prefix_counts_close(sources, [(0, weights)], 3)


def test_a_hundred_sources_with_tiny_weights_keep_their_ratios() -> None:
    rng = np.random.default_rng(3)
    weights = list(10 ** rng.uniform(-4, 0, 100))
    weights = [w / sum(weights) for w in weights]
    weights = [max(w, 1e-4) for w in weights]
    blended = blend([[0]] * 100, weights, length=100_000)
    sources, _ = blended.sources_of(slice(None))
    assert_prefix_counts_close(sources, [(0, weights)], 100)


def test_a_schedule_changes_weights_without_repeating_or_skipping_within_a_source_epoch() -> None:
    lengths = [300, 300]
    schedule = [(100, [0.1, 0.9]), (350, [0.9, 0.1]), (500, [0, 1])]
    blended = blend(lists(lengths), [0.5, 0.5], seed=2, length=600, schedule=schedule)
    stream = reference_stream(blended, lengths, seed=2)
    assert [blended.source_of(i) for i in range(600)] == stream
    sources = np.array([k for k, _ in stream])
    assert_prefix_counts_close(sources, [(0, [0.5, 0.5]), *schedule], 2)
    assert (sources[500:] == 1).all()
    for k in range(2):
        draws = [local for source, local in stream if source == k][:300]
        assert len(set(draws)) == len(draws)
    assert blended.schedule == [(0, [0.5, 0.5]), *[(p, list(w)) for p, w in schedule]]


def test_scalar_and_batched_lookups_agree_in_every_indexing_form() -> None:
    blended = blend(lists([13, 29, 3]), [0.2, 0.5, 0.3], seed=7, length=500)
    every = [blended[i] for i in range(500)]
    assert blended[:] == every == list(blended)
    assert blended[10:50:3] == every[10:50:3]
    assert blended[::-7] == every[::-7]
    assert blended[[4, -1, 4, 0]] == [every[4], every[-1], every[4], every[0]]
    assert blended[np.array([2, 3])] == every[2:4]
    mask = np.arange(500) % 5 == 2
    assert blended[mask] == [x for x, keep in zip(every, mask) if keep]
    assert blended[np.int64(-3)] == every[-3]
    assert blended.__getitems__([9, 8]) == [every[9], every[8]]
    for bad in (500, -501):
        with pytest.raises(IndexError, match="out of range"):
            blended[bad]
    with pytest.raises(TypeError, match="boolean scalar"):
        blended[True]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: blend(lists([3, 3]), [1]), "1 weights for 2 sources"),
    (lambda: blend(lists([3, 3]), [1, -1]), "source 1 must be a finite number >= 0"),
    (lambda: blend(lists([3, 3]), [1, float("nan")]), "source 1"),
    (lambda: blend(lists([3, 3]), [0, 0]), "at least one weight"),
    (lambda: blend([[1], []], [1, 1]), "source 1 of the blend is empty"),
    (lambda: blend(lists([3, 3]), [1, 1], schedule=[(4, [1, 0]), (2, [0, 1])]), "must increase"),
    (lambda: blend(lists([3, 3]), [1, 1], length=-1), "length"),
    (lambda: blend([], []), "at least one source"),
    (lambda: blend("some/path", [1]), "sequence of maps"),
    (lambda: blend(lists([3, 3]), {0: 1, 1: 1}), "a sequence of numbers, one per source, got a dict"),
    (lambda: blend(lists([3, 3]), ["0.5", "0.5"]), "the weight of source 0 must be a number, got '0.5'"),
    (lambda: blend(lists([3, 3]), "ab"), "a sequence of numbers"),
    (lambda: blend(lists([3, 3]), [True, False]), "the weight of source 0 must be a number, got True"),
    (lambda: blend(lists([3, 3]), [1, None]), "the weight of source 1 must be a number, got None"),
    (lambda: blend(lists([3, 3]), [1, 1], schedule=[(0, [0, 1]), (0, [1, 0])]), "must increase.* got 0 after 0"),
    (lambda: blend(lists([3, 3]), [1, 1], schedule=[5]), r"schedule entry 0 must be a \(position, weights\) pair"),
    (lambda: blend(lists([3, 3]), [1, 1], schedule=[(5, [1, 1], 3)]), "schedule entry 0 must be a"),
    (lambda: blend(lists([3, 3]), [1, 1]).source_of(1.5), "indexed by an int.* got 1.5"),
    (lambda: blend(lists([3, 3]), [1, 1]).counts(2.5), "prefix must be an int"),
    (lambda: blend(lists([3, 3]), [1, 1]).counts(True), "prefix must be an int"),
    (lambda: blend(lists([3, 3]), [1, 1]).source(2), "source 2 is out of range: the blend has 2 sources"),
    (lambda: blend(lists([3, 3]), [1, 1]).source(-1), "source -1 is out of range"),
    (lambda: blend(lists([3, 3]), [1, 1]).source(1.0), "a source number must be an int"),
])
def test_bad_arguments_are_refused_clearly(call: Any, message: str) -> None:
    with pytest.raises((ValueError, TypeError, IndexError), match=message):
        call()


def numpy_map(path: Path, start: int, n: int) -> NumpyMmap:
    return mmap_ninja.np_from_ndarray(path, np.arange(start, start + 2 * n, dtype=np.int32).reshape(n, 2))


def test_maps_as_sources_pickle_by_path_and_respect_the_open_sources_budget(tmp_path: Path) -> None:
    maps = [numpy_map(tmp_path / f"m{k}", 1000 * k, 20 + k) for k in range(6)]
    blended = blend(maps, [1] * 6, seed=3, max_open_sources=2)
    assert blended.open_sources <= 2
    want = [np.array(x) for x in blended]
    assert blended.open_sources <= 2
    data = pickle.dumps(blended)
    assert len(data) <= 4096 + 300 * 6
    copy = pickle.loads(data)
    assert copy.open_sources == 0
    assert all(np.array_equal(a, b) for a, b in zip(copy[:], want))
    by_path = blend([str(tmp_path / f"m{k}") for k in range(6)], [1] * 6, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(by_path[:], want))


def test_get_batch_for_sources_of_one_kind_and_schema(tmp_path: Path) -> None:
    maps = [numpy_map(tmp_path / f"m{k}", 1000 * k, 10 + 5 * k) for k in range(3)]
    blended = blend(maps, [0.5, 0.3, 0.2], seed=1)
    picked = [0, 5, 17, 3, 29]
    batch = blended.get_batch(picked)
    assert batch.shape == (5, 2) and batch.dtype == np.int32
    assert np.array_equal(batch, np.stack([blended[i] for i in picked]))
    out = np.empty((5, 2), dtype=np.int32)
    blended.get_batch(picked, out=out)
    assert np.array_equal(out, batch)
    strings = StringsMmap.from_generator(tmp_path / "s", (str(i) for i in range(5)), 5)
    with pytest.raises(TypeError, match=r"source 1 of the blend \(StringsMmap\) has no get_batch"):
        blend([maps[0], strings], [1, 1]).get_batch([0, 1, 2])
    wider = mmap_ninja.np_from_ndarray(tmp_path / "wide", np.zeros((4, 2), dtype=np.int64))
    with pytest.raises(TypeError, match=r"source 0 has .* source 1 has"):
        blend([maps[0], wider], [1, 1]).get_batch([0, 1, 2])


def test_blend_of_one_unshuffled_source_passes_the_kits_read_checks(tmp_path: Path) -> None:
    for name in ("strings", "ragged", "numpy", "records"):
        spec = spec_for(name)
        n = 23
        source = spec.container.from_generator(tmp_path / name, (spec.make_sample(i) for i in range(n)), 7,
                                               **spec.build_options)
        assert_holds(spec, blend([source], [1.0], shuffle=False), n, f"a blend of one {name} map")


def test_dataloader_workers_read_a_blend(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    maps = [numpy_map(tmp_path / f"m{k}", 1000 * k, 15) for k in range(3)]
    blended = blend(maps, [0.2, 0.3, 0.5], seed=9)
    loader = torch.utils.data.DataLoader(blended, batch_size=8, num_workers=2)
    got = torch.cat([batch for batch in loader]).numpy()
    assert np.array_equal(got, np.stack(list(blended)))


def test_resumable_sampler_over_a_blend_resumes_exactly(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from mmap_ninja.adapters.torch import ResumableSampler

    blended = blend(lists([11, 40]), [0.3, 0.7], seed=5, length=200)
    sampler = ResumableSampler(blended, shuffle=False)
    iterator = iter(sampler)
    first = [blended[i] for i in (next(iterator) for _ in range(77))]
    fresh = ResumableSampler(blended, shuffle=False)
    fresh.load_state_dict(sampler.state_dict())
    assert first + [blended[i] for i in fresh] == blended[:]


def test_exported() -> None:
    assert {"blend", "BlendedMap"} <= set(mmap_ninja.__all__)


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=6), data=st.data(), seed=st.integers(0, 2**31),
       length=st.integers(0, 3000))
def test_property_against_the_reference_stream(lengths: list[int], data: Any, seed: int, length: int) -> None:
    weights = data.draw(st.lists(st.floats(1e-4, 1.0), min_size=len(lengths), max_size=len(lengths)))
    change_at = data.draw(st.integers(0, length))
    later = data.draw(st.lists(st.floats(0, 1.0), min_size=len(lengths), max_size=len(lengths)))
    schedule = [(change_at, later)] if sum(later) > 0 and change_at > 0 else []
    blended = blend(lists(lengths), weights, seed=seed, length=length, schedule=schedule)
    stream = reference_stream(blended, lengths, seed)
    sample = range(0, length, max(1, length // 50))
    assert [blended.source_of(i) for i in sample] == [stream[i] for i in sample]
    assert blended[:] == [1000 * k + local for k, local in stream]
    sources = np.array([k for k, _ in stream], dtype=np.int64)
    assert_prefix_counts_close(sources, [(0, weights), *schedule], len(lengths))
    assert blended.counts(length) == np.bincount(sources, minlength=len(lengths)).tolist()


@pytest.mark.slow
@settings(max_examples=15, deadline=None)
@given(count=st.integers(2, 100), seed=st.integers(0, 2**31), spread=st.floats(0, 4))
def test_property_ratios_of_many_sources_over_long_prefixes(count: int, seed: int, spread: float) -> None:
    rng = np.random.default_rng(seed)
    weights = 10 ** rng.uniform(-spread, 0, count)
    weights = np.maximum(weights / weights.sum(), 1e-4).tolist()
    blended = blend([[0]] * count, weights, length=400_000)
    sources, _ = blended.sources_of(slice(None))
    assert_prefix_counts_close(sources, [(0, weights)], count)


def test_tiny_and_huge_weights_are_only_ratios() -> None:
    assert blend(lists([2, 2]), [0.0, 5e-324], length=4).sources_of(slice(None))[0].tolist() == [1, 1, 1, 1]
    assert blend(lists([2, 2]), [1e300, 1e300], length=4).counts(4) == [2, 2]


def test_empty_blends_and_empty_batches() -> None:
    empty = blend(lists([3, 4]), [1, 1], length=0)
    assert len(empty) == 0 and list(empty) == [] and empty[:] == [] and empty.counts(0) == [0, 0]
    sources, local = empty.sources_of([])
    assert sources.size == 0 and local.size == 0
    with pytest.raises(IndexError):
        empty[0]


def test_threads_share_one_blend_with_a_tiny_open_budget(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    maps = [numpy_map(tmp_path / f"m{k}", 1000 * k, 9) for k in range(5)]
    blended = blend(maps, [1] * 5, seed=2, max_open_sources=1)
    want = [np.array(x) for x in blend(maps, [1] * 5, seed=2)]

    def read_all(_: int) -> bool:
        return all(np.array_equal(blended[i], want[i]) for i in range(len(blended)))

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(read_all, range(8)))
    assert blended.open_sources <= 1


@pytest.mark.parametrize("size", [1, 7, 300, 5000])
def test_batched_lookups_of_many_sources_equal_the_scalar_path(size: int) -> None:
    # a deep tree (100 sources, weights down to 1e-4), small and cycling sources, a schedule: the batched descent
    # (finished positions dropped, the last few finished one by one) and the vectorized orders (round keys looked
    # up or derived, the cycle walk's stragglers finished in Python) against one position at a time
    rng = np.random.default_rng(size)
    weights = [max(w, 1e-4) for w in 10 ** rng.uniform(-4, 0, 100)]
    lengths = rng.integers(1, 3000, 100).tolist()
    later = list(reversed(weights))
    blended = blend([list(range(n)) for n in lengths], weights, seed=5, length=400_000,
                    schedule=[(150_000, later)])
    positions = rng.integers(0, len(blended), size)
    sources, local = blended.sources_of(positions)
    assert list(zip(sources.tolist(), local.tolist())) == [blended.source_of(int(i)) for i in positions]
    assert blended[positions.tolist()] == [blended[int(i)] for i in positions]


def test_batches_over_many_sources_equal_the_samples_read_one_by_one(tmp_path: Path) -> None:
    # many sources touched by one batch (its rows grouped by source, then put back in place), one source alone,
    # one position, none, and repeated positions: get_batch and __getitems__ against m[i]
    maps = [numpy_map(tmp_path / f"m{k}", 1000 * k, 20 + k) for k in range(40)]
    rng = np.random.default_rng(4)
    blended = blend(maps, [max(w, 1e-3) for w in 10 ** rng.uniform(-3, 0, 40)], seed=2)
    alone = next(i for i in range(len(blended)) if blended.source_of(i)[0] == 0)
    for picked in (rng.integers(0, len(blended), 700).tolist(), [alone, alone], [5], [], [3, 3, 9, 3]):
        batch = blended.get_batch(picked)
        assert batch.shape == (len(picked), 2) and batch.dtype == np.int32
        assert np.array_equal(batch, np.array([blended[i] for i in picked], dtype=np.int32).reshape(-1, 2))
        items = blended.__getitems__(picked)
        assert len(items) == len(picked) and all(np.array_equal(a, blended[i]) for a, i in zip(items, picked))


def test_batched_reads_with_negative_positions_and_a_schedule_equal_one_by_one(tmp_path: Path) -> None:
    # sources of different lengths (small ones cycling through several source epochs, so several orders per
    # source in one batch), a schedule, positions drawn from the whole range counted from either end
    lengths = [3, 17, 250, 1000, 64]
    maps = [numpy_map(tmp_path / f"m{k}", 10_000 * k, n) for k, n in enumerate(lengths)]
    blended = blend(maps, [0.4, 0.3, 0.2, 0.05, 0.05], seed=11, length=5000,
                    schedule=[(1200, [0.1, 0.1, 0.1, 0.6, 0.1]), (3100, [0.05, 0.5, 0.05, 0.2, 0.2])])
    rng = np.random.default_rng(6)
    for size in (1, 33, 600):
        picked = rng.integers(-len(blended), len(blended), size).tolist()
        want = [blended[i] for i in picked]
        assert np.array_equal(blended.get_batch(picked), np.array(want, dtype=np.int32).reshape(-1, 2))
        assert np.array_equal(blended.get_batch(np.array(picked)), blended.get_batch(picked))
        items = blended.__getitems__(picked)
        assert len(items) == size and all(np.array_equal(a, b) for a, b in zip(items, want))
        assert [blended.source_of(i) for i in picked] == list(zip(*(a.tolist() for a in blended.sources_of(picked))))


def test_get_batch_of_scalar_samples_puts_each_in_place(tmp_path: Path) -> None:
    # sources whose samples are scalars (a 1-D batch): the parts read per source are gathered back in order
    maps = [mmap_ninja.np_from_ndarray(tmp_path / f"s{k}", np.arange(100 * k, 100 * k + n, dtype=np.int64))
            for k, n in enumerate([5, 40, 9])]
    blended = blend(maps, [0.5, 0.3, 0.2], seed=4, length=300)
    picked = np.random.default_rng(1).integers(-300, 300, 257).tolist()
    batch = blended.get_batch(picked)
    assert batch.shape == (257,) and batch.dtype == np.int64
    assert batch.tolist() == [int(blended[i]) for i in picked]


@pytest.mark.parametrize("count", [1, 2, 100])
def test_batched_lookups_equal_the_scalar_path_within_one_schedule_segment_and_across(count: int) -> None:
    # the batched walk (the root's step with scalars, one table lookup per level, finished rows dropped as the
    # share still descending halves, the last few finished one by one) and a batch that falls in one segment of a
    # schedule (the fast path) or spans several, against source_of one position at a time: 1, 2 and 100 sources,
    # weights down to 1e-4, a weight of 0, small sources that cycle, batches of 1 to 4096 positions
    rng = np.random.default_rng(count)
    weights = [max(w, 1e-4) for w in 10 ** rng.uniform(-4, 0, count)]
    changed = [max(w, 1e-4) for w in 10 ** rng.uniform(-4, 0, count)]
    if count > 1:
        changed[0] = 0.0
    lengths = rng.integers(1, 5000, count).tolist()
    blended = blend([list(range(n)) for n in lengths], weights, seed=7, length=300_000,
                    schedule=[(100_000, changed), (200_000, list(reversed(weights)))])
    for size in (1, 3, 17, 256, 1024, 4096):
        for low, high in ((0, 100_000), (100_000, 200_000), (200_000, 300_000), (0, 300_000), (90_000, 210_000)):
            positions = rng.integers(low, high, size)
            sources, local = blended.sources_of(positions)
            assert list(zip(sources.tolist(), local.tolist())) == [blended.source_of(int(i)) for i in positions]


def test_get_batch_of_sources_whose_samples_differ_in_shape_is_refused_as_one_map_refuses_it(tmp_path: Path) -> None:
    # ragged sources of one kind and schema, each with samples of one shape but not the same one: the parts read
    # per source are arrays of one dtype that cannot be stacked, so the batch is the sources' own join (an error
    # naming two shapes, or a padded batch with pad_value), never a mix
    narrow = RaggedMmap.from_generator(tmp_path / "narrow", (np.full(3, i) for i in range(10)), 4)
    wide = RaggedMmap.from_generator(tmp_path / "wide", (np.full(5, 100 + i) for i in range(10)), 4)
    blended = blend([narrow, wide], [0.5, 0.5], seed=1)
    with pytest.raises(ValueError, match=r"cannot stack samples of different shapes: item \d has shape \((3|5),\)"):
        blended.get_batch(range(6))
    padded, lengths = blended.get_batch(range(6), pad_value=-1)
    assert padded.shape == (6, 5) and sorted(set(lengths.tolist())) == [3, 5]
    for row, i in zip(padded, range(6)):
        sample = blended[i]
        assert np.array_equal(row[:len(sample)], sample) and (row[len(sample):] == -1).all()
    alone = [i for i in range(20) if blended.source_of(i)[0] == 0][:4]
    assert np.array_equal(blended.get_batch(alone), np.stack([blended[i] for i in alone]))


@pytest.mark.parametrize(("seed", "other"), [(5, 5 + 2**32), (0, 2**32), (2**32 - 1, -1), (7, 7 + 2**40)])
def test_seeds_that_differ_below_2_64_give_different_blends(seed: int, other: int) -> None:
    sources = lists([50, 40, 30])
    first = blend(sources, [1, 1, 1], seed=seed)
    second = blend(sources, [1, 1, 1], seed=other)
    assert first.sources_of(slice(None))[1].tolist() != second.sources_of(slice(None))[1].tolist()


def test_a_seed_of_64_bits_reads_each_source_epoch_once() -> None:
    sources = lists([7, 40])
    blended = blend(sources, [0.5, 0.5], seed=2**63 + 12345, length=140)
    ks, local = blended.sources_of(slice(None))
    assert [blended.source_of(i) for i in range(140)] == list(zip(ks.tolist(), local.tolist()))
    small = local[ks == 0].tolist()
    assert all(sorted(small[e * 7:(e + 1) * 7]) == list(range(7)) for e in range(len(small) // 7))
