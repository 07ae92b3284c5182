"""The local runner interrupted: a SIGKILLed runner's task group is killed before a resume
runs it again, and SIGTERM stops the runner and its tasks without retrying.

A toy pipeline compiled with the real KFP compiler holds one task (a ``python -c`` script
with a child that ignores SIGTERM); the runner is a real ``python -m pipelines run``
process and the signals are real. The caching and resume-after-failure cases on the other
toy pipeline are in ``test_pipeline_runner.py``.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kfp import compiler, dsl

from pipelines.runner import record

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------- resume never runs beside a live task

HOLDER = r"""
import os, pathlib, subprocess, sys, time
a = dict(zip(sys.argv[1::2], sys.argv[2::2]))
try:  # the first attempt claims the hold file and hangs; a later one goes straight through
    pathlib.Path(a["--hold"]).unlink()
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"])
    pathlib.Path(a["--pids"]).write_text(f"{os.getpid()} {child.pid}")
    time.sleep(300)
except FileNotFoundError:
    pass
out = pathlib.Path(a["--out"])
out.mkdir(parents=True, exist_ok=True)
(out / "done.txt").write_text("done")
"""


@dsl.container_component
def holder(out: dsl.Output[dsl.Dataset], hold: str, pids: str):
    return dsl.ContainerSpec(image="toy", command=["python", "-c", HOLDER],
                             args=["--hold", hold, "--pids", pids, "--out", out.path])  # fmt: skip


@dsl.container_component
def after(src: dsl.Input[dsl.Dataset], out: dsl.Output[dsl.Dataset]):
    return dsl.ContainerSpec(image="toy", command=["python", "-c", "import shutil, sys; shutil.copytree(sys.argv[1], sys.argv[2])"],
                             args=[src.path, out.path])  # fmt: skip


@dsl.pipeline(name="holding")
def holding(hold: str, pids: str):
    held = holder(hold=hold, pids=pids)
    held.set_retry(num_retries=2, backoff_duration="0s")  # an interrupt must not retry
    after(src=held.outputs["out"])


def _live(pid: int) -> bool:
    """Alive and not a zombie (this machine's init may not reap orphans at once)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _processes_of_run(run_id: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"PIPELINE_RUN_ID={run_id}".encode() in env and _live(int(proc.name)):
            found.append(int(proc.name))
    return found


CLI = [sys.executable, "-m", "pipelines", "run"]


def _start_holding(local_env: Path, tmp_path: Path, stderr) -> tuple[subprocess.Popen, Path, dict]:
    """A real runner process on the ``holding`` pipeline; returns it, the file its holder
    task writes its pids to, and its environment."""
    path = tmp_path / "holding.yaml"
    compiler.Compiler().compile(holding, str(path))
    hold, pids_file = tmp_path / "hold", tmp_path / "pids"
    hold.write_text("claim me")
    env = {**os.environ, "VAR_DIR": str(local_env)}
    runner = subprocess.Popen(
        [*CLI, str(path), f"--param=hold={hold}", f"--param=pids={pids_file}"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr, text=True,
    )  # fmt: skip
    return runner, pids_file, env


def _task_pids(runner: subprocess.Popen, pids_file: Path) -> list[int]:
    """The holder task's pid and its child's, once the task hangs."""
    deadline = time.monotonic() + 60
    while not (pids_file.exists() and pids_file.read_text()):
        assert time.monotonic() < deadline, "holder task never started"
        assert runner.poll() is None
        time.sleep(0.05)
    return [int(p) for p in pids_file.read_text().split()]


def _kill_all(runner: subprocess.Popen, task_pids: list[int]) -> None:
    if runner.poll() is None:
        runner.kill()
    for pid in task_pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("recorded", [True, False], ids=["recorded-group", "unrecorded-group"])
def test_resume_after_sigkilled_runner_kills_its_task_group_first(local_env, tmp_path, recorded):
    """``unrecorded-group``: the runner died before it could save the task's group (the
    record is edited to look so); the group is still found by the run id in its env."""
    runner, pids_file, env = _start_holding(local_env, tmp_path, subprocess.DEVNULL)
    task_pids: list[int] = []
    try:
        task_pids = _task_pids(runner, pids_file)
        run_id = record.list_runs(local_env)[0].run_id

        # 1. The runner is alive: resume refuses, in one line naming its pid, and changes nothing.
        busy = subprocess.run([*CLI, "--resume", run_id], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert busy.returncode == 2
        assert busy.stderr.strip().splitlines() == [
            f"error: run {run_id} is still being run by pid {runner.pid} "
            f"(process group {os.getpgid(runner.pid)}); stop it or wait for it, then resume"
        ]
        rec = record.load(local_env, run_id)
        assert rec.runner["pid"] == runner.pid and rec.resumed == 0
        assert rec.tasks["holder"].process["pid"] == task_pids[0]

        # 2. SIGKILL the runner: its task (and the task's child) keep running.
        runner.kill()
        runner.wait(timeout=30)
        assert all(_live(p) for p in task_pids)
        if not recorded:
            rec.tasks["holder"].process = {}
            record.save(rec, local_env)

        # 3. Resume kills the old task group (the child ignores SIGTERM: SIGKILL follows),
        #    says what it found, and the run completes.
        resumed = subprocess.run([*CLI, "--resume", run_id], cwd=REPO, env=env,
                                 capture_output=True, text=True, timeout=180)  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr
        group = "holder" if recorded else f"unrecorded group {task_pids[0]}"
        assert (
            f"resume {run_id}: previous runner dead (pid {runner.pid}) (status running); "
            f"killed leftover task process groups: {group} (pids "
        ) in resumed.stderr
        assert "; to redo: holder, after" in resumed.stderr, resumed.stderr
        assert not any(_live(p) for p in task_pids)
        assert _processes_of_run(run_id) == []
        rec = record.load(local_env, run_id)
        assert rec.status == record.RUN_SUCCEEDED and rec.resumed == 1
        assert sorted(rec.resumes[0]["killed"][group]) == sorted(task_pids)
        assert rec.resumes[0]["redo"] == ["holder", "after"]
        assert all(not t.process for t in rec.tasks.values())
        assert rec.runner["pid"] != runner.pid
    finally:
        _kill_all(runner, task_pids)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_sigterm_stops_the_runner_and_its_tasks_without_retrying(local_env, tmp_path):
    runner, pids_file, _ = _start_holding(local_env, tmp_path, subprocess.PIPE)
    task_pids: list[int] = []
    try:
        task_pids = _task_pids(runner, pids_file)
        runner.terminate()
        _, err = runner.communicate(timeout=60)
        assert runner.returncode == 130, err
        assert "resume with: python -m pipelines run --resume" in err
        assert not any(_live(p) for p in task_pids)
        rec = record.list_runs(local_env)[0]
        assert rec.status == record.RUN_INTERRUPTED
        holder_rec = rec.tasks["holder"]
        assert (holder_rec.status, holder_rec.attempts, holder_rec.process) == (
            record.FAILED,
            1,
            {},
        )
        assert _processes_of_run(rec.run_id) == []
    finally:
        _kill_all(runner, task_pids)
