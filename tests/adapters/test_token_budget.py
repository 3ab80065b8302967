"""`TokenBudgetBatchSampler`: whole-sample batches under a token budget, equal counts per rank, exact resume."""

import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from mmap_ninja import RaggedMmap  # noqa: E402
from mmap_ninja.adapters.torch import TokenBudgetBatchSampler  # noqa: E402


def token_map(path, lengths):
    return RaggedMmap.from_lists(path, [np.full(n, i % 100, dtype=np.uint16) for i, n in enumerate(lengths)],
                                 dtype=np.uint16)


def padded_size(lengths, batch):
    return max(max(lengths[i] for i in batch), 1) * len(batch)


def run(sampler):
    return [list(batch) for batch in sampler]


def test_batches_stay_within_the_budget_and_cover_every_sample_once(tmp_path):
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 300, size=500).tolist()
    tokens = token_map(tmp_path / "m", lengths)
    for shuffle in (True, False):
        sampler = TokenBudgetBatchSampler(tokens, 512, shuffle=shuffle, pool_size=128)
        batches = run(sampler)
        assert all(padded_size(lengths, b) <= 512 for b in batches)
        assert sorted(i for b in batches for i in b) == list(range(500))
        assert len(sampler) == len(batches)
        report = sampler.padding_report()
        assert report.batches == len(batches) and report.real_tokens == sum(lengths)
        assert report.padded_tokens == sum(padded_size(lengths, b) for b in batches)
        assert 0 <= report.padding_share < 1
    # Within a pool, batches group similar lengths: far less padding than the same pools cut in arrival order.
    assert TokenBudgetBatchSampler(tokens, 512, pool_size=500).padding_report().padding_share < 0.1


def test_a_sample_longer_than_the_budget_is_refused_by_name(tmp_path):
    tokens = token_map(tmp_path / "m", [10, 20, 700, 5])
    with pytest.raises(ValueError, match=r"sample 2 of .*m has 700 tokens, more than max_tokens=512"):
        TokenBudgetBatchSampler(tokens, 512)
    with pytest.raises(ValueError, match="max_tokens must be at least 1"):
        TokenBudgetBatchSampler(tokens, 0)
    with pytest.raises(ValueError, match=r"rank must be in \[0, 1\], got 2"):
        TokenBudgetBatchSampler(tokens, 1024, rank=2, world_size=2)
    with pytest.raises(TypeError, match="needs a RaggedMmap of token sequences"):
        TokenBudgetBatchSampler([1, 2], 1024)


def test_epochs_and_seeds_reorder_and_repeat(tmp_path):
    tokens = token_map(tmp_path / "m", list(range(1, 200)))
    a = TokenBudgetBatchSampler(tokens, 400, seed=1, pool_size=64)
    first = run(a)
    assert run(a) == first  # the same epoch again
    a.set_epoch(1)
    assert run(a) != first
    assert run(TokenBudgetBatchSampler(tokens, 400, seed=1, pool_size=64)) == first
    assert run(TokenBudgetBatchSampler(tokens, 400, seed=2, pool_size=64)) != first


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 64), min_size=0, max_size=80), st.integers(1, 5), st.integers(1, 40),
       st.booleans(), st.booleans(), st.integers(0, 3))
