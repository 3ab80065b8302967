"""`convert`: copy a map written by mmap_ninja 0.9.0 into the current format, or a map into one with another codec,
verified, without touching the source."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mmap_ninja._fsio import fsync_dir
from mmap_ninja.legacy import (
    NATIVE_HEADER_FILE,
    NotAMapError,
    PathLike,
    is_legacy_map,
    open_legacy,
)

_BATCH_BYTES = 64 << 20  # a batch of about this many bytes is held in memory (and committed) at a time
_MAX_BATCH = 10_000


class ConversionError(RuntimeError):
    """The converted map did not read back equal to the source (nothing was published at the destination)."""


class Converted(NamedTuple):
    """What `convert` wrote: the new map's directory, its kind and number of samples."""

    path: Path
    kind: str
    length: int


def convert(src: PathLike, dst: PathLike, *, verbose: bool = True, batch_size: int | None = None,
            codec: Any = None) -> Converted:
    """Copy the map mmap_ninja 0.9.0 wrote in ``src`` into a new map in the current format at ``dst``; or, with
    ``codec=`` (``"zstd"``, ``"lz4"``, a `mmap_ninja.codecs.Codec`, or ``"none"``), copy a strings or ragged map of
    either format into one compressed with that codec.

    The samples are streamed (about ``batch_size`` of them in memory at a time; by default as many as fit in
    64 MiB, at most 10,000) into a temporary directory next to ``dst``, read back and compared with the source
    one by one, and only then renamed to ``dst``: nothing appears at ``dst`` unless the whole map is there and
    verified, and a failure leaves no temporary directory behind. ``src`` is only read. ``dst`` must not exist.
    zstd-compressed strings stay zstd-compressed (at the same level). ``verbose`` shows progress bars.

    Raises NotAMapError if ``src`` holds no 0.9.0 map, ValueError if it already is in the current format,
    FileExistsError if ``dst`` exists, and the errors of `mmap_ninja.legacy.open_legacy` for damaged sources.
    """
    source_dir, target = Path(src), Path(dst)
    if not source_dir.exists():
        raise NotAMapError(f"{source_dir} does not exist")
    native = (source_dir / NATIVE_HEADER_FILE).exists()
    if native and codec is None:
        raise ValueError(f"{source_dir} is already in the current format (it has a {NATIVE_HEADER_FILE}); there is "
                         f"nothing to convert (pass a codec to re-encode it)")
    if not native and not is_legacy_map(source_dir):
        raise NotAMapError(f"{source_dir} holds no map written by mmap_ninja 0.9.0 (it has no type.ninja)")
    if os.path.lexists(target):
        raise FileExistsError(f"{target} already exists; convert writes a new map and never replaces anything")
    parent = target.absolute().parent
    if not parent.is_dir():
        raise FileNotFoundError(f"the folder {parent} that would hold {target.name} does not exist")
    source_abs, target_abs = source_dir.resolve(), parent.resolve() / target.name
    if target_abs == source_abs or source_abs in target_abs.parents:
        raise ValueError(f"{target} is inside the source map {source_dir}; convert never writes into the source")

    legacy: Any = _NativeSource(source_dir) if native else open_legacy(source_dir)
    size = batch_size if batch_size is not None else _default_batch_size(legacy)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    temporary = parent / f".{target.name}.converting-{uuid.uuid4().hex[:12]}"
    try:
        _build(legacy, temporary, size, verbose, codec)
        _verify(legacy, temporary, size, verbose)
        _sync_tree(temporary)
        if os.path.lexists(target):  # appeared while we were converting
            raise FileExistsError(f"{target} appeared while {source_dir} was being converted; nothing was replaced")
        os.rename(temporary, target)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return Converted(target, legacy.kind, len(legacy))


class _NativeSource:
    """A map in the current format read like a 0.9.0 one (for re-encoding it with another codec)."""

    def __init__(self, path: Path):
        from mmap_ninja.generic import open_existing

        self.path = path
        self.map: Any = open_existing(path, mode="r")
        self.kind = self.map.layout.kind
        self.dtype = getattr(self.map, "dtype", None)
        self.nbytes = sum(f.stat().st_size for f in path.iterdir() if f.suffix == ".bin")
        self.compressed = False

    def __len__(self) -> int:
        return len(self.map)

    def get_many(self, positions: np.ndarray[Any, Any]) -> list[Any]:
        return list(self.map[positions])


