"""Run identity from the environment: Kubeflow's MLflow plugin run, the pipeline run tag
(local runner's PIPELINE_RUN_ID, the Argo workflow from KFP_POD_NAME, 'standalone')."""

from __future__ import annotations

import os

import pytest

from components.contracts import tracking


def test_pipeline_run_id_flag_wins_and_unresolved_placeholders_are_ignored():
    env = {"PIPELINE_RUN_ID": "from-env"}
    for ignored in ("", None, "{{$.pipeline_job_uuid}}"):
        assert tracking.pipeline_run_id(env, ignored) == "from-env"
        assert tracking.run_tags("split", env, ignored)["pipeline_run_id"] == "from-env"
    assert tracking.pipeline_run_id(env, "kfp-job-uuid") == "kfp-job-uuid"
    assert tracking.run_tags("split", env, "kfp-job-uuid")["pipeline_run_id"] == "kfp-job-uuid"
    assert env == {"PIPELINE_RUN_ID": "from-env"}  # read, never written


@pytest.mark.parametrize(
    ("pod", "workflow"),
    [
        # Argo POD_NAMES=v2: <workflow>-<template>-<fnv32 hash>; KFP's executor templates
        ("cashier-integrity-x7k2p-system-container-impl-2911584743", "cashier-integrity-x7k2p"),
        ("cashier-integrity-x7k2p-retry-system-container-impl-17", "cashier-integrity-x7k2p"),
        ("p-abcde-metadata-1-2-retry-system-container-impl-4051", "p-abcde"),
        # POD_NAMES=v1: <workflow>-<hash>
        ("cashier-integrity-x7k2p-1234567890", "cashier-integrity-x7k2p"),
        # not an Argo pod name
        ("my-laptop", None),
        ("", None),
        ("-123", None),
    ],
)
def test_workflow_name_from_the_kfp_pod_name(pod, workflow):
    assert tracking.workflow_name(pod) == workflow


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PIPELINE_RUN_ID": "20260101-local", "KFP_POD_NAME": "wf-abcde-system-container-impl-1"},
         "20260101-local"),
        ({"KFP_POD_NAME": "wf-abcde-retry-system-container-impl-99"}, "wf-abcde"),
        ({"PIPELINE_RUN_ID": "{{$.pipeline_job_uuid}}", "KFP_POD_NAME": "wf-abcde-1"}, "wf-abcde"),
        ({"PIPELINE_RUN_ID": "{{$.pipeline_job_uuid}}"}, "standalone"),
        ({"KFP_POD_NAME": "not-argo"}, "standalone"),
        ({}, "standalone"),
    ],
)  # fmt: skip
def test_pipeline_run_id_order_and_never_a_placeholder(env, expected):
    assert tracking.pipeline_run_id(env) == expected


def test_run_tags_and_task_run_from_the_mlflow_plugin():
    env = {
        "KFP_POD_NAME": "wf-abcde-system-container-impl-1",
        "MLFLOW_RUN_ID": "0123abcd",
        "MLFLOW_EXPERIMENT_ID": "7",
    }
    assert tracking.run_tags("split", env) == {
        "stage": "split",
        "pipeline_run_id": "wf-abcde",
        "kfp_pod_name": "wf-abcde-system-container-impl-1",
    }
    assert tracking.task_run_id(env) == "0123abcd"
    assert tracking.task_run_id({}) is None
    assert tracking.task_run_id({"MLFLOW_RUN_ID": "{{$.pipeline_job_uuid}}"}) is None
    assert tracking.run_tags("split", {}) == {"stage": "split", "pipeline_run_id": "standalone"}


def test_process_gone_uses_pid_and_start_time():
    """A reaped child is gone, a live pid with another start time is gone (pid reused),
    this process and other hosts' processes never are."""
    import socket
    import subprocess
    import sys

    from components.contracts.process import start_time

    host = socket.gethostname()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert tracking._process_gone(f"{host}:{child.pid}:")
    me = os.getpid()
    assert not tracking._process_gone(tracking.process_id())
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as live:
        try:
            ticks = start_time(live.pid)
            assert not tracking._process_gone(f"{host}:{live.pid}:{ticks}")
            assert tracking._process_gone(f"{host}:{live.pid}:{int(ticks or 0) + 1}")
        finally:
            live.kill()
    assert not tracking._process_gone(f"another-host:{me + 1}:1")
