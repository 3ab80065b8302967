"""Tests of the project around the package: README, docs, examples, benchmarks, packaging, demo."""
