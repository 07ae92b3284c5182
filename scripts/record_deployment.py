"""Tag the deployed MLflow model version: ``tools.delivery.record`` (see its --help)."""

from tools.delivery.record import main

if __name__ == "__main__":
    raise SystemExit(main())
