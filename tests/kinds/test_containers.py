"""Behaviour every container kind shares: indexing, empties, writing modes, refresh, close, pickling."""

import pickle

import numpy as np
import pytest

import mmap_ninja
from mmap_ninja import MapLockedError, NumpyMmap, RaggedMmap, StringsMmap, open_existing

from tests.support import build, equal, sample_for, snapshot

N = 12


@pytest.fixture
def built(kind, tmp_path):
    m = build(kind, tmp_path / "m", N)
    m.close()
    return open_existing(tmp_path / "m")


def expected(kind, positions):
    return [sample_for(kind, int(i)) for i in positions]


def test_int_negative_and_numpy_scalar_indexing(kind, built):
    for index in [0, 5, N - 1, -1, -N, np.int64(3), np.uint8(2), np.int32(-2)]:
        assert equal(built[index], sample_for(kind, int(index) % N))


@pytest.mark.parametrize("index", [N, -N - 1, 10**12])
def test_out_of_range_names_index_and_length(kind, built, index):
    with pytest.raises(IndexError, match=rf"{index}.*{N}"):
        built[index]


@pytest.mark.parametrize("index", [slice(None), slice(2, 9), slice(None, None, -3), slice(-4, None), slice(20, 30),
                                   [0, 11, 3, 3], np.array([-1, 0], dtype=np.int16), []])
def test_batch_indexing(kind, built, index):
    positions = np.arange(N)[index]
    got = built[index]
    assert len(got) == len(positions)
    assert all(equal(g, e) for g, e in zip(got, expected(kind, positions)))


def test_boolean_mask(kind, built):
    mask = np.arange(N) % 3 == 0
    got = built[mask]
    assert all(equal(g, e) for g, e in zip(got, expected(kind, np.flatnonzero(mask))))
    assert len(got) == mask.sum()
    if kind != "numpy":  # NumPy's own indexing applies to NumpyMmap
        with pytest.raises(IndexError, match="mask of length 3"):
            built[np.ones(3, dtype=bool)]
        with pytest.raises(IndexError, match="index 99"):
            built[[1, 99]]


def test_reads_are_read_only_views(kind, built):
    sample = built[1]
    if kind == "strings":
        assert isinstance(sample, str)
        return
    assert isinstance(sample, np.ndarray) and not sample.flags.writeable
    with pytest.raises(ValueError):
        sample[...] = 0


def test_iteration_and_len(kind, built):
    assert len(built) == N
    assert all(equal(a, b) for a, b in zip(built, expected(kind, range(N))))
    assert sum(1 for _ in built) == N


def test_empty_map(kind, tmp_path):
    m = build(kind, tmp_path / "e", 0)
    assert len(m) == 0 and list(m) == []
    assert len(m[:]) == 0
    with pytest.raises(IndexError):
        m[0]
    m.extend([])
    assert len(m) == 0
    m.extend([sample_for(kind, 0), sample_for(kind, 1)])
    m.close()
    reopened = open_existing(tmp_path / "e")
    assert len(reopened) == 2 and equal(reopened[1], sample_for(kind, 1))


def test_extend_append_and_reopen(kind, tmp_path):
    m = build(kind, tmp_path / "m", 3)
    m.extend(sample_for(kind, i) for i in range(3, 7))  # any iterable
    m.append(sample_for(kind, 7))
    assert len(m) == 8 and equal(m[7], sample_for(kind, 7))
    m.close()
    reopened = open_existing(tmp_path / "m")
    assert [equal(reopened[i], sample_for(kind, i)) for i in range(8)] == [True] * 8


def test_mode_r_is_read_only_and_the_default_writes(kind, built, tmp_path):
    reader = open_existing(tmp_path / "m", mode="r")
    before = snapshot(tmp_path / "m")
    with pytest.raises(PermissionError, match="mode='r\\+'"):
        reader.append(sample_for(kind, 0))
    with pytest.raises(PermissionError):
        reader[0] = sample_for(kind, 0)
    assert snapshot(tmp_path / "m") == before
    assert built.mode == "r+"
    built.append(sample_for(kind, N))
    assert len(open_existing(tmp_path / "m")) == N + 1


