"""A Hypothesis state machine that compares a map of any kind with a Python list through random operations."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mmap_ninja.kinds.maps import MapBase
from mmap_ninja.testing.registry import KindSpec

__all__ = ["MapStateMachine", "make_state_machine"]


class _Abort(Exception):
    """Raised inside a transaction to check that it commits nothing."""


class MapStateMachine(RuleBasedStateMachine):
    """Random appends, extends, transactions (some raising), in-place assignments, refreshes and reopens of
    a map, compared with a list of the samples it should hold. Samples are ``spec.make_sample(i)`` for drawn
    ``i``. A second handle (``reader``) checks that it keeps its snapshot until ``refresh()``. Make a machine
    for a spec with `make_state_machine`."""

    spec: Optional[KindSpec] = None
    max_index = 300

    def __init__(self) -> None:
        super().__init__()
        assert self.spec is not None, "make a machine with make_state_machine(spec)"
        self.kind: KindSpec = self.spec
        self.directory = Path(tempfile.mkdtemp(prefix="mmap_ninja_stateful_"))
        self.path = self.directory / "map"
        self.writer: MapBase = self.kind.container.from_generator(self.path, iter([]), 3, **self.kind.build_options)
        self.model: list[Any] = []
        self.reader: Optional[MapBase] = None
        self.reader_length = 0

    def teardown(self) -> None:
        for handle in (self.writer, self.reader):
            if handle is not None:
                handle.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _samples(self, indices: list[int]) -> list[Any]:
        return [self.kind.make_sample(i) for i in indices]

    # ------------------------------------------------------------------ writes

    @rule(indices=st.lists(st.integers(0, max_index), max_size=6))
    def extend(self, indices: list[int]) -> None:
        samples = self._samples(indices)
        self.writer.extend(samples)
        self.model += samples

    @rule(index=st.integers(0, max_index))
    def append(self, index: int) -> None:
        sample = self.kind.make_sample(index)
        self.writer.append(sample)
        self.model.append(sample)

    @rule(writes=st.lists(st.lists(st.integers(0, max_index), max_size=4), min_size=1, max_size=3),
          fail=st.booleans())
    def transaction(self, writes: list[list[int]], fail: bool) -> None:
        added: list[Any] = []
        try:
            with self.writer.transaction():
                for indices in writes:
                    samples = self._samples(indices)
                    self.writer.extend(samples)
                    added += samples
                    assert len(self.writer) == len(self.model) + len(added), "a handle sees its own writes at once"
                if fail:
                    raise _Abort
        except _Abort:
            added = []  # nothing of a transaction that raised is committed
        self.model += added

    @precondition(lambda self: bool(self.model) and self.kind.variant is not None)
    @rule(data=st.data())
    def setitem(self, data: st.DataObject) -> None:
        assert self.kind.variant is not None
        position = data.draw(st.integers(-len(self.model), len(self.model) - 1), label="position")
        new = self.kind.variant(self.model[position])
        self.writer[position] = new
        self.model[position] = new

    @rule()
    def reopen_writer(self) -> None:
        self.writer.close()
        self.writer = self.kind.container(self.path)

    # ------------------------------------------------------------------ a second handle

    @rule()
    def refresh_reader(self) -> None:
        if self.reader is None:
            self.reader = self.kind.container(self.path, mode="r")
        else:
            grew = self.reader.refresh()
            assert grew == len(self.model) - self.reader_length, (
                f"refresh() reported {grew} new samples; {len(self.model) - self.reader_length} were committed")
        self.reader_length = len(self.model)

    @precondition(lambda self: self.reader is not None)
    @rule()
    def reopen_reader(self) -> None:
        assert self.reader is not None
        self.reader.close()
        self.reader = self.kind.container(self.path, mode="r")
        self.reader_length = len(self.model)

    # ------------------------------------------------------------------ reads

    def _handles(self) -> list[tuple[MapBase, list[Any]]]:
        handles = [(self.writer, self.model)]
        if self.reader is not None:  # its snapshot's length; in-place writes show through the shared mapping
            handles.append((self.reader, self.model[:self.reader_length]))
        return handles

    @rule(data=st.data())
    def read_some(self, data: st.DataObject) -> None:
        for handle, want in self._handles():
            if want:
                i = data.draw(st.integers(-len(want), len(want) - 1), label="index")
                assert self.kind.equal(handle[i], want[i]), f"sample {i} differs"
            start = data.draw(st.none() | st.integers(-8, 8), label="start")
            stop = data.draw(st.none() | st.integers(-8, 8), label="stop")
            step = data.draw(st.none() | st.integers(1, 3) | st.integers(-3, -1), label="step")
            self._same(handle[start:stop:step], want[start:stop:step], "slice")
            if want:
                picked = data.draw(st.lists(st.integers(-len(want), len(want) - 1), max_size=5), label="indices")
                self._same(handle[picked], [want[i] for i in picked], "list")
            mask = data.draw(st.lists(st.booleans(), min_size=len(want), max_size=len(want)), label="mask")
            self._same(handle[np.array(mask, dtype=bool)], [w for w, keep in zip(want, mask) if keep], "mask")

    def _same(self, got: Any, want: list[Any], what: str) -> None:
        got_list = list(got)
        assert len(got_list) == len(want), f"{what} read {len(got_list)} samples, expected {len(want)}"
        for j, (g, w) in enumerate(zip(got_list, want)):
            assert self.kind.equal(g, w), f"{what} read a wrong sample at {j}"

    @invariant()
    def matches_the_model(self) -> None:
        assert len(self.writer) == len(self.model), f"length {len(self.writer)}, expected {len(self.model)}"
        self._same(self.writer, self.model, "iteration")
        if self.reader is not None:
            assert len(self.reader) == self.reader_length, "a handle's length changed without refresh()"


def make_state_machine(spec: KindSpec) -> type[MapStateMachine]:
    """A `MapStateMachine` subclass for ``spec``; run it with ``hypothesis.stateful.run_state_machine_as_test``
    or through its ``TestCase`` attribute."""
    return type(f"{spec.name.title().replace('-', '').replace('_', '')}StateMachine", (MapStateMachine,),
                {"spec": spec})
