"""`open_existing`, which opens a map of any kind, and `Wrapped`, which applies a function on every read."""

from __future__ import annotations

from collections.abc import Iterator
from copy import copy
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar, Union, overload

from mmap_ninja.containers.sharded import DEFAULT_MAX_OPEN_FILES, DEFAULT_MAX_OPEN_SHARDS, ShardedMap, is_sharded
from mmap_ninja.errors import KindMismatchError, UnknownFeatureError
from mmap_ninja.kinds.legacy import is_legacy_map, open_legacy
from mmap_ninja.kinds.maps import KINDS
from mmap_ninja.storage.format import read_header
from mmap_ninja.storage.store import DEFAULT_LOCK_TIMEOUT, PathLike, absolute, is_url

if TYPE_CHECKING:
    from mmap_ninja.kinds.images import ImagesMmap
    from mmap_ninja.kinds.maps import MapBase
    from mmap_ninja.kinds.numpy import NumpyMmap
    from mmap_ninja.kinds.ragged import RaggedMmap
    from mmap_ninja.kinds.records import RecordsMmap
    from mmap_ninja.kinds.strings import StringsMmap

__all__ = ["OpenedMap", "Wrapped", "is_url", "open_existing", "upload"]

M = TypeVar("M", bound="MapBase | ShardedMap")


OpenedMap = Union["StringsMmap", "RaggedMmap", "NumpyMmap", "ImagesMmap", "RecordsMmap", "ShardedMap"]
"""What `open_existing` gives when not told the kind: a map of one of the kinds, or a sharded map (its class
tells which; a map at a URL is an instance of its kind's class too). Pass ``kind=`` to have the checker know it."""


@overload
def open_existing(out_dir: PathLike, wrapper_fn: Optional[Callable[[Any], Any]] = None, mode: Optional[str] = None,
                  *, kind: type[M], copy_before_wrapper_fn: bool = True,
                  lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT, durable: bool = False,
                  allow_unfinished: bool = False, verify_reads: bool = False, channels: Optional[int] = None,
                  fast: bool = False, decoder: Optional[str] = None, draft: Optional[tuple[int, int]] = None,
                  max_open_shards: int = DEFAULT_MAX_OPEN_SHARDS, max_open_files: int = DEFAULT_MAX_OPEN_FILES,
                  cache_dir: Optional[PathLike] = None, storage_options: Optional[dict[str, Any]] = None,
                  cache_size_limit: Optional[int] = None, fetch: str = "auto",
                  block_size: Optional[int] = None) -> M: ...
@overload
def open_existing(out_dir: PathLike, wrapper_fn: Optional[Callable[[Any], Any]] = None, mode: Optional[str] = None,
                  *, kind: None = None, copy_before_wrapper_fn: bool = True,
                  lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT, durable: bool = False,
                  allow_unfinished: bool = False, verify_reads: bool = False, channels: Optional[int] = None,
                  fast: bool = False, decoder: Optional[str] = None, draft: Optional[tuple[int, int]] = None,
                  max_open_shards: int = DEFAULT_MAX_OPEN_SHARDS, max_open_files: int = DEFAULT_MAX_OPEN_FILES,
                  cache_dir: Optional[PathLike] = None, storage_options: Optional[dict[str, Any]] = None,
                  cache_size_limit: Optional[int] = None, fetch: str = "auto",
                  block_size: Optional[int] = None) -> OpenedMap: ...