def _default_batch_size(legacy: Any) -> int:
    if not len(legacy):
        return 1
    sample_bytes = max(1, legacy.nbytes // len(legacy))
    if legacy.kind == "strings" and legacy.compressed:
        sample_bytes *= 8  # roughly what a compressed string takes once decompressed
    return int(min(_MAX_BATCH, max(1, _BATCH_BYTES // sample_bytes)))


def _progress(total: int, desc: str, verbose: bool) -> Any:
    if not verbose:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=" samples")


def _samples(legacy: Any, batch_size: int, bar: Any) -> Iterator[Any]:
    for start in range(0, len(legacy), batch_size):
        batch = legacy.get_many(np.arange(start, min(start + batch_size, len(legacy)), dtype=np.int64))
        yield from batch
        if bar is not None:
            bar.update(len(batch))


def _build(legacy: Any, temporary: Path, batch_size: int, verbose: bool, codec: Any) -> None:
    bar = _progress(len(legacy), f"converting {legacy.path.name}", verbose)
    samples = _samples(legacy, batch_size, bar)
    codec = None if codec == "none" else codec
    if codec is not None and legacy.kind not in ("strings", "ragged"):
        raise ValueError(f"codecs compress strings and ragged maps; a {legacy.kind} map cannot be re-encoded")
    try:
        if legacy.kind == "strings":
            from mmap_ninja.string import StringsMmap

            if codec is None and legacy.compressed:
                built: Any = StringsMmap.from_generator(temporary, samples, batch_size, verbose=False,
                                                        zstd_level=legacy.zstd_level)
            else:
                built = StringsMmap.from_generator(temporary, samples, batch_size, verbose=False, codec=codec)
        elif legacy.kind == "ragged":
            from mmap_ninja.ragged import RaggedMmap

            built = RaggedMmap.from_generator(temporary, samples, batch_size, verbose=False, dtype=legacy.dtype,
                                              codec=codec)
        else:
            from mmap_ninja.numpy import from_generator

            built = from_generator(temporary, samples, batch_size, verbose=False, dtype=legacy.dtype,
                                   sample_shape=legacy.sample_shape)
        built.close()
    finally:
        if bar is not None:
            bar.close()


def _verify(legacy: Any, temporary: Path, batch_size: int, verbose: bool) -> None:
    """Read the new map back from disk and compare every sample with the source's, bit for bit."""
    if legacy.kind == "strings":
        from mmap_ninja.string import StringsMmap

        converted: Any = StringsMmap(temporary, mode="r")
    elif legacy.kind == "ragged":
        from mmap_ninja.ragged import RaggedMmap

        converted = RaggedMmap(temporary, mode="r")
    else:
        from mmap_ninja.numpy import open_existing

        converted = open_existing(temporary, mode="r")
    bar = _progress(len(legacy), f"verifying {legacy.path.name}", verbose)
    try:
        if len(converted) != len(legacy):
            raise ConversionError(f"the converted map holds {len(converted)} samples, the source {len(legacy)}")
        for start in range(0, len(legacy), batch_size):
            stop = min(start + batch_size, len(legacy))
            if legacy.kind == "numpy":
                _compare_arrays(start, np.asarray(converted)[start:stop], legacy.array[start:stop], "samples")
            else:
                expected = legacy.get_many(np.arange(start, stop, dtype=np.int64))
                for offset, (got, want) in enumerate(zip(converted[start:stop], expected)):
                    if isinstance(want, str):
                        if got != want:
                            raise ConversionError(f"sample {start + offset} reads back as {got!r}, not {want!r}")
                    else:
                        _compare_arrays(start + offset, got, want, "sample")
            if bar is not None:
                bar.update(stop - start)
    finally:
        converted.close()
        if bar is not None:
            bar.close()


def _compare_arrays(position: int, got: Any, want: Any, what: str) -> None:
    got = np.asarray(got)
    if got.shape != want.shape or got.dtype != want.dtype or got.tobytes() != want.tobytes():
        raise ConversionError(f"{what} {position} read{'s' if what == 'sample' else ''} back as {got.dtype} of shape "
                              f"{got.shape}, which differs from the source's {want.dtype} of shape {want.shape} or "
                              f"its values")


def _sync_tree(directory: Path) -> None:
    """fsync every file of the new map and its directories, so the rename publishes complete files."""
    for root, _, files in os.walk(directory):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(root))

