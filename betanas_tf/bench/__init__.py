"""Benchmarks: print measured figures (never timed unit tests)."""
