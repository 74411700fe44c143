"""Benchmarks: `make bench` (python -m benchmarks) runs them and prints their tables."""
