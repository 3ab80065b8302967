"""`ContainerConformance`: the read-side conformance tests run on every container that reads a kind's samples
without being a kind's own map: sharded maps, maps at a URL (single and sharded, on ``memory://`` or any store
such as the loopback S3 server) and the field containers of records maps (single and sharded).

A `ContainerCase` says how to make one such container holding samples ``0 .. n-1`` of a `KindSpec` (or one field
of them), opened with read options, and how to damage the bytes it reads. The tests check, through the public
API only: every indexing form, ``__getitems__``, iteration, ``get_batch`` (equal to a single map's), pickling (in
this process, and into a ``spawn`` worker when ``spawn_workers`` is set), ``wrapper_fn`` on every read path, and
``verify_reads=True`` against damaged bytes on every read path::

    from mmap_ninja.testing import ContainerConformance, container_cases

    class TestShardedStrings(ContainerConformance):
        case = container_cases()["sharded-strings"]
"""

from __future__ import annotations

import inspect
import multiprocessing
import pickle
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import numpy as np
import pytest

from mmap_ninja.containers.generic import open_existing, upload
from mmap_ninja.containers.sharded import ShardedMap, merge
from mmap_ninja.errors import CorruptMapError, ReadOnlyMapError
from mmap_ninja.testing.registry import KindSpec, arrays_equal, spec_for

__all__ = ["ContainerCase", "ContainerConformance", "Place", "container_cases", "same_batches"]


@dataclass(frozen=True)
class Place:
    """Where a case builds its maps (``folder``) and, for a map at a URL, where it uploads them (``url``, a
    fresh location per test, and fsspec's ``storage_options``)."""

    folder: Path
    url: str
    storage_options: Optional[dict[str, Any]] = None


