"""Pipeline run id tagging: the CLI flag (KFP's job id) and its environment fallback."""

from __future__ import annotations

import os

from components.contracts import tracking


def test_pipeline_run_id_flag_sets_the_tag_and_ignores_unresolved_placeholders(monkeypatch):
    monkeypatch.setenv("PIPELINE_RUN_ID", "from-env")
    for ignored in ("", None, "{{$.pipeline_job_uuid}}"):
        tracking.use_pipeline_run_id(ignored)
        assert os.environ["PIPELINE_RUN_ID"] == "from-env"
    tracking.use_pipeline_run_id("kfp-job-uuid")
    assert os.environ["PIPELINE_RUN_ID"] == "kfp-job-uuid"