def test_writers_take_turns_and_a_held_transaction_blocks_others(kind, built, tmp_path):
    writer = open_existing(tmp_path / "m", mode="r+")
    second = open_existing(tmp_path / "m", mode="r+", lock_timeout=0.2)  # opening takes no lock
    with writer.transaction():
        writer.append(sample_for(kind, N))
        with pytest.raises(MapLockedError, match=f"{tmp_path / 'm'} is locked by another writer"):
            second.append(sample_for(kind, N + 1))
    second.append(sample_for(kind, N + 1))  # the lock was released at the end of the transaction
    assert len(second) == N + 2 and equal(second[N], sample_for(kind, N))
    assert len(open_existing(tmp_path / "m")) == N + 2


def test_reader_keeps_snapshot_until_refresh(kind, built, tmp_path):
    writer = open_existing(tmp_path / "m", mode="r+")
    writer.extend([sample_for(kind, N), sample_for(kind, N + 1)])
    assert len(built) == N
    assert built.refresh() == 2
    assert len(built) == N + 2 and equal(built[-1], sample_for(kind, N + 1))
    assert built.refresh() == 0
    writer.close()


def test_close_and_with(kind, tmp_path):
    with build(kind, tmp_path / "m", 3) as m:
        kept = m[1]
    assert m.closed
    assert equal(kept, sample_for(kind, 1))  # samples read before close stay valid
    with pytest.raises(ValueError, match="closed"):
        m[0]
    with pytest.raises(ValueError, match="closed"):
        m.append(sample_for(kind, 3))


def test_pickle_holds_path_not_data(kind, tmp_path):
    m = build(kind, tmp_path / "m", 2000)
    blob = pickle.dumps(m)
    assert len(blob) < 1024
    copy = pickle.loads(blob)
    assert type(copy) is type(m) and copy.mode == "r+" and len(copy) == 2000
    assert equal(copy[1234], sample_for(kind, 1234))
    read_only = pickle.loads(pickle.dumps(open_existing(tmp_path / "m", mode="r")))
    assert read_only.mode == "r" and len(read_only) == 2000


def test_wrapper_fn_and_copy_before(kind, built, tmp_path):
    seen = []

    def wrapper(sample):
        seen.append(sample)
        return ("wrapped", sample)

    wrapped = open_existing(tmp_path / "m", wrapper_fn=wrapper)
    tag, sample = wrapped[2]
    assert tag == "wrapped" and equal(sample, sample_for(kind, 2))
    assert [t for t, _ in wrapped[[0, 1]]] == ["wrapped", "wrapped"]
    if kind != "strings":
        assert seen[0].flags.writeable  # a private copy, safe to modify in place
        no_copy = open_existing(tmp_path / "m", wrapper_fn=lambda s: s, copy_before_wrapper_fn=False)
        assert not no_copy[2].flags.writeable


def test_wrapped_helper(kind, built):
    wrapped = mmap_ninja.Wrapped(built, lambda s: ("w", s))
    assert len(wrapped) == N and wrapped[3][0] == "w" and equal(wrapped[3][1], sample_for(kind, 3))


def test_opening_a_missing_or_foreign_folder_creates_nothing(tmp_path):
    for cls in (StringsMmap, RaggedMmap, NumpyMmap):
        with pytest.raises(mmap_ninja.NotAMapError, match="no such map"):
            cls(tmp_path / "nothing", mode="r")
        assert len(cls(tmp_path / "nothing")) == 0  # an empty map that the first write creates
        assert not (tmp_path / "nothing").exists()
    (tmp_path / "plain").mkdir()
    with pytest.raises(mmap_ninja.NotAMapError, match="holds no mmap_ninja map"):
        open_existing(tmp_path / "plain")
    assert list((tmp_path / "plain").iterdir()) == []


def test_kind_mismatch_is_clear(tmp_path):
    build("strings", tmp_path / "s", 2).close()
    with pytest.raises(TypeError, match="holds a 'strings' map"):
        RaggedMmap(tmp_path / "s")


