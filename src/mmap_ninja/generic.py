"""`open_existing`, which opens a map of any kind, and `Wrapped`, which applies a function on every read."""

from __future__ import annotations

from copy import copy
from typing import Any, Callable, Optional

from mmap_ninja.numpy import NumpyMmap
from mmap_ninja.ragged import RaggedMmap
from mmap_ninja.storage import PathLike, Store
from mmap_ninja.string import StringsMmap

KINDS = {cls._kind: cls for cls in (StringsMmap, RaggedMmap, NumpyMmap)}


def open_existing(out_dir: PathLike, wrapper_fn: Optional[Callable] = None, mode: str = "r", **options: Any):
    """Open whatever map ``out_dir`` holds, as a `StringsMmap`, `RaggedMmap` or `NumpyMmap`."""
    probe = Store(out_dir)
    kind = probe.kind
    probe.close()
    if kind not in KINDS:
        raise ValueError(f"{out_dir} holds a map of unknown kind {kind!r}; a newer mmap_ninja may read it")
    return KINDS[kind](out_dir, mode, wrapper_fn=wrapper_fn, **options)


class Wrapped:
    """``data`` with ``wrapper_fn`` applied to each item read (to a copy of it by default)."""

    def __init__(self, data: Any, wrapper_fn: Callable, copy_before_wrapper_fn: bool = True):
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

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]
