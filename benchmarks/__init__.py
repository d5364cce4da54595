"""Benchmarks: each prints a table and compares bulk against a peer measured in the same run."""
