"""Developer and delivery tools around the runtime: never shipped in an image.

``tools.simulator`` (traffic replay), ``tools.demo`` (in-process demo bundle for tests and
benchmarks), ``tools.delivery`` (bundle baking, deployment records), ``tools.bench``
(benchmarks) and ``tools.dashboard`` (dashboard snapshot). ``scripts/`` holds thin entry
points over them; each is also runnable as ``python -m tools.<module>``.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
"""The repository root: tools run stage CLIs and servers with it as working directory."""
