"""Benchmark entry point: serving (in-process, batch, HTTP, soak) -> ``tools.bench.serving`` (see its --help)."""

from tools.bench.serving import main

if __name__ == "__main__":
    raise SystemExit(main())
