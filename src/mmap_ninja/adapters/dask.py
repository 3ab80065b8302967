"""Building a sharded map on Dask: one shard per partition of a ``dask.bag`` (of samples, or rows for records)
or of a ``dask.dataframe`` (records), built by the workers.

`from_dask` runs on whatever scheduler is active (a ``distributed.Client`` included). Each partition becomes
``out_dir/shards/part-00042``, built under a staging name by a task on a worker (``cls.from_generator``, or
``cls.from_pandas`` for a dataframe's partitions) and renamed into place only once complete, so a killed worker
leaves no visible partial shard. Every shard records in its metadata which partition of which input it holds (the
partition's index and ``dask.base.tokenize`` of the collection, the kind and the options): a re-run skips the
shards already complete for the same input and builds only the rest, and a re-run on changed input rebuilds them
all. The driver then publishes ``shards.json`` (a merge by metadata: no data moves). One build writes a given
output at a time (the driver holds the directory's lock).

A kind whose builder infers a schema from the first rows (records, without ``schema=``) cannot build an empty
partition on its own: such partitions are built last, by the driver, with the schema of a shard that has rows.

This module imports ``dask``; ``import mmap_ninja`` does not.
"""

from __future__ import annotations

import inspect
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

from mmap_ninja.extras import missing_extra

try:
    from dask.base import compute, tokenize
    from dask.delayed import delayed
except ImportError as error:
    raise missing_extra(error, "mmap_ninja.adapters.dask (from_dask)") from None

from mmap_ninja.containers.sharded import (
    SHARDS_DIR,
    SHARDS_FILE,
    SchemaMismatchError,
    ShardedMap,
    directory_lock,
    publish_shards,
)
from mmap_ninja.errors import CorruptMapError, MapError, MapExistsError
from mmap_ninja.kinds.maps import MapBase
from mmap_ninja.storage.dirs import make_folders, refuse_foreign, remove_aside, stage, sweep, unmake_folders
from mmap_ninja.storage.format import check_metadata, read_header
from mmap_ninja.storage.store import DEFAULT_LOCK_TIMEOUT, LOCK_FILE, PathLike, absolute

__all__ = ["PROVENANCE_KEY", "from_dask"]

PROVENANCE_KEY = "mmap_ninja.dask"
"""The key of a shard's metadata that says which partition of which input it holds."""
_PART = "part-"
_STAGING = ".staging-"
_OLD = ".old-"  # a replaced shard, renamed aside while it is deleted


def _leftover(name: str) -> bool:
    """Whether ``name`` in ``shards/`` is a staging or trash folder of a build (one that died, if the build's lock
    is free)."""
    return name.startswith(".") and (_STAGING in name or _OLD in name)


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
                     batch_size: int, options: dict[str, Any], from_frame: bool = False,
                     skip_empty: bool = False) -> Optional[str]:
    """Runs on a worker: build one partition's shard under a staging name, then rename it into place.
    ``from_frame``: the partition is a pandas ``DataFrame`` (``cls.from_pandas``). ``skip_empty``: an empty
    partition is not built (returns ``None``), for the driver to build with a schema."""
    directory = Path(shards_dir)
    final = directory / _part_name(provenance["partition"])
    if _complete(final, provenance):
        return final.name  # an earlier attempt of this task finished it
    if skip_empty:
        samples = samples if from_frame else list(samples)
        if len(samples) == 0:
            return None
    staged = stage(final, _STAGING)
    try:
        metadata = {PROVENANCE_KEY: provenance}
        with _in_partition(provenance["partition"]):
            if from_frame:
                cls.from_pandas(staged.path, samples, batch_size=batch_size,  # type: ignore[attr-defined]
                                metadata=metadata, **options).close()
            else:
                cls.from_generator(staged.path, samples, batch_size, metadata=metadata, **options).close()
        if final.exists():  # a stale shard (another input), or an attempt that raced this one
            if _complete(final, provenance):
                staged.discard()
                return final.name
            remove_aside(final, directory / f".{final.name}{_OLD}{uuid.uuid4().hex[:12]}")
        staged.publish()  # the shard's files reach the disk before the name that says it is finished
    except BaseException:
        staged.discard()
        raise
    return final.name


