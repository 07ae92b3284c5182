"""Render the Grafana dashboard's panels to a PNG: ``tools.dashboard`` (see its --help)."""

from tools.dashboard import main

if __name__ == "__main__":
    raise SystemExit(main())
