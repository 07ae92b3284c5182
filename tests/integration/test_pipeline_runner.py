"""Local runner on tiny toy pipelines compiled with the real KFP compiler.

Toy container components (``python -c`` scripts) keep these fast; they exercise caching,
cache busting by content, --rerun-from / --only, failures, SIGKILL + resume, timeouts,
retries and an S3 pipeline root on the moto server. The real stages are covered by
``tests/e2e/test_pipeline_e2e.py``; the runner itself SIGKILLed or stopped by SIGTERM, in
``test_runner_interrupts.py``.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kfp import compiler, dsl

from components.contracts.settings import Settings
from pipelines.runner import RunFailed, Runner, RunOptions, record

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

TOY = r"""
import hashlib, os, pathlib, sys, time
a = dict(zip(sys.argv[1::2], sys.argv[2::2]))
h = hashlib.sha256(a["--tag"].encode())
for key in ("--in-a", "--in-b"):
    if key in a:
        p = pathlib.Path(a[key])
        for f in (sorted(p.rglob("*")) if p.is_dir() else [p]):
            if f.is_file():
                h.update(f.read_bytes())
if a.get("--fail-marker") and os.path.exists(a["--fail-marker"]):
    print("toy: failing on purpose because", a["--fail-marker"], "exists", file=sys.stderr)
    sys.exit(3)
out = pathlib.Path(a["--out"])
out.mkdir(parents=True, exist_ok=True)
(out / "partial.txt").write_text("partial")
if a.get("--pidfile"):
    pathlib.Path(a["--pidfile"]).write_text(str(os.getpid()))
hold, deadline = a.get("--hold"), time.time() + 60
while hold and os.path.exists(hold) and time.time() < deadline:
    time.sleep(0.05)
