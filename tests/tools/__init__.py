"""Tests of mmap_ninja.tools: convert and the command line."""
