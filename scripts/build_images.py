"""Build, tag and push the project's images: ``tools.delivery.images`` (see its --help)."""

from tools.delivery.images import main

if __name__ == "__main__":
    raise SystemExit(main())