(out / "result.txt").write_text(h.hexdigest())
print("toy done", a["--tag"])
"""


@dsl.container_component
def first(src: dsl.Input[dsl.Dataset], out: dsl.Output[dsl.Dataset], tag: str):
    return dsl.ContainerSpec(image="toy", command=["python", "-c", TOY],
                             args=["--in-a", src.path, "--out", out.path, "--tag", tag])  # fmt: skip


@dsl.container_component
def second(src: dsl.Input[dsl.Dataset], out: dsl.Output[dsl.Dataset], tag: str, fail_marker: str):
    return dsl.ContainerSpec(image="toy", command=["python", "-c", TOY],
                             args=["--in-a", src.path, "--out", out.path, "--tag", tag,
                                   "--fail-marker", fail_marker])  # fmt: skip


@dsl.container_component
def side(
    src: dsl.Input[dsl.Dataset], out: dsl.Output[dsl.Dataset], tag: str, hold: str, pidfile: str
):
    return dsl.ContainerSpec(image="toy", command=["python", "-c", TOY],
                             args=["--in-a", src.path, "--out", out.path, "--tag", tag,
                                   "--hold", hold, "--pidfile", pidfile])  # fmt: skip


@dsl.container_component
def join(
    a: dsl.Input[dsl.Dataset], b: dsl.Input[dsl.Dataset], out: dsl.Output[dsl.Dataset], tag: str
):
    return dsl.ContainerSpec(image="toy", command=["python", "-c", TOY],
                             args=["--in-a", a.path, "--in-b", b.path, "--out", out.path, "--tag", tag])  # fmt: skip


@dsl.pipeline(name="toy")
def toy(
    file1: str, file2: str, tag: str = "t", fail_marker: str = "", hold: str = "", pidfile: str = ""
):
    """importer -> first -> second ---+
    importer-2 -> side -----------+-> join"""
    i1 = dsl.importer(artifact_uri=file1, artifact_class=dsl.Dataset)
    i2 = dsl.importer(artifact_uri=file2, artifact_class=dsl.Dataset)
    a = first(src=i1.output, tag=tag)
    b = second(src=a.outputs["out"], tag=tag, fail_marker=fail_marker)
    b.set_retry(num_retries=1, backoff_duration="0s")
    c = side(src=i2.output, tag=tag, hold=hold, pidfile=pidfile)
    join(a=b.outputs["out"], b=c.outputs["out"], tag=tag)


WORK = ("first", "second", "side", "join")


@pytest.fixture(scope="module")
def toy_yaml(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("toy") / "toy.yaml"
    compiler.Compiler().compile(toy, str(path))
    return path


@pytest.fixture
def toy_inputs(tmp_path) -> dict[str, str]:
    (tmp_path / "f1.txt").write_text("hello\n")
    (tmp_path / "f2.txt").write_text("world\n")
    return {"file1": str(tmp_path / "f1.txt"), "file2": str(tmp_path / "f2.txt")}


def run(yaml_path, params, **options) -> record.RunRecord:
    return Runner(Settings.from_env(), out=None).run(
        yaml_path, RunOptions(params=dict(params), **options)
    )


def statuses(rec) -> dict[str, str]:
    return {n: rec.tasks[n].cache for n in WORK}


def test_second_run_is_all_cache_hits_with_same_outputs(local_env, toy_yaml, toy_inputs):
    one = run(toy_yaml, toy_inputs)
    assert one.status == record.RUN_SUCCEEDED
    assert statuses(one) == dict.fromkeys(WORK, "miss")
    two = run(toy_yaml, toy_inputs)
    assert statuses(two) == dict.fromkeys(WORK, "hit")
    assert two.tasks["join"].outputs == one.tasks["join"].outputs
    assert two.run_id != one.run_id
    assert record.load(local_env, two.run_id) == two  # the record on disk is the final state


def test_changing_one_input_byte_busts_exactly_the_dependent_tasks(local_env, toy_yaml, toy_inputs):
    run(toy_yaml, toy_inputs)
    Path(toy_inputs["file2"]).write_text("worle\n")
    rec = run(toy_yaml, toy_inputs)
    assert statuses(rec) == {"first": "hit", "second": "hit", "side": "miss", "join": "miss"}
    # A parameter change busts every task that takes it.
    rec = run(toy_yaml, {**toy_inputs, "tag": "u"})
    assert statuses(rec) == dict.fromkeys(WORK, "miss")


def test_tampered_cached_output_is_not_trusted(local_env, toy_yaml, toy_inputs):
    one = run(toy_yaml, toy_inputs)
    Path(one.tasks["side"].outputs["out"]["uri"], "result.txt").write_text("tampered")
    rec = run(toy_yaml, toy_inputs)
    assert rec.tasks["side"].cache == "miss"
    assert rec.tasks["join"].cache == "hit"  # side's fresh output has the original content


def test_rerun_from_and_only(local_env, toy_yaml, toy_inputs):
    run(toy_yaml, toy_inputs)
    rec = run(toy_yaml, toy_inputs, rerun_from="second")
    assert statuses(rec) == {
        "first": "hit",
        "second": "disabled",
        "side": "hit",
        "join": "disabled",
    }
    rec = run(toy_yaml, toy_inputs, only="join")
    assert statuses(rec) == {"first": "hit", "second": "hit", "side": "hit", "join": "disabled"}
    rec = run(toy_yaml, toy_inputs, only="side")
    assert rec.tasks["side"].cache == "disabled"
    skipped = {n for n, t in rec.tasks.items() if t.status == record.SKIPPED}
    assert skipped == {"importer", "first", "second", "join"}


def test_only_without_cached_upstream_fails_clearly(local_env, toy_yaml, toy_inputs):
    with pytest.raises(RunFailed, match="no cached result"):
        run(toy_yaml, toy_inputs, only="join")


def test_failing_task_fails_the_run_and_siblings_stay_cached(
    local_env, toy_yaml, toy_inputs, tmp_path
):
    marker = tmp_path / "fail-now"
    marker.write_text("x")
    params = {**toy_inputs, "fail_marker": str(marker)}
    env = {**os.environ, "VAR_DIR": str(local_env)}
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines", "run", str(toy_yaml), *[f"--param={k}={v}" for k, v in params.items()]],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "task 'second' failed: exited with code 3" in proc.stderr
    assert "toy: failing on purpose" in proc.stderr  # the tail of its log
    rec = record.list_runs(local_env)[0]
    assert rec.status == record.RUN_FAILED
    assert rec.tasks["second"].attempts == 2  # set_retry(num_retries=1) from the YAML
    assert rec.tasks["side"].status == record.SUCCEEDED
    assert rec.tasks["join"].status == record.NOT_RUN
    marker.unlink()
    again = run(toy_yaml, params)
    assert statuses(again) == {"first": "hit", "second": "miss", "side": "hit", "join": "miss"}


def _cache_entry(root: Path, key: str) -> Path:
    return root / ".cache" / key[:2] / f"{key}.json"


def test_sigkilled_task_leaves_a_resumable_run_and_no_cache_entry(
    local_env, toy_yaml, toy_inputs, tmp_path
):
    hold, pidfile = tmp_path / "hold", tmp_path / "side.pid"
    hold.write_text("wait")
    params = {**toy_inputs, "hold": str(hold), "pidfile": str(pidfile)}
    env = {**os.environ, "VAR_DIR": str(local_env)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "run", str(toy_yaml), *[f"--param={k}={v}" for k, v in params.items()]],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (pidfile.exists() and pidfile.read_text()):
            assert time.monotonic() < deadline, "side task never started"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert "task 'side' failed: killed by SIGKILL" in err
    rec = record.list_runs(local_env)[0]
    side = rec.tasks["side"]
    assert side.status == record.FAILED
    out_dir = Path(local_env) / "pipeline-root" / "toy" / rec.run_id / "side" / "out"
    assert (out_dir / "partial.txt").exists() and not (out_dir / "result.txt").exists()
    assert not _cache_entry(Path(local_env) / "pipeline-root", side.cache_key).exists()
    # Tasks already running finish; nothing new starts after a failure.
    assert rec.tasks["first"].status == record.SUCCEEDED
    assert rec.tasks["join"].status == record.NOT_RUN
    done_before = {n: t.finished_at for n, t in rec.tasks.items() if t.status == record.SUCCEEDED}

    hold.unlink()
    pidfile.unlink()
    resumed = Runner(Settings.from_env(), out=None).run(None, RunOptions(resume=rec.run_id))
    assert resumed.run_id == rec.run_id and resumed.resumed == 1
    assert resumed.status == record.RUN_SUCCEEDED
    assert {n: resumed.tasks[n].finished_at for n in done_before} == done_before  # not redone
    assert all(t.status == record.SUCCEEDED for t in resumed.tasks.values())
    assert (
        resumed.tasks["side"].status == record.SUCCEEDED and resumed.tasks["side"].cache == "miss"
    )
    assert (out_dir / "result.txt").exists()
    assert _cache_entry(Path(local_env) / "pipeline-root", resumed.tasks["side"].cache_key).exists()
    with pytest.raises(Exception, match="already succeeded"):
        Runner(Settings.from_env(), out=None).run(None, RunOptions(resume=rec.run_id))


def test_task_timeout_kills_the_task(local_env, toy_yaml, toy_inputs, tmp_path):
    hold = tmp_path / "hold"
    hold.write_text("wait")
    with pytest.raises(RunFailed, match=r"task 'side' failed: timed out after 0.5s"):
        run(toy_yaml, {**toy_inputs, "hold": str(hold)}, task_timeout=0.5)


def test_s3_pipeline_root_uploads_outputs_and_caches(local_env, s3_bucket, toy_yaml, toy_inputs):
    import boto3

    root = f"s3://{s3_bucket}/pipeline-root"
    one = run(toy_yaml, toy_inputs, pipeline_root=root)
    assert statuses(one) == dict.fromkeys(WORK, "miss")
    join_uri = one.tasks["join"].outputs["out"]["uri"]
    assert join_uri == f"{root}/toy/{one.run_id}/join/out"
    s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert f"pipeline-root/toy/{one.run_id}/join/out/result.txt" in keys
    assert any(k.startswith("pipeline-root/.cache/") for k in keys)
    # join read both inputs downloaded from S3: its digest matches the local-root run
    two = run(toy_yaml, toy_inputs, pipeline_root=root)
    assert statuses(two) == dict.fromkeys(WORK, "hit")
    local = run(toy_yaml, toy_inputs)
    assert (
        local.tasks["join"].outputs["out"]["digest"] == one.tasks["join"].outputs["out"]["digest"]
    )
    body = s3.get_object(
        Bucket=s3_bucket, Key=f"pipeline-root/toy/{one.run_id}/join/out/result.txt"
    )["Body"].read()
    assert len(body) == 64


def test_cli_runs_and_show(local_env, toy_yaml, toy_inputs):
    env = {**os.environ, "VAR_DIR": str(local_env)}
    args = [f"--param={k}={v}" for k, v in toy_inputs.items()]
    proc = subprocess.run([sys.executable, "-m", "pipelines", "run", str(toy_yaml), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "cache hits: 0/6" in proc.stdout
    assert "join" in proc.stderr and "finished" in proc.stderr  # live progress
    run_id = record.list_runs(local_env)[0].run_id
    listing = subprocess.run([sys.executable, "-m", "pipelines", "runs"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run_id in listing.stdout
    shown = subprocess.run([sys.executable, "-m", "pipelines", "show", run_id, "--json"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert json.loads(shown.stdout)["tasks"]["join"]["status"] == "succeeded"
    bad = subprocess.run([sys.executable, "-m", "pipelines", "run", str(toy_yaml), "--param", "nope=1"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "unknown pipeline parameter(s): nope" in bad.stderr


# ---------------------------------------------------------------- side effects are never cached

PUBLISH = r"""
import pathlib, sys
out, ledger, src = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
with ledger.open("a") as f:  # the side effect: one line per execution
    f.write(src.read_text() + "\n")
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text("published " + src.read_text())
"""


@dsl.container_component
def make(out: dsl.Output[dsl.Dataset], tag: str):
    return dsl.ContainerSpec(image="toy", command=["python", "-c", "import sys, pathlib; p = pathlib.Path(sys.argv[1]); p.parent.mkdir(parents=True, exist_ok=True); p.write_text(sys.argv[2])"],
                             args=[out.path, tag])  # fmt: skip


@dsl.container_component
def publish(src: dsl.Input[dsl.Dataset], out: dsl.Output[dsl.Artifact], ledger: str):
    return dsl.ContainerSpec(image="toy", command=["python", "-c", PUBLISH],
                             args=[out.path, ledger, src.path])  # fmt: skip


@dsl.pipeline(name="side-effects")
def side_effects(ledger: str, tag: str = "v1"):
    made = make(tag=tag)
    publish(src=made.outputs["out"], ledger=ledger).set_caching_options(False)


def _cache_entries(root: Path) -> list[Path]:
    return sorted((root / ".cache").rglob("*.json"))


def test_a_task_with_caching_off_always_runs_and_is_never_stored(local_env, tmp_path):
    path = tmp_path / "side_effects.yaml"
    compiler.Compiler().compile(side_effects, str(path))
    ledger = tmp_path / "ledger.txt"
    params = {"ledger": str(ledger)}
    root = Path(local_env) / "pipeline-root"

    one = run(path, params)
    assert (one.tasks["make"].cache, one.tasks["publish"].cache) == ("miss", "off")
    assert one.tasks["publish"].cache_key == ""
    two = run(path, params)
    assert (two.tasks["make"].cache, two.tasks["publish"].cache) == ("hit", "off")
    assert ledger.read_text().splitlines() == ["v1", "v1"]  # published again
    assert len(_cache_entries(root)) == 1  # make's entry only
    # whatever the flags
    for options in ({"no_cache": True}, {"rerun_from": "make"}, {"rerun_from": "publish"}):
        rec = run(path, params, **options)
        assert rec.tasks["publish"].cache == "off" and rec.tasks["publish"].attempts == 1
    assert len(ledger.read_text().splitlines()) == 5
    assert len(_cache_entries(root)) == 1
    only = run(path, params, only="make")
    assert only.tasks["publish"].status == record.SKIPPED
    assert len(ledger.read_text().splitlines()) == 5
    # the summary says what happened in this run
    from pipelines.runner.summary import run_summary

    assert "caching off in the pipeline (side effects; ran, never cached): publish" in (
        run_summary(two, Settings.from_env())
    )


# ---------------------------------------------------------------- settings are part of the key


def test_settings_that_change_a_result_are_part_of_the_key(
    local_env, toy_yaml, toy_inputs, monkeypatch
):
    """The toy tasks are ``python -c`` code the runner cannot inspect, so every one of them
    counts as MLflow-writing (which stage really is: tests/unit/test_runner_cache.py)."""
    run(toy_yaml, toy_inputs)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1/elsewhere")
    assert statuses(run(toy_yaml, toy_inputs)) == dict.fromkeys(WORK, "miss")
    assert statuses(run(toy_yaml, toy_inputs)) == dict.fromkeys(WORK, "hit")
    for name, value in [("MODEL_NAME", "other-model"), ("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:2"),
                        ("MLFLOW_EXPERIMENT_NAME", "other")]:  # fmt: skip
        monkeypatch.setenv(name, value)
        assert statuses(run(toy_yaml, toy_inputs)) == dict.fromkeys(WORK, "miss"), name
    # credentials are not: the same objects under another identity
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone-else")
    assert statuses(run(toy_yaml, toy_inputs)) == dict.fromkeys(WORK, "hit")


# ---------------------------------------------------------------- S3 hits verify content


def test_s3_cache_hit_verifies_object_content(local_env, s3_bucket, toy_yaml, toy_inputs):
    import boto3

    root = f"s3://{s3_bucket}/pipeline-root"
    s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])
    one = run(toy_yaml, toy_inputs, pipeline_root=root)
    entry_key = (
        f"pipeline-root/.cache/{one.tasks['side'].cache_key[:2]}/{one.tasks['side'].cache_key}.json"
    )
    entry = json.loads(s3.get_object(Bucket=s3_bucket, Key=entry_key)["Body"].read())
    assert set(entry["outputs"]["out"]["etags"]) == {"partial.txt", "result.txt"}
    assert statuses(run(toy_yaml, toy_inputs, pipeline_root=root)) == dict.fromkeys(WORK, "hit")

    # Overwrite one object with content of the same length: it exists, but it is not ours.
    side_key = f"pipeline-root/toy/{one.run_id}/side/out/result.txt"
    good = s3.get_object(Bucket=s3_bucket, Key=side_key)["Body"].read()
    s3.put_object(Bucket=s3_bucket, Key=side_key, Body=b"0" * len(good))
    rec = run(toy_yaml, toy_inputs, pipeline_root=root)
    assert statuses(rec) == {"first": "hit", "second": "hit", "side": "miss", "join": "hit"}
    assert rec.tasks["side"].outputs["out"]["digest"] == one.tasks["side"].outputs["out"]["digest"]

    # An object added inside a cached output folder invalidates it too.
    first_prefix = one.tasks["first"].outputs["out"]["uri"].removeprefix(f"s3://{s3_bucket}/")
    s3.put_object(Bucket=s3_bucket, Key=f"{first_prefix}/extra.txt", Body=b"x")
    rec = run(toy_yaml, toy_inputs, pipeline_root=root)
    assert statuses(rec) == {"first": "miss", "second": "hit", "side": "hit", "join": "hit"}


def test_resume_of_a_finished_runner_reports_what_it_found(
    local_env, toy_yaml, toy_inputs, tmp_path
):
    marker = tmp_path / "fail-now"
    marker.write_text("x")
    params = {**toy_inputs, "fail_marker": str(marker)}
    with pytest.raises(RunFailed):
        run(toy_yaml, params)
    marker.unlink()
    run_id = record.list_runs(local_env)[0].run_id
    env = {**os.environ, "VAR_DIR": str(local_env)}
    proc = subprocess.run([sys.executable, "-m", "pipelines", "run", "--resume", run_id],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (
        f"resume {run_id}: previous runner finished the run (pid {os.getpid()}) (status failed); "
        "no task process left running; to redo: second, join"
    ) in proc.stderr