@dataclass(frozen=True)
class ContainerCase:
    """How to test one container of one kind's samples.

    - ``spec``: the kind whose samples ``0 .. n-1`` the maps are built from (`spec.make_sample`).
    - ``layout``: ``"sharded"`` (a sharded map of the kind), ``"remote"`` (a single map at a URL),
      ``"remote-sharded"`` (a sharded map at a URL) or ``"local"`` (a single map: for a field's container).
    - ``field``: for records specs, the field whose container is tested (``m[field]``): its samples are
      ``spec.make_sample(i)[field]``.
    - ``shard_sizes``: how the samples are split between shards (the last takes the rest; empty shards allowed).
    - ``read_options``: options of the kind's container that change what is read (an images map's
      ``channels``): the container opened with them must read what a single map opened with them reads.
    - ``fetch``: for a map at a URL, how it is fetched (``"whole"``, or ``"blocks"``: by ranged reads of
      ``block_size`` bytes, small enough that even the kit's tiny maps span many blocks); ``None``: the default.
    """

    name: str
    spec: KindSpec
    layout: str
    field: Optional[str] = None
    shard_sizes: tuple[int, ...] = (5, 0, 4)
    read_options: Optional[dict[str, Any]] = None
    needs: tuple[str, ...] = ()  # modules to import first (skipped when missing)
    fetch: Optional[str] = None
    block_size: int = 64

    def sample(self, i: int) -> Any:
        """Sample ``i`` as the container reads it."""
        sample = self.spec.make_sample(i)
        return sample if self.field is None else sample[self.field]

    def equal(self, got: Any, want: Any) -> bool:
        return arrays_equal(got, want) if self.field is not None else self.spec.equal(got, want)

    @property
    def sharded(self) -> bool:
        return self.layout in ("sharded", "remote-sharded")

    @property
    def remote(self) -> bool:
        return self.layout.startswith("remote")

    def _build_one(self, path: Path, first: int, count: int) -> None:
        spec = self.spec
        spec.container.from_generator(path, (spec.make_sample(i) for i in range(first, first + count)), 7,
                                      **spec.build_options).close()

    def build(self, place: Place, n: int) -> Path:
        """Build the local maps holding samples ``0 .. n-1`` (and upload them for a remote case); the local
        map's (or sharded map's) path."""
        if self.sharded:
            sizes = [*self.shard_sizes, max(n - sum(self.shard_sizes), 0)]
            paths, first = [], 0
            for k, size in enumerate(sizes):
                size = min(size, n - first)
                self._build_one(place.folder / "parts" / f"p{k}", first, size)
                paths.append(place.folder / "parts" / f"p{k}")
                first += size
            merge(place.folder / "local", paths).close()
        else:
            self._build_one(place.folder / "local", 0, n)
        if self.remote:
            upload(place.folder / "local", place.url, storage_options=place.storage_options)
        return place.folder / "local"

    def open(self, place: Place, **options: Any) -> Any:
        """The container, opened with read ``options`` (``verify_reads``, ...), over what `build` made."""
        local = place.folder / "local"
        if self.remote:
            fetching: dict[str, Any] = {} if self.fetch is None else {"fetch": self.fetch,
                                                                      "block_size": self.block_size}
            opened = open_existing(place.url, cache_dir=place.folder / "cache",
                                   storage_options=place.storage_options, **fetching, **options)
        elif self.sharded:
            opened = ShardedMap(local, mode="r", **options)
        else:
            opened = self.spec.container(local, mode="r", **options)
        return opened if self.field is None else opened[self.field]

    def map_folders(self, place: Place) -> list[Path]:
        """The folders of the single maps the container reads from (shards, cache entries), each with its files."""
        if self.remote and self.fetch == "blocks" and not self.sharded:  # the local map (damaged at the URL)
            return [place.folder / "local"]
        if self.remote and self.fetch != "blocks":
            root = place.folder / "cache" / "entries"
        elif self.sharded:  # (read by blocks: the local shards uploaded, damaged at the URL)
            root = place.folder / "local" / "shards"
        else:
            return [place.folder / "local"]
        return sorted(p for p in root.iterdir() if (p / "header.json").is_file())

    def damage(self, place: Place) -> None:
        """Flip one byte in the middle of the data every sample of every map is read from, in place (a map open
        already reads the damaged bytes). For a map at a URL, the cache entries are damaged: open the container
        first (`open_all`), as a cache entry found damaged when it is opened is fetched again. For a map read by
        blocks, the objects at the URL are damaged (before any block is fetched: a fetched block is checked once)."""
        prefix = "" if self.field is None else self.field + "."
        for folder in self.map_folders(place):
            if self.remote and self.fetch == "blocks":
                self._damage_at_url(place, folder, prefix)
                continue
            columns = sorted((p for p in folder.glob(f"{prefix}*.bin") if not p.name.startswith("checksums.")
                              and "offsets" not in p.name and p.stat().st_size),
                             key=lambda p: (p.name != f"{prefix}data.bin", -p.stat().st_size))
            if not columns:
                continue
            with open(columns[0], "r+b") as f:
                f.seek(columns[0].stat().st_size // 2)
                byte = f.read(1)[0]
                f.seek(-1, 1)
                f.write(bytes([byte ^ 0x01]))

    def _damage_at_url(self, place: Place, folder: Path, prefix: str) -> None:
        """Flip one byte in the middle of the data column of the local map ``folder`` as uploaded to the URL."""
        import fsspec

        columns = sorted((p for p in folder.glob(f"{prefix}*.bin") if not p.name.startswith("checksums.")
                          and "offsets" not in p.name and p.stat().st_size),
                         key=lambda p: (p.name != f"{prefix}data.bin", -p.stat().st_size))
        if not columns:
            return
        relative = folder.relative_to(place.folder / "local").as_posix()
        url = place.url.rstrip("/") + ("" if relative == "." else f"/{relative}")
        fs, root = fsspec.core.url_to_fs(url, **(place.storage_options or {}))
        stem = columns[0].name[:-len(".bin")]  # an uploaded column is named <column>.<version>.bin
        pattern = re.escape(stem) + r"\.[^.]+\.bin"
        named = [p for p in fs.ls(root, detail=False) if re.fullmatch(pattern, p.rsplit("/")[-1])]
        assert len(named) == 1, f"the uploaded {columns[0].name} of {folder} is not one file at {root}: {named}"
        path = named[0]
        data = bytearray(fs.cat_file(path))
        data[len(data) // 2] ^= 0x01
        fs.pipe_file(path, bytes(data))

    def open_all(self, container: Any) -> None:
        """Open (download, for a map at a URL) every map the container reads from, without reading a sample."""
        if self.fetch == "blocks":
            return  # blocks are fetched by the reads themselves
        if self.remote and self.sharded:
            for k in range(len(container.shards)):
                container.shard(k)
        elif self.remote:
            container.local  # noqa: B018  (the first use downloads and opens the map)

    def reference(self, place: Place, n: int, **options: Any) -> Any:
        """A single local map holding the same samples, to compare ``get_batch`` with."""
        path = place.folder / "reference"
        if not path.exists():
            self._build_one(path, 0, n)
        opened = self.spec.container(path, mode="r", **options)
        return opened if self.field is None else opened[self.field]


def container_cases() -> dict[str, ContainerCase]:
    """The cases for the built-in kinds: a sharded map, a single map at a URL and a sharded map at a URL of each
    (those at a URL downloaded whole and read by blocks), and the field containers of records maps (single and
    sharded) for each of their fields."""
    cases: dict[str, ContainerCase] = {}
    for name in ("strings", "ragged", "numpy", "records", "images", "records-images"):
        spec = spec_for(name)
        for layout in ("sharded", "remote", "remote-sharded"):
            needs = ("fsspec",) if layout.startswith("remote") else ()
            options = {"channels": 1} if spec.kind == "images" else None  # RGBA samples read as gray
            case = ContainerCase(f"{layout}-{name}", spec, layout, read_options=options, needs=needs)
            cases[case.name] = case
            if layout.startswith("remote"):  # ... and read by blocks (open_existing(url, fetch="blocks"))
                case = ContainerCase(f"{layout}-blocks-{name}", spec, layout, read_options=options, needs=needs,
                                     fetch="blocks")
                cases[case.name] = case
    for name in ("records", "records-images"):
        spec = spec_for(name)
        for field_name in spec.build_options["schema"]:
            for layout in ("local", "sharded"):
                case = ContainerCase(f"{layout}-{name}[{field_name}]", spec, layout, field=field_name)
                cases[case.name] = case
    return cases


def same_batches(got: Any, want: Any) -> bool:
    """Whether two ``get_batch`` results are equal: arrays (dtype, shape, bytes), lists, tuples and dicts of them."""
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(same_batches(got[k], want[k])
                                                                           for k in want)
    if isinstance(want, (tuple, list)):
        return (isinstance(got, type(want)) and len(got) == len(want)
                and all(same_batches(a, b) for a, b in zip(got, want)))
    return arrays_equal(got, want)


def _read_in_worker(container: Any, indices: list[int]) -> list[Any]:
    return [np.array(s) if isinstance(s, np.ndarray) else s for s in container[indices]]  # copies, to send back


class ContainerConformance:
    """The read-side conformance tests of one `ContainerCase` (see the module's docstring). Subclass it in a test
    module with a ``Test`` name and set ``case``; override the ``place`` fixture to read from another store."""

    case: ClassVar[ContainerCase]
    samples: ClassVar[int] = 12
    spawn_workers: ClassVar[bool] = False  # also unpickle in a spawned process (slow: a fresh interpreter)

    @pytest.fixture
    def place(self, tmp_path: Path) -> Place:
        return Place(tmp_path, f"memory://mmap-ninja-kit/{uuid.uuid4().hex}")

    def _built(self, place: Place, **options: Any) -> Any:
        for module in self.case.needs:
            pytest.importorskip(module)
        self.case.build(place, self.samples)
        return self.case.open(place, **options)

    def _assert_samples(self, got: Any, indices: Any, what: str) -> None:
        got_list, wanted = list(got), list(indices)
        assert len(got_list) == len(wanted), f"{what} gave {len(got_list)} samples, expected {len(wanted)}"
        for j, (sample, i) in enumerate(zip(got_list, wanted)):
            assert self.case.equal(sample, self.case.sample(i)), f"{what}: item {j} should be sample {i}: {sample!r}"

    def test_every_indexing_form_and_iteration(self, place: Place) -> None:
        n = self.samples
        m = self._built(place)
        assert len(m) == n, f"the container has length {len(m)}, expected {n}"
        for i in (0, 1, n // 2, n - 1):
            assert self.case.equal(m[i], self.case.sample(i)), f"m[{i}]"
            assert self.case.equal(m[i - n], self.case.sample(i)), f"m[{i - n}]"
            assert self.case.equal(m[np.int64(i)], self.case.sample(i)), f"m[np.int64({i})]"
        positions = list(range(n))
        for index in (slice(None), slice(2, 9), slice(None, None, 3), slice(-5, None), slice(None, None, -2),
                      slice(n + 5, n + 9), slice(3, 3)):
            self._assert_samples(m[index], positions[index], f"m[{index}]")
        picked = [3, 0, n - 1, 3, -2]
        self._assert_samples(m[picked], [positions[i] for i in picked], f"m[{picked}]")
        self._assert_samples(m[np.array(picked)], [positions[i] for i in picked], "m[int array]")
        self._assert_samples(m.__getitems__(picked), [positions[i] for i in picked], "m.__getitems__")
        mask = np.arange(n) % 3 == 1
        self._assert_samples(m[mask], np.flatnonzero(mask).tolist(), "m[mask]")
        self._assert_samples(iter(m), positions, "iteration")
        for out_of_range in (n, -n - 1):
            with pytest.raises(IndexError):
                m[out_of_range]

    def test_one_maps_container_is_an_instance_of_its_kind(self, place: Place) -> None:
        """A container of one map at a URL (downloaded whole or read by blocks) is an instance of the kind's class,
        so ``isinstance`` and ``open_existing(url, kind=...)`` hold whichever way it is fetched."""
        if self.case.layout != "remote" or self.case.field is not None:
            return
        m = self._built(place)
        kind_class = self.case.spec.container
        assert isinstance(m, kind_class), f"{type(m).__name__} is not a {kind_class.__name__}"

    def test_get_batch_is_a_single_maps(self, place: Place) -> None:
        m = self._built(place)
        reference = self.case.reference(place, self.samples)
        method = getattr(reference, "get_batch", None)
        if method is None:
            if self.case.sharded:
                with pytest.raises(TypeError, match="no get_batch"):
                    m.get_batch([0])
            else:
                assert not hasattr(m, "get_batch"), "a get_batch the single map does not have"
            return
        options = {"pad_value": 0} if "pad_value" in inspect.signature(method).parameters else {}
        for indices in ([self.samples - 1, 0, 4, 5, 2], [3], list(range(self.samples))):
            try:
                want = method(indices, **options)
            except Exception as refused:  # e.g. samples of different dimensions: the container refuses them too
                with pytest.raises(type(refused)):
                    m.get_batch(indices, **options)
                continue
            got = m.get_batch(indices, **options)
            assert same_batches(got, want), f"get_batch({indices}) differs from a single map's: {got!r} {want!r}"

    def test_read_options_reach_every_read_path(self, place: Place) -> None:
        options = self.case.read_options
        if not options:
            return
        m = self._built(place, **options)
        reference = self.case.reference(place, self.samples, **options)
        n = self.samples
        assert all(same_batches(m[i], reference[i]) for i in range(-n, n)), f"m[i] with {options}"
        assert same_batches(m[[n - 1, 0, 3]], reference[[n - 1, 0, 3]]), f"m[list] with {options}"
        assert same_batches(list(m), list(reference)), f"iteration with {options}"
        if hasattr(reference, "get_batch"):
            indices = [n - 1, 0, 4, 5]
            assert same_batches(m.get_batch(indices, pad_value=0), reference.get_batch(indices, pad_value=0))
        copy = pickle.loads(pickle.dumps(m))
        assert same_batches(copy[n - 1], reference[n - 1]), f"an unpickled copy loses {options}"

    def test_pickles_and_reads_the_same(self, place: Place) -> None:
        m = self._built(place)
        copy = pickle.loads(pickle.dumps(m))
        assert len(copy) == len(m)
        self._assert_samples(iter(copy), range(self.samples), "an unpickled copy")
        if self.spawn_workers:
            context = multiprocessing.get_context("spawn")
            with context.Pool(1) as pool:
                got = pool.apply(_read_in_worker, (m, [self.samples - 1, 0]))
            self._assert_samples(got, [self.samples - 1, 0], "a container unpickled in a spawned worker")

    def test_wrapper_fn_on_every_read_path(self, place: Place) -> None:
        m = self._built(place)
        m.wrapper_fn = _Tagged
        assert isinstance(m[1], _Tagged) and isinstance(m[-1], _Tagged)
        assert all(isinstance(s, _Tagged) for s in m[[0, self.samples - 1]]) and all(isinstance(s, _Tagged)
                                                                                      for s in m[2:5])
        assert all(isinstance(s, _Tagged) for s in m)
        assert self.case.equal(m[3].sample, self.case.sample(3))

    def test_every_write_is_refused_alike(self, place: Place) -> None:
        """Every container here is read-only: each write method the writable kind's maps have raises
        `ReadOnlyMapError` (never an AttributeError), and nothing changes. A write the writable map itself refuses
        (a records map's rows are not assigned in place: `TypeError`) is refused with the same class."""
        m = self._built(place)
        self.case._build_one(place.folder / "writable", 0, self.samples)
        writable = self.case.spec.container(place.folder / "writable", mode="r+")
        if self.case.field is not None:
            writable = writable[self.case.field]
        sample = self.case.sample(0)

        def writes(target: Any) -> dict[str, Callable[[], Any]]:
            def in_transaction() -> None:
                with target.transaction():
                    pass

            return {"append": lambda: target.append(sample), "extend": lambda: target.extend([sample]),
                    "__setitem__": lambda: target.__setitem__(0, sample), "transaction": in_transaction,
                    "set_metadata": lambda: target.set_metadata({"written": True}),
                    "extend_flat": lambda: target.extend_flat(np.zeros(2, np.int32), [1, 1]),
                    "extend_utf8": lambda: target.extend_utf8(b"ab", [1, 1]),
                    "add_field": lambda: target.add_field("added", [0] * len(target))}

        for name, write in writes(m).items():
            if not hasattr(writable, name):
                continue
            refusal: type[BaseException] = ReadOnlyMapError
            try:
                writes(writable)[name]()
            except ReadOnlyMapError:
                pass
            except (TypeError, ValueError) as refused:  # the writable map refuses it too: the same refusal
                refusal = type(refused)
            with pytest.raises((refusal, ReadOnlyMapError)):  # "read-only" answers any write too
                write()
                raise AssertionError(f"{type(m).__name__}.{name} wrote to a read-only container")
        assert len(m) == self.samples and self.case.equal(m[0], sample)

    def test_answers_as_its_kinds_map(self, place: Place) -> None:
        """The read API of a single map of the kind is there and answers the same: every method of one sample
        (``shape(i)``, ``raw(i)``, ...) and of many (``shapes(indices)``, ``columns(indices)``, ...), ``to_arrow``,
        and the properties that describe the samples (``dtype``, a NumPy map's ``shape``, ``formats``, ...).
        What belongs to one map's files (its ``values`` and ``offsets`` columns, its codec, ...) and NumPy's array
        methods on a sharded map (they would join every shard in memory) are not asked for."""
        m = self._built(place)
        reference = self.case.reference(place, self.samples)
        n = self.samples
        not_asked = set(_ONE_MAPS_OWN)
        if self.case.sharded:
            not_asked |= {name for name in dir(np.ndarray) if name not in _ARRAY_DESCRIPTION}
        for name in dir(type(reference)):
            static = inspect.getattr_static(type(reference), name)
            if name.startswith("_") or name in not_asked or isinstance(static, (classmethod, staticmethod)):
                continue
            want = getattr(reference, name)
            assert hasattr(m, name), f"{type(m).__name__} has no {name!r}, which a {type(reference).__name__} has"
            got = getattr(m, name)
            if not callable(want):
                if name not in ("path", "mode") and isinstance(want, _COMPARABLE):
                    assert _same(got, want), f"{name}: {got!r}, a single map has {want!r}"
                continue
            parameters = list(inspect.signature(want).parameters.values())
            required = [p for p in parameters[1:] if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD]
            first = parameters[0].name if parameters else None
            if first == "index" and not required:
                for i in (0, n // 2, n - 1, -1):
                    _assert_same_answer(getattr(reference, name), got, (i,), f"{name}({i})")
            elif first == "indices" and not required:
                for indices in ([n - 1, 0, 4, 5, 2], list(range(n))):
                    _assert_same_answer(getattr(reference, name), got, (indices,), f"{name}({indices})")
            elif name == "to_arrow":
                _assert_same_answer(lambda: reference.to_arrow().to_pylist(), lambda: m.to_arrow().to_pylist(), (),
                                    name)

    def test_verify_reads_catches_damage_on_every_read_path(self, place: Place) -> None:
        self._built(place).close()
        checked = self.case.open(place, verify_reads=True)
        self.case.open_all(checked)
        self.case.damage(place)
        n = self.samples
        reads: list[tuple[str, Callable[[], Any]]] = [
            ("iteration", lambda: list(checked)),
            ("m[list]", lambda: checked[list(range(n))]),
            ("m[slice]", lambda: checked[:]),
            ("m[i] for each i", lambda: [checked[i] for i in range(n)]),
        ]
        kind_class = getattr(checked, "shard_class", type(checked))  # a sharded map takes its shards' arguments
        if hasattr(kind_class, "get_batch"):
            parameters = inspect.signature(kind_class.get_batch).parameters
            options = {"pad_value": 0} if "pad_value" in parameters else {}
            try:  # a batch a single map refuses (samples of different dimensions) is refused before any read
                self.case.reference(place, n).get_batch(list(range(n)), **options)
                reads.append(("get_batch", lambda: checked.get_batch(list(range(n)), **options)))
            except (TypeError, ValueError):
                pass
        for what, read in reads:
            # A ChecksumMismatchError, or another CorruptMapError where a read parses the bytes before hashing
            # them (an images batch checks the encoded headers first): damage is never read silently.
            with pytest.raises(CorruptMapError):
                read()
                raise AssertionError(f"{what} read damaged bytes without an error")


_ONE_MAPS_OWN = ("values", "offsets", "array", "layout", "legacy", "codec", "closed", "exists", "plain_reads",
                 "default_batch_size", "decoder", "decoders", "ndims", "order")
"""What describes one map's own files and handle, not its samples: a container of many maps need not have it."""

_ARRAY_DESCRIPTION = ("dtype", "shape", "ndim", "size", "itemsize", "nbytes")
"""What a sharded map of NumPy samples answers as `NumpyMmap` does (NumPy's other array methods it has not)."""


def _assert_same_answer(want: Callable[..., Any], got: Callable[..., Any], args: tuple[Any, ...], what: str) -> None:
    """``got(*args)`` gives what ``want(*args)`` gives (arrays, bytes, lists, dicts of them), or raises the same
    class."""
    try:
        wanted = want(*args)
    except Exception as refused:
        with pytest.raises(type(refused)):
            got(*args)
        return
    answer = got(*args)
    assert _same(answer, wanted), f"{what}: {answer!r}, a single map gives {wanted!r}"


_COMPARABLE = (np.ndarray, np.generic, np.dtype, dict, list, tuple, str, int, float, memoryview, type(None))


def _same(got: Any, want: Any) -> bool:
    """Equal answers: arrays (dtype, shape, bytes), bytes, and lists, tuples and dicts of them or of plain values."""
    if isinstance(want, (np.ndarray, np.generic)):
        return arrays_equal(got, want)
    if isinstance(want, memoryview):
        return bytes(got) == bytes(want)
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(_same(got[k], want[k]) for k in want)
    if isinstance(want, (list, tuple)):
        return isinstance(got, (list, tuple)) and len(got) == len(want) and all(map(_same, got, want))
    return bool(got == want)


class _Tagged:
    """What the wrapper_fn test wraps every sample in."""

    def __init__(self, sample: Any):
        self.sample = sample
