"""``mmap_ninja.parallel``, kept as an import path (earlier releases, the documentation, pickles): it re-exports
`mmap_ninja.kinds.parallel`, where the code lives (ARCHITECTURE.md, "Layers as folders")."""

from mmap_ninja.errors import SampleFetchError
from mmap_ninja.kinds.parallel import (
    FunctionIndexable,
    SizedFunctionIndexable,
    as_source,
    fetch,
    fetch_until_end,
    indexed_batches,
    make_indexable,
    pickled_for_workers,
)

__all__ = [
    "FunctionIndexable",
    "SampleFetchError",
    "SizedFunctionIndexable",
    "as_source",
    "fetch",
    "fetch_until_end",
    "indexed_batches",
    "make_indexable",
    "pickled_for_workers",
]
