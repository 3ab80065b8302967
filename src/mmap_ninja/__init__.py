"""mmap_ninja: datasets in memory-mapped files, read in microseconds, safe against crashes.

- `StringsMmap`: a list of ``str``; `RaggedMmap`: a list of arrays of any shapes;
  `NumpyMmap` (with the ``np_*`` functions): same-shape samples as one growing ndarray.
- `open_existing(path)` opens any of them. The on-disk format is described in FORMAT.md.
- `Order`: the shuffled order of an epoch, computed per position in O(1) time and memory; `blend`: a map
  mixing several maps by weight; `BlockOrder`: a shuffle of blocks of the stored data, for maps read by blocks, and
  `shuffle_quality` to measure an order's locality and mixing.
- `convert`, `merge`, `verify` and `upload` are functions (`convert` lives in the module ``mmap_ninja.conversion``).
"""

from mmap_ninja._version import __version__
from mmap_ninja.blend import BlendedMap, blend
from mmap_ninja.block_order import BlockLayout, BlockOrder, block_layout, shuffle_quality
from mmap_ninja.conversion import convert
from mmap_ninja.errors import (
    CacheOverLimitWarning,
    ChecksumMismatchError,
    ClosedMapError,
    ConversionError,
    CorruptMapError,
    FormatVersionError,
    KindMismatchError,
    LegacyMapWarning,
    LockingUnavailableError,
    MapError,
    MapExistsError,
    MapInUseError,
    MapLockedError,
    MapMovedError,
    MissingKeyError,
    MissingSpecError,
    NoSuchFieldError,
    NotAMapError,
    ReadOnlyMapError,
    RemoteStorageError,
    SampleFetchError,
    SchemaMismatchError,
    ShardedFolderError,
    UnfinishedMapError,
    UnknownFeatureError,
)
from mmap_ninja.generic import Wrapped, open_existing, upload
from mmap_ninja.images import ImagesMmap
from mmap_ninja.numpy import NumpyMmap
from mmap_ninja.numpy import append as np_append
from mmap_ninja.numpy import extend as np_extend
from mmap_ninja.numpy import extend_dir as np_extend_dir
from mmap_ninja.numpy import from_generator as np_from_generator
from mmap_ninja.numpy import from_ndarray as np_from_ndarray
from mmap_ninja.numpy import open_existing as np_open_existing
from mmap_ninja.order import Order
from mmap_ninja.ragged import RaggedMmap, RaggedMmmap
from mmap_ninja.records import Field, RecordsMmap
from mmap_ninja.sharded import ShardedMap, merge
from mmap_ninja.string import StringsMmap, StringsMmmap
from mmap_ninja.verify import Report, verify

__all__ = [
    "BlendedMap",
    "BlockLayout",
    "BlockOrder",
    "CacheOverLimitWarning",
    "ChecksumMismatchError",
    "ClosedMapError",
    "ConversionError",
    "CorruptMapError",
    "Field",
    "FormatVersionError",
    "ImagesMmap",
    "KindMismatchError",
    "LegacyMapWarning",
    "LockingUnavailableError",
    "MapError",
    "MapExistsError",
    "MapInUseError",
    "MapLockedError",
    "MapMovedError",
    "MissingKeyError",
    "MissingSpecError",
    "NoSuchFieldError",
    "NotAMapError",
    "NumpyMmap",
    "Order",
    "RaggedMmap",
    "RaggedMmmap",
    "ReadOnlyMapError",
    "RecordsMmap",
    "RemoteStorageError",
    "Report",
    "SampleFetchError",
    "SchemaMismatchError",
    "ShardedFolderError",
    "ShardedMap",
    "StringsMmap",
    "StringsMmmap",
    "UnfinishedMapError",
    "UnknownFeatureError",
    "Wrapped",
    "__version__",
    "blend",
    "block_layout",
    "convert",
    "merge",
    "np_append",
    "np_extend",
    "np_extend_dir",
    "np_from_generator",
    "np_from_ndarray",
    "np_open_existing",
    "open_existing",
    "shuffle_quality",
    "upload",
    "verify",
]


def _join_test_mode() -> None:
    """A process started by a test in the kit's Windows-semantics mode (`mmap_ninja.testing.windows_semantics`)
    receives it through an environment variable and joins it here, when it imports mmap_ninja."""
    import os

    if os.environ.get("MMAP_NINJA_WINDOWS_SEMANTICS"):
        from mmap_ninja.testing.windows_semantics import activate_from_environment

        activate_from_environment()


_join_test_mode()
