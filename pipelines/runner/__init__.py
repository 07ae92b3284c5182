"""Local runner for compiled KFP v2 pipeline YAML.

It executes the compiled IR (not the DSL): tasks run as subprocesses of the current Python
environment with the exact command line the KFP launcher would build (placeholders resolved
by ``kfp.local``'s own utilities), outputs land under a local or ``s3://`` pipeline root, and
a content-addressed cache, resume, retries, timeouts and a run record come on top.
"""

from pipelines.runner.engine import RunFailed, Runner, RunOptions
from pipelines.runner.record import RunRecord, TaskRecord

__all__ = ["RunFailed", "RunOptions", "RunRecord", "Runner", "TaskRecord"]
