"""Benchmarks: stage CLIs, training, the local runner and serving; each writes .bench/<name>.json."""
