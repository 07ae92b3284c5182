#!/usr/bin/env python
"""Replay the live POS stream against the scoring API: ``tools.simulator`` (see its --help).

python scripts/simulate_traffic.py --url http://127.0.0.1:8000 --rate 20 --max-requests 500
python scripts/simulate_traffic.py --lambda-handler --rate 0 --max-requests 200
"""

import sys

from tools.simulator import main

if __name__ == "__main__":
    sys.exit(main())
