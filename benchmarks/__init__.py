"""Benchmarks for tinygan: see benchmarks/RESULTS.md. Not tests: pytest does not collect them."""
