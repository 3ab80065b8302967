"""``python -m mmap_ninja``: the ``mmap-ninja`` command line (see `mmap_ninja.tools.cli`)."""

from mmap_ninja.tools.cli import main

raise SystemExit(main())
