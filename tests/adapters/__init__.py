"""Tests of mmap_ninja.adapters: PyTorch, Arrow, Dask, maps at URLs and their cache."""
