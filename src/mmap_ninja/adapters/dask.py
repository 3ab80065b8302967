"""Building a sharded map on Dask: one shard per partition of a ``dask.bag``, built by the workers.

`from_dask` runs on whatever scheduler is active (a ``distributed.Client`` included). Each partition becomes
``out_dir/shards/part-00042``, built under a staging name by a task on a worker (``cls.from_generator``) and
renamed into place only once complete, so a killed worker leaves no visible partial shard. Every shard records in
its metadata which partition of which input it holds (the partition's index and ``dask.base.tokenize`` of the
bag, the kind and the options): a re-run skips the shards already complete for the same input and builds only
the rest, and a re-run on changed input rebuilds them all. The driver then publishes ``shards.json`` (a merge by
metadata: no data moves). One build writes a given output at a time (the driver holds the directory's lock).

This module imports ``dask``; ``import mmap_ninja`` does not.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Optional

from dask.base import compute, tokenize
from dask.delayed import delayed

from mmap_ninja.errors import CorruptMapError, MapError
from mmap_ninja.format import check_metadata, read_header
from mmap_ninja.maps import MapBase
from mmap_ninja.sharded import SHARDS_DIR, SHARDS_FILE, ShardedMap, directory_lock, publish_shards
from mmap_ninja.storage import DEFAULT_LOCK_TIMEOUT, LOCK_FILE, PathLike, absolute

__all__ = ["PROVENANCE_KEY", "from_dask"]

PROVENANCE_KEY = "mmap_ninja.dask"
"""The key of a shard's metadata that says which partition of which input it holds."""
_PART = "part-"
_STAGING = ".staging-"


def _part_name(index: int) -> str:
    return f"{_PART}{index:05d}"


def _provenance(token: str, index: int, npartitions: int) -> dict[str, Any]:
    return {"token": token, "partition": index, "npartitions": npartitions}


def _complete(path: Path, provenance: dict[str, Any]) -> bool:
    """Whether ``path`` holds a finished shard built from this partition of this input."""
    try:
        header = read_header(path)
    except (MapError, OSError):
        return False
    return not header.building and header.metadata.get(PROVENANCE_KEY) == provenance


def _build_partition(samples: Any, shards_dir: str, cls: type[MapBase], provenance: dict[str, Any],
                     batch_size: int, options: dict[str, Any]) -> str:
    """Runs on a worker: build one partition's shard under a staging name, then rename it into place."""
    directory = Path(shards_dir)
    final = directory / _part_name(provenance["partition"])
    if _complete(final, provenance):
        return final.name  # an earlier attempt of this task finished it
    staging = directory / f".{final.name}{_STAGING}{uuid.uuid4().hex[:12]}"
    try:
        cls.from_generator(staging, samples, batch_size, metadata={PROVENANCE_KEY: provenance}, **options).close()
        if final.exists():  # a stale shard (another input), or an attempt that raced this one
            if _complete(final, provenance):
                shutil.rmtree(staging)
                return final.name
            trash = directory / f".{final.name}.old-{uuid.uuid4().hex[:12]}"
            os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)  # unlinked, so readers that map the old files keep them
        os.rename(staging, final)
        _fsync_directory(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final.name


def _run_all(tasks: list[Any]) -> None:
    """Compute ``tasks`` on the active scheduler and return only when every one of them has ended, then raise
    the first error: a task still building a shard when the build reports failure would write to the output
    after the build released it. With a ``distributed.Client`` the futures are waited for; Dask's local
    schedulers end their running tasks before they raise."""
    try:
        from distributed import get_client, wait
    except ImportError:
        client = None
    else:
        try:
            client = get_client()
        except ValueError:  # no client in this process: a local scheduler
            client = None
    if client is None:
        compute(*tasks)  # type: ignore[no-untyped-call]
        return
    futures = client.compute(tasks)  # type: ignore[no-untyped-call]
    try:
        wait(futures)  # type: ignore[no-untyped-call]  # every task done or failed
        client.gather(futures)  # type: ignore[no-untyped-call]  # raises the first error
    finally:
        for future in futures:
            future.release()


def from_dask(cls: type[MapBase], out_dir: PathLike, bag: Any, *, batch_size: int = 1024,
              metadata: Optional[dict[str, Any]] = None, lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT,
              **options: Any) -> ShardedMap:
    """Build the sharded map ``out_dir`` of kind ``cls`` (`RaggedMmap`, ...) from the ``dask.bag`` ``bag``,
    one shard per partition, on the active Dask scheduler; returns it open. Its samples are the bag's, in
    order: equal, sample for sample, to ``cls.from_generator(path, bag.compute(), ...)``.

    ``options`` are the kind's own (``dtype=``, ``codec=``, ...), given to every shard's ``from_generator``
    with ``batch_size``. Re-running after a failure (a killed worker, an exception in the bag) builds only the
    partitions that have no complete shard for this same input. ``metadata`` is stored in ``shards.json``.
    """
    out = absolute(out_dir)
    npartitions = int(bag.npartitions)
    token = tokenize(bag, cls.layout.kind, batch_size, sorted(options.items(), key=lambda kv: kv[0]))
    checked_metadata = check_metadata(metadata)
    out.mkdir(parents=True, exist_ok=True)
    with directory_lock(out, lock_timeout):
        shards_dir = out / SHARDS_DIR
        _refuse_foreign(out)
        shards_dir.mkdir(exist_ok=True)
        for leftover in shards_dir.iterdir():  # staging names of a build that died; this build holds the lock
            if leftover.name.startswith(".") and (_STAGING in leftover.name or ".old-" in leftover.name):
                shutil.rmtree(leftover, ignore_errors=True)
        provenances = [_provenance(token, i, npartitions) for i in range(npartitions)]
        todo = [i for i in range(npartitions) if not _complete(shards_dir / _part_name(i), provenances[i])]
        if todo:
            partitions = bag.to_delayed()
            _run_all([delayed(_build_partition, pure=False)(partitions[i], str(shards_dir), cls, provenances[i],
                                                            batch_size, options) for i in todo])
        for i in range(npartitions):
            if not _complete(shards_dir / _part_name(i), provenances[i]):
                raise CorruptMapError(f"{shards_dir / _part_name(i)} is not the finished shard of partition {i} "
                                      f"(was it changed during the build?)")
        sharded = publish_shards(out, [f"{SHARDS_DIR}/{_part_name(i)}" for i in range(npartitions)],
                                 cls.layout.kind, metadata=checked_metadata,
                                 extra={"source": {"dask_token": token, "npartitions": npartitions}})
        for stale in shards_dir.iterdir():  # shards of partitions a previous, larger input had
            if stale.name.startswith(_PART) and stale.name[len(_PART):].isdigit() \
                    and int(stale.name[len(_PART):]) >= npartitions:
                shutil.rmtree(stale, ignore_errors=True)
    return sharded


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _refuse_foreign(out: Path) -> None:
    foreign = sorted(set(os.listdir(out)) - {LOCK_FILE, SHARDS_DIR, SHARDS_FILE, SHARDS_FILE + ".tmp"})
    if (out / SHARDS_DIR).is_dir():
        foreign += [f"{SHARDS_DIR}/{name}" for name in sorted(os.listdir(out / SHARDS_DIR))
                    if not name.startswith((_PART, "." + _PART))]
    if foreign:
        raise FileExistsError(f"{out} holds {foreign[0]!r}, which a Dask build did not write; build into an empty "
                              f"directory (or one an earlier from_dask built)")
