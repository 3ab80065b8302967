"""How the pickles beside this script were made: by mmap_ninja at commit 4deba74 (order version 1), as

    git -C REPO archive 4deba74 src | tar -x -C /tmp/base
    PYTHONPATH=/tmp/base/src python tests/data/order_v1/make_pickles.py tests/data/order_v1

Each ``NAME.pkl`` holds one object whose shuffled order came from the version-1 `mmap_ninja.Order`;
tests/containers/test_order_pickles.py checks that unpickling each is refused with a clear error.
"""

import pickle
import sys
from pathlib import Path

from mmap_ninja import Order
from mmap_ninja.adapters.torch import BlockShuffleSampler, ResumableSampler
from mmap_ninja.blend import blend
from mmap_ninja.block_order import BlockLayout, BlockOrder

objects = {
    "order": Order(1000, seed=7, epoch=3),
    "resumable_sampler": ResumableSampler(1000, seed=7),
    "block_order": BlockOrder(BlockLayout([0, 4, 8, 12, 16]), window_blocks=1, seed=7),
    "block_sampler": BlockShuffleSampler(BlockLayout([0, 4, 8, 12, 16]), window_blocks=1, seed=7),
    "blend": blend([list(range(10)), list(range(100, 120))], [0.5, 0.5], seed=7),
}
for name, value in objects.items():
    (Path(sys.argv[1]) / f"{name}.pkl").write_bytes(pickle.dumps(value, protocol=4))