@contextmanager
def _in_partition(index: int) -> Iterator[None]:
    """A builder's refusal of a sample (which names the sample by its position in the partition) re-raised with
    the same type, naming the partition."""
    try:
        yield
    except (TypeError, ValueError, MapError) as e:
        try:
            named = type(e)(f"partition {index} of the Dask input (positions count from the partition's first "
                            f"sample): {e}")
        except Exception:
            raise e from None
        raise named from e


def _run_all(tasks: list[Any]) -> list[Any]:
    """Compute ``tasks`` on the active scheduler and return their results only when every one of them has
    ended, or raise the first error then: a task still building a shard when the build reports failure would
    write to the output after the build released it. With a ``distributed.Client`` the futures are waited for;
    Dask's local schedulers end their running tasks before they raise."""
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
        return list(compute(*tasks))  # type: ignore[no-untyped-call]
    futures = client.compute(tasks)  # type: ignore[no-untyped-call]
    try:
        wait(futures)  # type: ignore[no-untyped-call]  # every task done or failed
        return list(client.gather(futures))  # type: ignore[no-untyped-call]  # raises the first error
    finally:
        for future in futures:
            future.release()


def from_dask(cls: type[MapBase], out_dir: PathLike, collection: Any, *, batch_size: int = 1024,
              metadata: Optional[dict[str, Any]] = None, lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT,
              **options: Any) -> ShardedMap:
    """Build the sharded map ``out_dir`` of kind ``cls`` (`RaggedMmap`, `RecordsMmap`, ...) from a Dask
    collection, one shard per partition, on the active Dask scheduler; returns it open.

    ``collection`` is a ``dask.bag`` of samples (rows, dicts of field -> value, for records), or, for records,
    a ``dask.dataframe.DataFrame`` (each partition built by `RecordsMmap.from_pandas`: one field per column).
    The samples are the collection's, in order: equal, sample for sample, to ``cls.from_generator(path,
    bag.compute(), ...)`` (``cls.from_pandas(path, frame.compute(), ...)``; note that Dask turns object
    columns, arrays included, into strings when it makes a dataframe unless its ``dataframe.convert-string``
    option is off then). ``options`` are the kind's own
    (``dtype=``, ``codec=``, ``schema=``, ...), given to every shard's builder with ``batch_size``. Without a
    ``schema=``, records infer each partition's schema from its rows; shards that disagree are refused, naming
    the first difference (pass ``schema=`` to fix it). Re-running after a failure (a killed worker, an exception
    in the input) builds only the partitions that have no complete shard for this same input. ``metadata`` is
    stored in ``shards.json``. With records' ``key=``, each shard refuses a repeated key, but a key repeated in
    two partitions is not checked (the sharded map's ``index_of`` gives the first).

    Example:

        >>> import dask
        >>> import dask.bag
        >>> import numpy as np
        >>> from mmap_ninja import RaggedMmap
        >>> from mmap_ninja.adapters.dask import from_dask
        >>> bag = dask.bag.from_sequence([np.arange(n) for n in range(1, 5)], npartitions=2)
        >>> with dask.config.set(scheduler="synchronous"):
        ...     built = from_dask(RaggedMmap, "from_dask", bag, overwrite=True)
        >>> len(built), built.shard_starts, built[3]
        (4, [0, 2, 4], array([0, 1, 2, 3]))
    """
    out = absolute(out_dir)
    from_frame = _is_dataframe(collection)
    if from_frame and not hasattr(cls, "from_pandas"):
        raise TypeError(f"a dask.dataframe builds records maps (RecordsMmap.from_dask); a {cls.__name__} is built "
                        f"from a dask.bag of samples (e.g. frame[column].to_bag())")
    if not from_frame and not hasattr(collection, "to_delayed"):
        raise TypeError(f"from_dask() takes a dask.bag or a dask.dataframe.DataFrame, got "
                        f"{type(collection).__name__}")
    npartitions = int(collection.npartitions)
    token = tokenize(collection, cls.layout.kind, batch_size, sorted(options.items(), key=lambda kv: kv[0]))
    checked_metadata = check_metadata(metadata)
    # A builder that infers a schema from the rows cannot build an empty partition: the driver builds those.
    infers_schema = "schema" in inspect.signature(cls.from_generator).parameters and options.get("schema") is None
    created = make_folders(out)  # the outermost folder this build made (None: it existed)
    with directory_lock(out, lock_timeout):
        try:
            shards_dir = out / SHARDS_DIR
            _refuse_foreign(out)
            shards_dir.mkdir(exist_ok=True)
            sweep(shards_dir, _leftover)  # what a build that died left; this build holds the lock
            provenances = [_provenance(token, i, npartitions) for i in range(npartitions)]
            todo = [i for i in range(npartitions) if not _complete(shards_dir / _part_name(i), provenances[i])]
            if todo:
                partitions = collection.to_delayed()
                built = _run_all([delayed(_build_partition, pure=False)(partitions[i], str(shards_dir), cls,
                                                                        provenances[i], batch_size, options, from_frame,
                                                                        infers_schema) for i in todo])
                empty = [i for i, name in zip(todo, built) if name is None]
                if empty:
                    schema = _schema_of_a_shard(cls, shards_dir, [i for i in range(npartitions) if i not in empty])
                    for i in empty:
                        _build_partition([], str(shards_dir), cls, provenances[i], batch_size,
                                         {**options, "schema": schema})
            for i in range(npartitions):
                if not _complete(shards_dir / _part_name(i), provenances[i]):
                    raise CorruptMapError(f"{shards_dir / _part_name(i)} is not the finished shard of partition {i} "
                                          f"(was it changed during the build?)")
            try:
                sharded = publish_shards(out, [f"{SHARDS_DIR}/{_part_name(i)}" for i in range(npartitions)],
                                         cls.layout.kind, metadata=checked_metadata,
                                         extra={"source": {"dask_token": token, "npartitions": npartitions}})
            except SchemaMismatchError as e:  # shards/part-<n> is partition n's shard
                raise SchemaMismatchError(f"the partitions of the Dask input built shards that differ: {e}; pass "
                                          f"dtype= (or schema=, for records) to from_dask so that every partition "
                                          f"builds the same") from None
            for stale in shards_dir.iterdir():  # shards of partitions a previous, larger input had
                if stale.name.startswith(_PART) and stale.name[len(_PART):].isdigit() \
                        and int(stale.name[len(_PART):]) >= npartitions:
                    shutil.rmtree(stale, ignore_errors=True)
        except BaseException:
            shards = out / SHARDS_DIR
            if not (shards.is_dir() and any(p.name.startswith(_PART) for p in shards.iterdir())):
                unmake_folders(created, out)  # nothing was built: leave no trace
            raise
    return sharded