def test_every_rank_gets_the_same_number_of_batches(tmp_path_factory, lengths, world_size, pool_size, drop_last,
                                                    shuffle, epoch):
    tokens = token_map(tmp_path_factory.mktemp("r") / "m", lengths)
    per_rank = []
    for rank in range(world_size):
        sampler = TokenBudgetBatchSampler(tokens, 64, rank=rank, world_size=world_size, pool_size=pool_size,
                                          drop_last=drop_last, shuffle=shuffle)
        sampler.set_epoch(epoch)
        per_rank.append(run(sampler))
        assert len(sampler) == len(per_rank[-1])
        assert all(b and padded_size(lengths, b) <= 64 for b in per_rank[-1])
    assert len({len(batches) for batches in per_rank}) == 1
    seen = Counter(i for batches in per_rank for b in batches for i in b)
    if drop_last:
        assert max(seen.values(), default=1) == 1
    else:
        assert set(seen) == set(range(len(lengths)))
    # Repeats only pad pools with fewer samples than ranks: at most world_size - 1 batches per pool.
    pools = -(-len(lengths) // pool_size)
    assert sum(seen.values()) - len(set(seen)) <= (world_size - 1) * pools * 64
    tokens.close()


def resumed(tokens, saved_after, world_sizes, **options):
    """Every batch of one epoch: the ranks of world_sizes[0] run ``saved_after`` steps and save, then the ranks of
    world_sizes[1] load rank 0's state and run to the end. Returns (batches before, batches after)."""
    before, states = [], []
    for rank in range(world_sizes[0]):
        sampler = TokenBudgetBatchSampler(tokens, 256, rank=rank, world_size=world_sizes[0], **options)
        iterator = iter(sampler)
        before += [next(iterator) for _ in range(saved_after)]
        states.append(sampler.state_dict())
    assert all(state == states[0] for state in states)  # the state is the same on every rank
    assert len(json.dumps(states[0])) < 400
    after = []
    for rank in range(world_sizes[1]):
        sampler = TokenBudgetBatchSampler(tokens, 256, rank=rank, world_size=world_sizes[1], **options)
        sampler.load_state_dict(json.loads(json.dumps(states[0])))
        sampler.set_epoch(options.get("epoch_", 0))  # the loaded epoch: keeps the loaded position
        after += run(sampler)
    return before, after


@pytest.mark.parametrize("world_sizes", [(1, 1), (2, 2), (2, 3), (4, 1), (3, 2)])
@pytest.mark.parametrize("saved_after", [0, 1, 3, 7])
def test_a_loaded_state_continues_the_epoch_on_any_world_size(tmp_path_factory, world_sizes, saved_after):
    rng = np.random.default_rng(saved_after)
    lengths = rng.integers(1, 120, size=240).tolist()
    tokens = token_map(tmp_path_factory.mktemp("s") / "m", lengths)
    before, after = resumed(tokens, saved_after, world_sizes, pool_size=50)
    samples = [i for b in before + after for i in b]
    # Every sample exactly once (these pools split evenly, so nothing is repeated).
    assert sorted(samples) == list(range(240))
    if world_sizes[0] == world_sizes[1] == 1:
        assert before + after == run(TokenBudgetBatchSampler(tokens, 256, pool_size=50))


def test_a_state_of_another_map_or_budget_is_refused(tmp_path):
    tokens = token_map(tmp_path / "m", [5] * 10)
    state = TokenBudgetBatchSampler(tokens, 64).state_dict()
    other = TokenBudgetBatchSampler(token_map(tmp_path / "o", [5] * 11), 64)
    with pytest.raises(ValueError, match=r"saved for n=10 \(samples\), this sampler has n=11"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match=r"saved for max_tokens=64 .* has max_tokens=128"):
        TokenBudgetBatchSampler(tokens, 128).load_state_dict(state)
    with pytest.raises(ValueError, match="not a TokenBudgetBatchSampler state"):
        TokenBudgetBatchSampler(tokens, 64).load_state_dict({"version": 99})
    with pytest.raises(ValueError, match="older mmap_ninja whose shuffled order"):
        TokenBudgetBatchSampler(tokens, 64).load_state_dict({**state, "version": 1})
    # version 2 (order version 2): its orders of 10 documents differ from version 3's
    assert state["version"] == 3
    with pytest.raises(ValueError, match="version 2 was saved by an older mmap_ninja whose shuffled order"):
        TokenBudgetBatchSampler(tokens, 64).load_state_dict({**state, "version": 2})


def test_a_version_2_state_of_more_than_1024_documents_loads(tmp_path):
    tokens = token_map(tmp_path / "m", [3] * 1100)  # orders of 1,100 indices: version 2's order is version 3's
    sampler = TokenBudgetBatchSampler(tokens, 30, seed=4)
    batches = iter(sampler)
    first = [next(batches) for _ in range(5)]
    state = sampler.state_dict()
    resumed = TokenBudgetBatchSampler(tokens, 30, seed=4)
    resumed.load_state_dict({**state, "version": 2})
    assert first + list(resumed) == list(TokenBudgetBatchSampler(tokens, 30, seed=4))


def test_a_state_at_the_epochs_end_then_the_next_epoch(tmp_path):
    tokens = token_map(tmp_path / "m", list(range(1, 60)))
    sampler = TokenBudgetBatchSampler(tokens, 128, pool_size=16)
    epoch0 = run(sampler)
    state = sampler.state_dict()
    fresh = TokenBudgetBatchSampler(tokens, 128, pool_size=16)
    fresh.load_state_dict(state)
    assert run(fresh) == []  # nothing left of epoch 0
    fresh.set_epoch(1)
    sampler.set_epoch(1)
    assert run(fresh) == run(sampler) != epoch0


class Rows(torch.utils.data.Dataset):
    """Item i is sample i's length and index (what the test compares), read from the map."""

    def __init__(self, tokens):
        self.tokens = tokens

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, i):
        return i


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("saved_after", [0, 2, 5, "end"])
def test_resume_through_stateful_dataloader_is_exact(tmp_path, workers, saved_after):
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    rng = np.random.default_rng(3)
    tokens = token_map(tmp_path / "m", rng.integers(1, 100, size=150).tolist())

    def loader():
        sampler = TokenBudgetBatchSampler(tokens, 256, pool_size=40, seed=7)
        return stateful.StatefulDataLoader(Rows(tokens), batch_sampler=sampler, num_workers=workers,
                                           collate_fn=lambda batch: list(batch))

    full = list(loader())
    assert sorted(i for b in full for i in b) == list(range(150))
    first = loader()
    stop = len(full) if saved_after == "end" else saved_after
    seen = []
    iterator = iter(first)
    for _ in range(stop):
        seen.append(next(iterator))
    state = first.state_dict()
    del iterator
    second = loader()
    second.load_state_dict(state)
    rest = list(second)
    assert seen + rest == full  # saved after the last batch, before the loader finished: nothing is left
    if saved_after == "end":  # saved after the loader finished: the next pass is a new one, as without the save
        finished = loader()
        assert list(finished) == full
        state = finished.state_dict()
        again = loader()
        again.load_state_dict(state)
        assert list(again) == full
        third = loader()
        third.load_state_dict(state)
        third.batch_sampler.set_epoch(1)
        epoch1 = list(third)
        assert epoch1 != full and sorted(i for b in epoch1 for i in b) == list(range(150))
    # Three resumes in a row: save after every batch, reload each time.
    if saved_after == 2:
        collected, state = [], None
        while True:
            current = loader()
            if state is not None:
                current.load_state_dict(state)
            iterator = iter(current)
            batch = next(iterator, None)
            if batch is None:
                break
            collected.append(batch)
            state = current.state_dict()
            del iterator
            if len(collected) > len(full):
                break
        assert collected == full