def open_existing(out_dir: PathLike, wrapper_fn: Optional[Callable[[Any], Any]] = None, mode: Optional[str] = None,
                  *, kind: Optional[type[Any]] = None, copy_before_wrapper_fn: bool = True,
                  lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT, durable: bool = False,
                  allow_unfinished: bool = False, verify_reads: bool = False, channels: Optional[int] = None,
                  fast: bool = False, decoder: Optional[str] = None, draft: Optional[tuple[int, int]] = None,
                  max_open_shards: int = DEFAULT_MAX_OPEN_SHARDS, max_open_files: int = DEFAULT_MAX_OPEN_FILES,
                  cache_dir: Optional[PathLike] = None, storage_options: Optional[dict[str, Any]] = None,
                  cache_size_limit: Optional[int] = None, fetch: str = "auto",
                  block_size: Optional[int] = None) -> Any:
    """Open whatever map ``out_dir`` holds, as a `StringsMmap`, `RaggedMmap`, `NumpyMmap`, ..., or a `ShardedMap`

    Raises `NotAMapError` if there is none (the kind of an empty map would be unknown).

    ``kind`` (a map class, e.g. ``kind=StringsMmap``, or ``ShardedMap``) says what the caller expects: the map is
    checked to be one (a `KindMismatchError` if not), and a type checker knows the result's type. The other
    keywords are those of the class that opens the map (see `MapBase`; ``channels``, ``fast``, ``decoder`` and
    ``draft`` for images; ``max_open_shards`` and ``max_open_files`` for a sharded map); only the ones given are
    passed on, and one the map's class does not take is a `TypeError` naming it.

    ``out_dir`` may be a URL (``s3://bucket/path``, any fsspec URL): the map is read through a local cache
    (keywords ``cache_dir``, ``storage_options``, ``cache_size_limit``, ``fetch`` and ``block_size``: whole
    downloads or ranged block reads; see `mmap_ninja.adapters.remote`),
    read-only: ``mode`` defaults to ``"r+"`` for a local map and to ``"r"`` (the only mode it takes) for a URL.

    Example:

        >>> from mmap_ninja import StringsMmap, open_existing
        >>> StringsMmap.from_strings("names", ["ada", "grace"], overwrite=True).close()
        >>> names = open_existing("names")
        >>> type(names).__name__, names[1]
        ('StringsMmap', 'grace')
    """
    given = {name: value for name, value, default in (
        ("copy_before_wrapper_fn", copy_before_wrapper_fn, True), ("lock_timeout", lock_timeout, DEFAULT_LOCK_TIMEOUT),
        ("durable", durable, False), ("allow_unfinished", allow_unfinished, False),
        ("verify_reads", verify_reads, False), ("channels", channels, None), ("fast", fast, False),
        ("decoder", decoder, None), ("draft", draft, None),
        ("max_open_shards", max_open_shards, DEFAULT_MAX_OPEN_SHARDS),
        ("max_open_files", max_open_files, DEFAULT_MAX_OPEN_FILES), ("cache_dir", cache_dir, None),
        ("storage_options", storage_options, None), ("cache_size_limit", cache_size_limit, None),
        ("fetch", fetch, "auto"), ("block_size", block_size, None),
    ) if value != default}
    opened = _open(out_dir, wrapper_fn, mode, given)
    if kind is not None and not isinstance(opened, kind):
        # (a single map read by blocks is a ShardedMap of its blocks too, and an instance of its kind's class)
        single = not isinstance(opened, ShardedMap) or getattr(opened, "blocks_are_shards", False)
        what = f"a map of kind {opened.layout.kind!r} ({type(opened).__name__})" if single else \
            f"a sharded map of {opened.kind!r} maps"
        opened.close()
        raise KindMismatchError(f"{out_dir} holds {what}, not the {kind.__name__} open_existing(kind=...) expects")
    return opened


def _open(out_dir: PathLike, wrapper_fn: Optional[Callable[[Any], Any]], mode: Optional[str],
          options: dict[str, Any]) -> Any:
    if is_url(out_dir):
        from mmap_ninja.adapters.remote import open_remote

        return open_remote(str(out_dir), wrapper_fn, "r" if mode is None else mode, **options)
    if mode is None:
        mode = "r+"
    directory = absolute(out_dir)
    if is_sharded(directory):
        return ShardedMap(directory, wrapper_fn, mode, **options)
    kind = open_legacy(directory).kind if is_legacy_map(directory) else read_header(directory).kind
    cls = KINDS.get(kind)
    if cls is None:
        raise UnknownFeatureError(f"{directory} holds a map of kind {kind!r}, which this "
                                  f"mmap_ninja does not know; a newer mmap_ninja may read it")
    return cls(out_dir, wrapper_fn, mode, **options)


def upload(local_path: PathLike, url: str, storage_options: Optional[dict[str, Any]] = None, *,
           prune: bool = False) -> None:
    """Upload the map (single or sharded) in ``local_path`` to ``url`` (any fsspec URL), headers last, never over an
    object a published header names; ``prune=True`` then deletes the column objects no header names any more. See
    `mmap_ninja.adapters.remote.upload`. Needs the ``s3`` extra (fsspec, and s3fs for ``s3://``).

    Example:

        >>> import numpy as np
        >>> import mmap_ninja
        >>> local = mmap_ninja.RaggedMmap.from_lists("tokens_local", [np.arange(n) for n in (1, 2, 3)], overwrite=True)
        >>> local.close()
        >>> mmap_ninja.upload("tokens_local", "memory://docs-bucket/tokens")
        >>> remote = mmap_ninja.open_existing("memory://docs-bucket/tokens", cache_dir="cache")
        >>> len(remote), remote[2]
        (3, array([0, 1, 2]))
    """
    from mmap_ninja.adapters.remote import upload as upload_map

    upload_map(local_path, url, storage_options, prune=prune)


class Wrapped:
    """``data`` with ``wrapper_fn`` applied to each item read (to a copy of it by default).

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import Wrapped, np_from_ndarray
        >>> pixels = np_from_ndarray("pixels", np.array([[0, 255], [128, 64]], dtype=np.uint8), overwrite=True)
        >>> scaled = Wrapped(pixels, lambda sample: sample / 255)
        >>> len(scaled), scaled[0]
        (2, array([0., 1.]))
    """

    def __init__(self, data: Any, wrapper_fn: Callable[[Any], Any], copy_before_wrapper_fn: bool = True):
        self.data = data
        self.wrapper_fn = wrapper_fn
        self.copy_before_wrapper_fn = copy_before_wrapper_fn

    def __getitem__(self, item: Any) -> Any:
        sample = self.data[item]
        if self.copy_before_wrapper_fn:
            sample = copy(sample)
        return self.wrapper_fn(sample)

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self[i]