def _is_dataframe(collection: Any) -> bool:
    """Whether ``collection`` is a ``dask.dataframe.DataFrame`` (without importing ``dask.dataframe``, and so
    pandas, for a bag)."""
    if not type(collection).__module__.startswith(("dask.dataframe", "dask_expr")):
        return False
    import dask.dataframe as dd

    if isinstance(collection, dd.Series):
        raise TypeError("from_dask() takes a dask.dataframe.DataFrame (one field per column), not a Series: use "
                        "series.to_frame(), or series.to_bag() for a bag of its values")
    return isinstance(collection, dd.DataFrame)


def _schema_of_a_shard(cls: type[MapBase], shards_dir: Path, partitions: list[int]) -> Any:
    """The schema of the first of these partitions' shards that holds rows (for the empty partitions)."""
    for i in partitions:
        shard = cls(shards_dir / _part_name(i), mode="r")
        try:
            if len(shard):
                return shard.schema  # type: ignore[attr-defined]
        finally:
            shard.close()
    raise ValueError("every partition of the input is empty, so there is no row to infer the schema from; pass "
                     "schema=")



def _refuse_foreign(out: Path) -> None:
    def refusal(foreign: list[str]) -> MapExistsError:
        return MapExistsError(f"{out} holds {foreign[0]!r}, which a Dask build did not write; build into an empty "
                              f"directory (or one an earlier from_dask built)")

    refuse_foreign(out, {LOCK_FILE, SHARDS_DIR, SHARDS_FILE, SHARDS_FILE + ".tmp"}, refusal)
    if (out / SHARDS_DIR).is_dir():
        refuse_foreign(out / SHARDS_DIR, lambda name: name.startswith((_PART, "." + _PART)),
                       lambda foreign: refusal([f"{SHARDS_DIR}/{name}" for name in foreign]))
