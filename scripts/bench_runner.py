"""Benchmark entry point: the local pipeline runner -> ``tools.bench.runner`` (see its --help)."""

from tools.bench.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