def test_a_sharded_map_and_a_compressed_one(tmp_path):
    from mmap_ninja import merge, open_existing

    rng = np.random.default_rng(9)
    parts = [rng.integers(1, 90, size=n).tolist() for n in (40, 0, 25, 60)]
    for k, lengths in enumerate(parts):
        token_map(tmp_path / f"part{k}", lengths).close()
    merge(tmp_path / "sharded", [tmp_path / f"part{k}" for k in range(4)])
    sharded = open_existing(tmp_path / "sharded")
    lengths = [n for part in parts for n in part]
    token_map(tmp_path / "single", lengths)
    for world_size in (1, 3):
        for rank in range(world_size):
            options = {"rank": rank, "world_size": world_size, "pool_size": 30, "seed": 4}
            got = run(TokenBudgetBatchSampler(sharded, 128, **options))
            assert got == run(TokenBudgetBatchSampler(RaggedMmap(tmp_path / "single"), 128, **options))
            assert all(padded_size(lengths, b) <= 128 for b in got)
    longest = max(lengths)
    with pytest.raises(ValueError, match=f"sample {lengths.index(longest)} of .*sharded has {longest} tokens"):
        TokenBudgetBatchSampler(sharded, max(lengths) - 1)
    pytest.importorskip("lz4")
    compressed = RaggedMmap.from_lists(tmp_path / "lz4", [np.arange(9, dtype=np.int32)], codec="lz4")
    with pytest.raises(TypeError, match="codec 'lz4': its offsets count compressed bytes"):
        TokenBudgetBatchSampler(compressed, 64)


@pytest.mark.parametrize("world_size", [1, 2])
def test_skip_steps_over_batches_without_reading_them(tmp_path, world_size):
    tokens = token_map(tmp_path / "m", np.random.default_rng(2).integers(1, 100, size=200).tolist())
    options = {"world_size": world_size, "pool_size": 37, "seed": 5}
    for rank in range(world_size):
        full = run(TokenBudgetBatchSampler(tokens, 256, rank=rank, **options))
        for before, skipped in ((0, 3), (2, 5), (4, len(full))):
            sampler = TokenBudgetBatchSampler(tokens, 256, rank=rank, **options)
            iterator = iter(sampler)
            seen = [next(iterator) for _ in range(before)]
            sampler.skip(skipped)
            assert seen + run(sampler) == full[:before] + full[before + skipped:]
        fresh = TokenBudgetBatchSampler(tokens, 256, rank=rank, **options)
        fresh.skip(1)
        fresh.skip(2)
        assert run(fresh) == full[3:]
    with pytest.raises(ValueError, match="num_batches must be at least 0"):
        TokenBudgetBatchSampler(tokens, 256).skip(-1)
