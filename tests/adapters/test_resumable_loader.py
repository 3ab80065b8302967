"""`ResumableSampler` through torchdata's `StatefulDataLoader` (workers and prefetching) and a plain `DataLoader`:
a run interrupted anywhere and resumed from its saved state sees exactly the batches of an uninterrupted run."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmap_ninja import Order

torch = pytest.importorskip("torch")
stateful_dataloader = pytest.importorskip("torchdata.stateful_dataloader")
from torch.utils.data import DataLoader  # noqa: E402

from mmap_ninja.adapters.torch import ResumableSampler  # noqa: E402

StatefulDataLoader = stateful_dataloader.StatefulDataLoader
pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")

N, BATCH, EPOCHS = 23, 4, 2
BATCHES_PER_EPOCH = -(-N // 2 // BATCH)  # rank 0 of 2 ranks: 12 indices, 3 batches


def make_loader(num_workers: int, stateful: bool = True) -> tuple[Any, ResumableSampler]:
    sampler = ResumableSampler(N, rank=0, world_size=2, seed=11)
    loader_class = StatefulDataLoader if stateful else DataLoader
    options: dict[str, Any] = {"num_workers": num_workers}
    if num_workers:
        options["prefetch_factor"] = 2
    return loader_class(list(range(N)), batch_size=BATCH, sampler=sampler, **options), sampler


def run(num_workers: int, save_after: Iterable[int] = (), stateful: bool = True) -> list[list[int]]:
    """Train for EPOCHS; after each global step in ``save_after`` save, 'crash' and resume in new objects."""
    stops = sorted(save_after)
    seen: list[list[int]] = []
    saved: dict[str, Any] | None = None
    step = 0
    while True:
        loader, sampler = make_loader(num_workers, stateful)
        start_epoch = 0
        if saved is not None:
            saved = json.loads(json.dumps(saved)) if not stateful else saved
            start_epoch = saved["epoch"]
            if stateful:
                loader.load_state_dict(saved["loader"])
            else:
                sampler.load_state_dict(saved["sampler"])
        crashed = False
        for epoch in range(start_epoch, EPOCHS):
            sampler.set_epoch(epoch)
            consumed = 0
            for batch in loader:
                seen.append(batch.tolist())
                step += 1
                consumed += len(batch)
                if stops and step == stops[0]:
                    stops.pop(0)
                    if stateful:
                        saved = {"loader": loader.state_dict(), "epoch": epoch}
                    else:
                        # state_at counts from the start of the sampler's pass (the loaded position after a resume)
                        saved = {"sampler": sampler.state_at(consumed), "epoch": epoch}
                    crashed = True
                    break
            if crashed:
                break
        del loader
        if not crashed:
            return seen


_UNINTERRUPTED: list[list[list[int]]] = []


def uninterrupted() -> list[list[int]]:
    if not _UNINTERRUPTED:
        _UNINTERRUPTED.append(run(0))
    return _UNINTERRUPTED[0]


def test_the_uninterrupted_run_has_every_batch() -> None:
    batches = uninterrupted()
    assert len(batches) == BATCHES_PER_EPOCH * EPOCHS
    assert batches == run(2)


ALL_STEPS = range(1, BATCHES_PER_EPOCH * EPOCHS)


@pytest.mark.parametrize("step", ALL_STEPS)
def test_stateful_dataloader_resumes_exactly_at_any_batch_without_workers(step: int) -> None:
    assert run(0, [step]) == uninterrupted()


@pytest.mark.parametrize("step", [1, BATCHES_PER_EPOCH, BATCHES_PER_EPOCH + 1])
def test_stateful_dataloader_resumes_exactly_with_two_prefetching_workers(step: int) -> None:
    # step BATCHES_PER_EPOCH is the last batch of the first epoch: the state is saved exactly at its end.
    assert run(2, [step]) == uninterrupted()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_three_resumes_in_a_row(num_workers: int) -> None:
    assert run(num_workers, [1, 2, BATCHES_PER_EPOCH + 1]) == uninterrupted()


@pytest.mark.parametrize("step", ALL_STEPS)
def test_plain_dataloader_resumes_exactly_from_state_at(step: int) -> None:
    assert run(2 if step == 2 else 0, [step], stateful=False) == uninterrupted()


def test_plain_dataloader_three_resumes_from_state_at() -> None:
    assert run(0, [1, 2, 4], stateful=False) == uninterrupted()


@pytest.mark.slow
@pytest.mark.parametrize("step", ALL_STEPS)
def test_every_save_point_with_workers(step: int) -> None:
    assert run(2, [step]) == uninterrupted()
    assert run(2, [step, step + 1]) == uninterrupted()


def loader_run(n: int, world_size: int, rank: int, batch: int, workers: int, seed: int,
               stops: list[int]) -> list[list[int]]:
    """Two epochs through a StatefulDataLoader, saving and restarting after each global step in ``stops``."""
    pending, seen, saved, step = sorted(stops), [], None, 0
    while True:
        sampler = ResumableSampler(n, rank=rank, world_size=world_size, seed=seed)
        options: dict[str, Any] = {"num_workers": workers}
        if workers:
            options["prefetch_factor"] = 2
        loader = StatefulDataLoader(list(range(n)), batch_size=batch, sampler=sampler, **options)
        start_epoch = 0
        if saved is not None:
            loader.load_state_dict(saved["loader"])
            start_epoch = saved["epoch"]
        crashed = False
        for epoch in range(start_epoch, 2):
            sampler.set_epoch(epoch)
            for got in loader:
                seen.append(got.tolist())
                step += 1
                if pending and step == pending[0]:
                    pending.pop(0)
                    saved, crashed = {"loader": loader.state_dict(), "epoch": epoch}, True
                    break
            if crashed:
                break
        if not crashed:
            return seen


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 60), world_size=st.integers(1, 4), data=st.data(), batch=st.integers(1, 7),
       workers=st.sampled_from([0, 2]), seed=st.integers(0, 1000))
def test_property_stateful_dataloader_resumes_exactly(n: int, world_size: int, data: Any, batch: int, workers: int,
                                                      seed: int) -> None:
    rank = data.draw(st.integers(0, world_size - 1))
    whole = loader_run(n, world_size, rank, batch, 0, seed, [])
    stops = data.draw(st.lists(st.integers(1, len(whole)), max_size=3, unique=True))
    assert loader_run(n, world_size, rank, batch, workers, seed, stops) == whole
    # the reference stream, computed on the fly: epoch e is rank `rank`'s stripe of Order(n, seed, e)
    per_rank = -(-n // world_size)
    for epoch in range(2):
        order = Order(n, seed=seed, epoch=epoch).take(np.arange(per_rank * world_size) % n).tolist()
        want = order[rank::world_size]
        got = [i for b in whole[len(whole) // 2 * epoch:len(whole) // 2 * (epoch + 1)] for i in b]
        assert got == want


def _sampler_maker(tmp_path: Any, kind: str) -> Any:
    """A function making a new sampler of ``kind`` over one N-sample map (built once, in ``tmp_path``)."""
    from mmap_ninja import merge, np_from_ndarray
    from mmap_ninja.adapters.shards import ShardAwareSampler
    from mmap_ninja.adapters.torch import BlockShuffleSampler

    if kind == "resumable":
        return lambda: ResumableSampler(N, seed=11)
    if kind == "block":
        rows = np_from_ndarray(tmp_path / "rows", np.arange(N, dtype=np.int64))
        return lambda: BlockShuffleSampler(rows, 64, seed=11)
    paths, start = [], 0
    for k, length in enumerate([9, 5, 9]):
        np_from_ndarray(tmp_path / f"part{k}", np.arange(start, start + length)).close()
        paths.append(tmp_path / f"part{k}")
        start += length
    sharded = merge(tmp_path / "sharded", paths)
    return lambda: ShardAwareSampler(sharded, seed=11)


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("kind", ["resumable", "block", "shard"])
def test_a_state_saved_after_the_epochs_loop_resumes_at_the_next_epoch(tmp_path: Any, kind: str,
                                                                        num_workers: int) -> None:
    """The common checkpoint: after epoch 0's loop ended (the loader's iterator finished), resume with set_epoch(1).
    StatefulDataLoader applies the sampler's state at iter(), after set_epoch(1): a state of an earlier epoch must
    not bring epoch 0 back (it read epoch 0 again in full, and epoch 1 never)."""
    new_sampler = _sampler_maker(tmp_path, kind)

    def make() -> tuple[Any, Any]:
        sampler = new_sampler()
        return StatefulDataLoader(list(range(N)), batch_size=BATCH, sampler=sampler, num_workers=num_workers), sampler

    loader, sampler = make()
    reference = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        reference.append([batch.tolist() for batch in loader])
    loader, sampler = make()
    sampler.set_epoch(0)
    assert [batch.tolist() for batch in loader] == reference[0]
    saved = json.loads(json.dumps(loader.state_dict()))
    loader, sampler = make()
    loader.load_state_dict(saved)
    resumed = []
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        resumed.append([batch.tolist() for batch in loader])
    assert resumed == reference[1:]
