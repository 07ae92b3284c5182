"""Benchmark entry point: the two training stages -> ``tools.bench.train`` (see its --help)."""

from tools.bench.train import main

if __name__ == "__main__":
    raise SystemExit(main())
