"""``python -m tools.simulator``: replay the live stream against the scoring API."""

import sys

from tools.simulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