def test_creating_over_a_map_needs_overwrite(kind, tmp_path):
    build(kind, tmp_path / "m", 3).close()
    before = snapshot(tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        build(kind, tmp_path / "m", 5)
    assert snapshot(tmp_path / "m") == before
    old_reader = open_existing(tmp_path / "m")
    old_sample = old_reader[2]
    if kind == "strings":
        new = StringsMmap.from_strings(tmp_path / "m", ["new"], overwrite=True)
    elif kind == "ragged":
        new = RaggedMmap.from_lists(tmp_path / "m", [np.zeros(2)], overwrite=True)
    else:
        new = mmap_ninja.np_from_ndarray(tmp_path / "m", np.zeros((1, 4)), overwrite=True)
    assert len(new) == 1
    # The old files were unlinked, not truncated: a process that had them mapped still reads its data.
    assert equal(old_reader[2], sample_for(kind, 2)) and equal(old_sample, sample_for(kind, 2))
    assert len(open_existing(tmp_path / "m")) == 1


def test_creation_refuses_foreign_files_and_makes_parents(kind, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"notes\.txt"):
        build(kind, tmp_path / "busy", 2)
    assert snapshot(tmp_path / "busy") == {"notes.txt": b"mine"}
    m = build(kind, tmp_path / "a" / "b" / "c", 2)
    assert len(m) == 2


@pytest.mark.parametrize("batch_size", [0, -1, True, 1.5])  # None: the kind's default_batch_size (test_typing.py)
def test_bad_batch_size(kind, tmp_path, batch_size):
    cls = {"strings": StringsMmap, "ragged": RaggedMmap, "numpy": NumpyMmap}[kind]
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        cls.from_generator(tmp_path / "m", [sample_for(kind, 0)], batch_size=batch_size)
    assert not (tmp_path / "m").exists()


def test_from_generator_commits_every_batch_and_keeps_them_on_error(kind, tmp_path):
    cls = {"strings": StringsMmap, "ragged": RaggedMmap, "numpy": NumpyMmap}[kind]
    lengths_seen = []

    def samples():
        for i in range(10):
            if i and i % 3 == 0:  # a reader opening now sees every completed batch
                lengths_seen.append(len(open_existing(tmp_path / "m", allow_unfinished=True)))
            if i == 8:
                raise RuntimeError("source broke")
            yield sample_for(kind, i)

    with pytest.raises(RuntimeError, match="source broke"):
        cls.from_generator(tmp_path / "m", samples(), batch_size=3)
    assert lengths_seen == [3, 6]
    with pytest.raises(mmap_ninja.UnfinishedMapError, match="allow_unfinished=True"):
        open_existing(tmp_path / "m")
    after = open_existing(tmp_path / "m", allow_unfinished=True)
    assert len(after) == 6 and all(equal(after[i], sample_for(kind, i)) for i in range(6))
    # the failed build released its lock: the corrected call replaces it without overwrite=True
    rebuilt = cls.from_generator(tmp_path / "m", [sample_for(kind, i) for i in range(10)], batch_size=3,
                                 lock_timeout=0.2)
    assert len(rebuilt) == 10 and len(open_existing(tmp_path / "m")) == 10


def test_verbose_shows_a_progress_bar_with_total(kind, tmp_path, capsys):
    cls = {"strings": StringsMmap, "ragged": RaggedMmap, "numpy": NumpyMmap}[kind]
    cls.from_generator(tmp_path / "m", [sample_for(kind, i) for i in range(7)], batch_size=2, verbose=True)
    err = capsys.readouterr().err
    assert "7/7" in err and cls.__name__ in err


def test_from_indexable_serial_and_parallel(kind, tmp_path):
    cls = {"strings": StringsMmap, "ragged": RaggedMmap, "numpy": NumpyMmap}[kind]
    source = [sample_for(kind, i) for i in range(53)]
    for n_jobs in (None, 2):
        m = cls.from_indexable(tmp_path / f"m{n_jobs}", source, batch_size=10, n_jobs=n_jobs)
        assert len(m) == 53 and all(equal(m[i], source[i]) for i in range(53))
