"""Pickles of objects whose shuffled order came from an older `mmap_ninja.Order` algorithm are refused, never
loaded into a different order (tests/data/order_v1/make_pickles.py says how the version-1 pickles were made)."""

import pickle
from pathlib import Path

import numpy as np
import pytest

from mmap_ninja import Order
from mmap_ninja.containers.blend import blend
from mmap_ninja.containers.block_order import BlockLayout, BlockOrder

VERSION_1 = Path(__file__).parent.parent / "data" / "order_v1"


@pytest.mark.parametrize("name", ["order", "resumable_sampler", "block_order", "block_sampler", "blend"])
def test_version_1_pickles_are_refused(name):
    pytest.importorskip("torch")
    data = (VERSION_1 / f"{name}.pkl").read_bytes()
    with pytest.raises(ValueError, match=r"older mmap_ninja.*order version 2.*start the epoch again"):
        pickle.loads(data)


def test_order_pickles_of_this_version_load_to_the_same_order():
    order = Order(1000, seed=7, epoch=3)
    again = pickle.loads(pickle.dumps(order))
    assert again == order
    assert np.array_equal(again.take(np.arange(1000)), order.take(np.arange(1000)))


def test_block_order_and_blend_pickles_of_this_version_load():
    block_order = BlockOrder(BlockLayout([0, 4, 8, 12, 16]), window_blocks=1, seed=7)
    again = pickle.loads(pickle.dumps(block_order))
    assert list(again) == list(block_order)
    blended = blend([list(range(10)), list(range(100, 120))], [0.5, 0.5], seed=7)
    assert list(pickle.loads(pickle.dumps(blended))) == list(blended)


def test_samplers_of_this_version_pickle_and_load():
    torch_adapter = pytest.importorskip("mmap_ninja.adapters.torch")
    for sampler in (torch_adapter.ResumableSampler(1000, seed=7),
                    torch_adapter.BlockShuffleSampler(BlockLayout([0, 4, 8, 12, 16]), window_blocks=1, seed=7)):
        assert list(pickle.loads(pickle.dumps(sampler))) == list(sampler)


def test_a_budget_sampler_state_without_its_order_version_is_refused(tmp_path):
    torch_adapter = pytest.importorskip("mmap_ninja.adapters.torch")
    from mmap_ninja.kinds.ragged import RaggedMmap

    tokens = RaggedMmap.from_generator(tmp_path / "tokens", (np.arange(k % 5 + 1) for k in range(50)), 10)
    sampler = torch_adapter.TokenBudgetBatchSampler(tokens, 8, seed=7)
    assert list(pickle.loads(pickle.dumps(sampler))) == list(sampler)
    # A version-1 sampler pickled its attributes without the order version (the object as 4deba74 pickled it).
    older = object.__new__(type(sampler))
    state = {key: value for key, value in sampler.__dict__.items() if key != "_order_version"}
    with pytest.raises(ValueError, match=r"older mmap_ninja.*order version 2"):
        older.__setstate__(state)
