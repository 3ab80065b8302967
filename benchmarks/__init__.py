"""Benchmarks of mmap_ninja on real data, beside mmap_ninja 0.9.0: ``python -m benchmarks --help``."""
