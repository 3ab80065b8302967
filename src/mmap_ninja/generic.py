"""`open_existing`, which opens a map of any kind, and `Wrapped`, which applies a function on every read."""

from __future__ import annotations

from collections.abc import Iterator
from copy import copy
from typing import Any, Callable, Optional

from mmap_ninja.errors import UnknownFeatureError
from mmap_ninja.format import read_header
from mmap_ninja.legacy import is_legacy_map, open_legacy
from mmap_ninja.maps import KINDS
from mmap_ninja.sharded import ShardedMap, is_sharded
from mmap_ninja.storage import PathLike, absolute, is_url

__all__ = ["Wrapped", "is_url", "open_existing", "upload"]


def open_existing(out_dir: PathLike, wrapper_fn: Optional[Callable[[Any], Any]] = None,
                  mode: Optional[str] = None, **options: Any) -> Any:
    """Open whatever map ``out_dir`` holds, as a `StringsMmap`, `RaggedMmap`, `NumpyMmap`, ..., or a `ShardedMap`

    Raises `NotAMapError` if there is none (the kind of an empty map would be unknown).

    ``out_dir`` may be a URL (``s3://bucket/path``, any fsspec URL): the map is read through a local cache
    (keywords ``cache_dir``, ``storage_options``, ``cache_size_limit``; see `mmap_ninja.adapters.remote`),
    read-only: ``mode`` defaults to ``"r+"`` for a local map and to ``"r"`` (the only mode it takes) for a URL.

    Example:

        >>> from mmap_ninja import StringsMmap, open_existing
        >>> StringsMmap.from_strings("names", ["ada", "grace"], overwrite=True).close()
        >>> names = open_existing("names")
        >>> type(names).__name__, names[1]
        ('StringsMmap', 'grace')
    """
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


def upload(local_path: PathLike, url: str, storage_options: Optional[dict[str, Any]] = None) -> None:
    """Upload the map (single or sharded) in ``local_path`` to ``url`` (any fsspec URL), headers last; see
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

    upload_map(local_path, url, storage_options)


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
