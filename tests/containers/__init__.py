"""Tests of mmap_ninja.containers: sharded maps and merges, blends, training orders, verify."""
