"""Benchmarks of the invoice delivery pipeline: fault tolerance (bench_faults) and scale (bench_scale)."""
