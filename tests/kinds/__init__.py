"""Tests of mmap_ninja.kinds: each kind, its layout and view, the container protocol, casting, codecs."""
