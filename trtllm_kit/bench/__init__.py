"""Benchmark sweeps."""
