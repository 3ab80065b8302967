"""Tests of mmap_ninja.testing: the conformance kit on every kind and container, Windows semantics."""
