"""``python -m mmap_ninja``: the ``mmap-ninja`` command line (see `mmap_ninja.cli`)."""

from mmap_ninja.cli import main

raise SystemExit(main())
