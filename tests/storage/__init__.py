"""Tests of mmap_ninja.storage: the format, commits, crashes, locks, damage, 0.9.0 maps."""
