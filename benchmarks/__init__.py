"""Benchmarks: commands that print figures and write JSON (never timed unit tests)."""
