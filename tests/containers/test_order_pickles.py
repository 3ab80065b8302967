"""Pickles of objects whose shuffled order came from an older `mmap_ninja.Order` algorithm are refused, never
loaded into a different order (tests/data/order_v1/make_pickles.py says how the version-1 pickles were made)."""

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmap_ninja import Order
from mmap_ninja.containers.blend import blend
from mmap_ninja.containers.block_order import BlockLayout, BlockOrder
from mmap_ninja.containers.order import OrderFamily

VERSION_1 = Path(__file__).parent.parent / "data" / "order_v1"


@pytest.mark.parametrize("name", ["order", "resumable_sampler", "block_order", "block_sampler", "blend"])
def test_version_1_pickles_are_refused(name):
    pytest.importorskip("torch")
    data = (VERSION_1 / f"{name}.pkl").read_bytes()
    with pytest.raises(ValueError, match=r"older mmap_ninja \(order version 1\).*order version 3.*start the epoch"):
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
    with pytest.raises(ValueError, match=r"older mmap_ninja \(order version 1\).*order version 3"):
        older.__setstate__(state)


class _Reduced:
    """Pickles as ``function(*arguments)``: how an object of order version 2 pickled (its version in the arguments)."""

    def __init__(self, function: Any, arguments: tuple[Any, ...]):
        self.function, self.arguments = function, arguments

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.function, self.arguments)


def _as_version_2(reduced: tuple[Any, ...]) -> bytes:
    function, (version, *arguments) = reduced
    assert version == 3
    return pickle.dumps(_Reduced(function, (2, *arguments)))


def test_version_2_blend_pickles_load_only_when_every_source_order_did_not_change():
    large = blend([range(1025), range(5000)], [0.5, 0.5], seed=7)
    again = pickle.loads(_as_version_2(large.__reduce__()))
    positions = np.arange(0, len(large), 97)
    assert [again.source_of(int(i)) for i in positions] == [large.source_of(int(i)) for i in positions]
    small = blend([range(1025), range(10)], [0.5, 0.5], seed=7)  # the small source's order changed
    with pytest.raises(ValueError, match=r"order version 2.*order version 3.*refused"):
        pickle.loads(_as_version_2(small.__reduce__()))


def _version_2_state(obj: Any) -> dict[str, Any]:
    """``obj.__dict__`` as order version 2 pickled it (its families without the small-order attributes)."""
    state = dict(obj.__dict__)
    state["_order_version"] = 2
    for key, value in state.items():
        if isinstance(value, OrderFamily):
            family = object.__new__(OrderFamily)
            family.__setstate__({k: v for k, v in value.__dict__.items() if k not in ("_small", "_any_small")})
            state[key] = family
    return state


def test_version_2_block_order_pickles_load_only_when_every_order_did_not_change():
    large = BlockOrder(BlockLayout([0, 2000]), window_blocks=1, seed=7)  # one block of 2,000: windows of 2,000
    older = object.__new__(BlockOrder)
    older.__setstate__(_version_2_state(large))
    assert list(older) == list(large) and older._order_version == 3
    small = BlockOrder(BlockLayout([0, 4, 8, 12, 16]), window_blocks=1, seed=7)
    with pytest.raises(ValueError, match=r"order version 2.*order version 3.*refused"):
        object.__new__(BlockOrder).__setstate__(_version_2_state(small))


@pytest.mark.parametrize(("n", "loads"), [(1025, True), (10**6, True), (1024, False), (10, False)])
def test_version_2_sampler_pickles_load_only_for_orders_that_did_not_change(n, loads):
    torch_adapter = pytest.importorskip("mmap_ninja.adapters.torch")
    sampler = torch_adapter.ResumableSampler(n, seed=7)
    older = object.__new__(type(sampler))
    if loads:
        older.__setstate__(_version_2_state(sampler))
        assert list(older)[:100] == list(sampler)[:100] and older._order_version == 3
    else:
        with pytest.raises(ValueError, match=r"order version 2.*order version 3.*refused"):
            older.__setstate__(_version_2_state(sampler))
