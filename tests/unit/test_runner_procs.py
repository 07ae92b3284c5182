"""Local runner: process identity survives pid reuse; zombies and strangers are not 'alive'."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.runner import procs

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


def test_identity_of_this_process_is_alive_and_a_changed_start_time_is_not():
    me = procs.identity()
    assert me["pid"] == os.getpid() and me["pgid"] == os.getpgid(0) and me["start"]
    assert procs.alive(me)
    assert not procs.alive({**me, "start": str(int(me["start"]) + 1)})  # the pid was reused
    assert not procs.alive({"pid": 0})


def test_a_zombie_is_dead_and_a_group_of_strangers_is_never_stopped():
    child = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    ident = procs.identity(child.pid)
    while procs.alive(ident):  # exits at once; stays a zombie until waited for
        pass
    assert procs.group_members(child.pid) == []
    child.wait()
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        start_new_session=True,
        env={**os.environ, "PIPELINE_RUN_ID": "someone-else"},
    )
    try:
        assert procs.group_members(sleeper.pid) == [sleeper.pid]
        assert procs.stop_group(sleeper.pid, "my-run", grace_s=0.1) == []
        assert sleeper.poll() is None
        assert sleeper.pid in procs.run_groups("someone-else")
        assert procs.stop_group(sleeper.pid, "someone-else", grace_s=5) == [sleeper.pid]
        assert sleeper.wait(timeout=30) < 0
    finally:
        sleeper.kill()
        sleeper.wait()
