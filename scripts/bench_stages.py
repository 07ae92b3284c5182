"""Benchmark entry point: every stage CLI (wall time, peak RSS) -> ``tools.bench.stages`` (see its --help)."""

from tools.bench.stages import main

if __name__ == "__main__":
    raise SystemExit(main())
