"""Bake the registry champion into serving/model/: ``tools.delivery.bake`` (see its --help)."""

from tools.delivery.bake import main

if __name__ == "__main__":
    raise SystemExit(main())
