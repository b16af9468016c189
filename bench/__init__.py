"""Benchmarks of the collector against references measured in the same run (docs/BENCHMARKS.md)."""
