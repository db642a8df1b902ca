"""Benchmarks that print figures (medians over repeated runs); never part of the test suite."""
