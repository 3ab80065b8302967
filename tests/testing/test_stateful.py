"""Stateful fuzzing: each container kind against a plain Python list, through random sequences of
extend, append, in-place assignment, writer reopen, reader refresh / reopen, and reads of every index kind."""

import shutil
import tempfile
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mmap_ninja import NumpyMmap, RaggedMmap, StringsMmap

SAMPLES = {
    "strings": st.text(max_size=8),
    "ragged": hnp.arrays(np.int32, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)),
    "numpy": hnp.arrays(np.int16, (2, 3)),
}


def same(kind, got, want) -> bool:
    if kind == "strings":
        return got == want
    got = np.asarray(got)
    return got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()


def same_many(kind, got, want) -> bool:
    if kind == "numpy" and isinstance(got, np.ndarray):  # indexing a NumpyMmap gives one array
        return got.shape == (len(want), 2, 3) and all(same(kind, g, w) for g, w in zip(got, want))
    return len(got) == len(want) and all(same(kind, g, w) for g, w in zip(got, want))


class MapMachine(RuleBasedStateMachine):
    kind = "strings"
    cls = StringsMmap

    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="mmap_ninja_stateful_"))
        self.path = self.dir / "map"
        options = {"strings": {}, "ragged": {"dtype": np.int32},
                   "numpy": {"dtype": np.int16, "sample_shape": (2, 3)}}[self.kind]
        self.writer = self.cls.from_generator(self.path, iter([]), batch_size=3, **options)
        self.model = []
        self.reader = None
        self.reader_len = 0

    def teardown(self):
        for m in (self.writer, self.reader):
            if m is not None:
                m.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------ writing

    @rule(data=st.data())
    def extend(self, data):
        batch = data.draw(st.lists(SAMPLES[self.kind], max_size=6))
        self.writer.extend(np.stack(batch) if self.kind == "numpy" and batch and data.draw(st.booleans())
                           else batch)
        self.model += batch

    @rule(data=st.data())
    def append(self, data):
        sample = data.draw(SAMPLES[self.kind])
        self.writer.append(sample)
        self.model.append(sample)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def setitem(self, data):
        i = data.draw(st.integers(-len(self.model), len(self.model) - 1))
        old = self.model[i]
        if self.kind == "strings":
            new = "".join(data.draw(st.permutations(list(old))))  # the same UTF-8 byte size
        else:
            new = data.draw(hnp.arrays(old.dtype, old.shape))
        self.writer[i] = new
        self.model[i] = new

    @rule()
    def reopen_writer(self):
        self.writer.close()
        self.writer = self.cls(self.path, mode="r+")

    # ------------------------------------------------------------ a second, read-only handle

    @rule()
    def refresh_reader(self):
        if self.reader is None:
            self.reader = self.cls(self.path)
        else:
            grew = self.reader.refresh()
            assert grew == len(self.model) - self.reader_len
        self.reader_len = len(self.model)

    @precondition(lambda self: self.reader is not None)
    @rule()
    def close_and_reopen_reader(self):
        self.reader.close()
        self.reader = self.cls(self.path)
        self.reader_len = len(self.model)

    # ------------------------------------------------------------ reads

    def _handles(self):
        yield self.writer, self.model
        if self.reader is not None:  # its snapshot's length; in-place writes show through the mapping
            yield self.reader, self.model[:self.reader_len]

    @rule(data=st.data())
    def read_int(self, data):
        for m, want in self._handles():
            if want:
                i = data.draw(st.integers(-len(want), len(want) - 1))
                assert same(self.kind, m[i], want[i])

    @rule(data=st.data())
    def read_slice(self, data):
        for m, want in self._handles():
            start = data.draw(st.none() | st.integers(-8, 8))
            stop = data.draw(st.none() | st.integers(-8, 8))
            step = data.draw(st.none() | st.integers(1, 3) | st.integers(-3, -1))
            assert same_many(self.kind, m[start:stop:step], want[start:stop:step])

    @rule(data=st.data())
    def read_list(self, data):
        for m, want in self._handles():
            if want:
                idx = data.draw(st.lists(st.integers(-len(want), len(want) - 1), max_size=5))
                got = m[np.array(idx, dtype=np.int64)] if self.kind == "numpy" else m[idx]
                assert same_many(self.kind, got, [want[i] for i in idx])

    @rule(data=st.data())
    def read_mask(self, data):
        for m, want in self._handles():
            mask = data.draw(st.lists(st.booleans(), min_size=len(want), max_size=len(want)))
            assert same_many(self.kind, m[np.array(mask, dtype=bool)], [w for w, b in zip(want, mask) if b])

    @invariant()
    def lengths_and_iteration(self):
        assert len(self.writer) == len(self.model)
        assert same_many(self.kind, list(self.writer), self.model)
        if self.reader is not None:
            assert len(self.reader) == self.reader_len


class RaggedMachine(MapMachine):
    kind = "ragged"
    cls = RaggedMmap


class NumpyMachine(MapMachine):
    kind = "numpy"
    cls = NumpyMmap


_fast = settings(max_examples=100, stateful_step_count=30, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

TestStringsMachine = MapMachine.TestCase
TestStringsMachine.settings = _fast
TestRaggedMachine = RaggedMachine.TestCase
TestRaggedMachine.settings = _fast
TestNumpyMachine = NumpyMachine.TestCase
TestNumpyMachine.settings = _fast
