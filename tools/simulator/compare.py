"""Simulator reports side by side per cashier cohort (e.g. the app served with
``PROFILE_STORE=frozen`` and with the live profile store, over the same live stream)::

    python -m tools.simulator.compare frozen=var/sim-frozen.json live=var/sim-live.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from tools.simulator.cohorts import format_cohort_table


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tools.simulator.compare NAME=REPORT.json ...``: the side-by-side table."""
    from components.contracts import storage

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or any("=" not in a for a in args):
        print("usage: python -m tools.simulator.compare NAME=REPORT.json ...", file=sys.stderr)
        return 2
    reports = {}
    for arg in args:
        name, uri = arg.split("=", 1)
        try:
            reports[name] = json.loads(storage.read_bytes(uri))
        except (OSError, ValueError, storage.StorageError) as exc:
            print(f"simulator compare: error: {uri}: {exc}", file=sys.stderr)
            return 2
    print(format_cohort_table(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
