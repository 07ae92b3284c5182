"""KFP pipeline of the cashier-integrity system: components wiring, compiler, local runner.

``python -m pipelines --help`` lists the commands (compile, compile-check, run, runs, show,
submit). Nothing runs at import time.
"""

PIPELINE_YAML = "pipelines/cashier_integrity.yaml"
