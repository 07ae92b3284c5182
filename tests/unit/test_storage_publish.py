"""The one publishing primitive (``storage.publish``) on local paths: stage -> verify ->
switch -> collect, several outputs in one commit, consumers refusing unpublished inputs,
and leftover staging cleaned by the next publish (issue 11, items 3-5).

S3 and SIGKILL variants run the real stage CLIs: tests/integration/test_faults_publish.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from components.contracts import storage
from components.contracts.storage import marker as marker_format
from components.contracts.storage import publication

MARKER = storage.SUCCESS_MARKER


def _table(n: int, tag: str = "a") -> pa.Table:
    return pa.table({"k": [f"{tag}{i}" for i in range(n)], "day": ["d1", "d2"] * (n // 2)})


def _versions(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("v-"))


def test_marker_lists_every_file_with_sha256_and_size(tmp_path):
    out = tmp_path / "lake"
    storage.write_dataset(_table(10), str(out), partition_cols=["day"])
    marker = json.loads((out / MARKER).read_text())
    assert marker["format"] == storage.MARKER_FORMAT and marker["kind"] == "folder"
    assert marker["meta"]["rows"] == 10
    version = out / marker["version"]
    assert set(marker["files"]) == {
        p.relative_to(version).as_posix() for p in version.rglob("*") if p.is_file()
    }
    for rel, entry in marker["files"].items():
        assert entry == storage.file_digest(str(version / rel))
    assert storage.list_partitions(str(out), "day") == ["d1", "d2"]


def test_old_version_stays_readable_until_the_switch(tmp_path):
    out = str(tmp_path / "t")
    storage.publish_table(_table(4, "old"), out)
    first = _versions(Path(out))
    with storage.publish("s") as pub:
        storage.write_table(_table(6, "new"), pub.file(out))
        assert storage.read_table(out).num_rows == 4  # staged, not visible
    assert storage.read_table(out).num_rows == 6
    assert _versions(Path(out)) != first and len(_versions(Path(out))) == 1  # old collected


def test_failure_before_the_switch_changes_nothing(tmp_path):
    out = str(tmp_path / "t")
    storage.publish_table(_table(4, "old"), out)
    before = sorted(os.listdir(out))
    with pytest.raises(RuntimeError), storage.publish("s") as pub:
        storage.write_table(_table(6, "new"), pub.file(out))
        raise RuntimeError("stage failed")
    assert storage.read_table(out).num_rows == 4
    assert sorted(os.listdir(out)) == before


def test_outputs_of_one_stage_commit_together(tmp_path, monkeypatch):
    """A failure between two marker switches leaves the OLD set visible for every output."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    with storage.publish("s") as pub:
        storage.write_json({"v": 1}, pub.file(a))
        storage.write_json({"v": 1}, pub.file(b))

    def die_after_first_switch(point: str) -> None:
        if point == "switch-1":
            raise KeyboardInterrupt("killed between switches")

    monkeypatch.setattr(publication, "fault", die_after_first_switch)
    with pytest.raises(KeyboardInterrupt), storage.publish("s") as pub:
        storage.write_json({"v": 2}, pub.file(a))
        storage.write_json({"v": 2}, pub.file(b))
    assert (
        json.loads((Path(a) / MARKER).read_text())["commit"]
        != json.loads((Path(b) / MARKER).read_text())["commit"]
    )  # the first marker did switch ...
    assert storage.read_json(a) == {"v": 1} and storage.read_json(b) == {"v": 1}  # ... unseen
    monkeypatch.undo()
    with storage.publish("s") as pub:
        storage.write_json({"v": 3}, pub.file(a))
        storage.write_json({"v": 3}, pub.file(b))
    assert storage.read_json(a) == {"v": 3} and storage.read_json(b) == {"v": 3}
    assert len(_versions(Path(a))) == len(_versions(Path(b))) == 1


def test_a_sibling_that_never_committed_makes_the_output_unreadable(tmp_path, monkeypatch):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    monkeypatch.setattr(
        publication,
        "fault",
        lambda p: (_ for _ in ()).throw(KeyboardInterrupt) if p == "switch-1" else None,
    )
    with pytest.raises(KeyboardInterrupt), storage.publish("s") as pub:
        storage.write_json({"v": 1}, pub.file(a))
        storage.write_json({"v": 1}, pub.file(b))
    with pytest.raises(storage.StorageError, match=r"is incomplete .* re-run the stage"):
        storage.read_json(a)
    with pytest.raises(storage.StorageError, match="no _SUCCESS marker"):
        storage.read_json(b)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"x"), "a plain file, not a published output"),
        (lambda p: (p.mkdir(), (p / "xgb.ubj").write_bytes(b"x")), "no _SUCCESS marker"),
        (
            lambda p: (p.mkdir(), (p / MARKER).write_text('{"rows": 3, "chunks": 1}')),
            "not a cashier-integrity-output marker",
        ),
        (lambda p: None, "no such file or folder"),
    ],
)
def test_consumers_refuse_unpublished_inputs(tmp_path, make, message):
    path = tmp_path / "input"
    make(path)
    for read in (
        lambda: storage.read_table(str(path)),
        lambda: storage.read_jsonl(str(path)),
        lambda: storage.open_output(str(path)),
        lambda: list(storage.iter_dataset_batches(str(path))),
    ):
        with pytest.raises(storage.StorageError, match=message) as info:
            read()
        assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda f: f.write_bytes(f.read_bytes()[:-3]), "truncated or modified"),
        (lambda f: f.unlink(), "listed but missing"),
        (lambda f: (f.parent / "extra.bin").write_bytes(b"x"), "extra.bin: not listed"),
    ],
)
def test_truncated_missing_or_unlisted_files_are_refused(tmp_path, tamper, message):
    out = tmp_path / "model"
    src = tmp_path / "src"
    src.mkdir()
    (src / "xgb.ubj").write_bytes(b"0123456789")
    storage.publish_dir(src, str(out))
    tamper(Path(storage.open_output(str(out)).path("xgb.ubj")))
    with pytest.raises(storage.StorageError, match=message):
        storage.open_output(str(out))


def test_modified_bytes_of_the_same_size_are_refused_on_read(tmp_path):
    out = str(tmp_path / "j")
    storage.publish_json({"a": 1}, out)
    path = Path(storage.open_output(out).path())
    path.write_bytes(path.read_bytes().replace(b"1", b"2"))
    with pytest.raises(storage.StorageError, match="sha256 does not match"):
        storage.read_json(out)


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(proc.stdout)


def _commit(pid: int, stamp: str = "20991231T000000Z", host: str | None = None) -> str:
    return f"{stamp}-{host or marker_format.HOST_TAG}-{pid}-{uuid.uuid4().hex[:8]}"


def test_next_publish_cleans_only_abandoned_staging(tmp_path):
    out = tmp_path / "lake"
    storage.write_dataset(_table(4), str(out))
    dead = out / f"v-{_commit(_dead_pid())}"
    live = out / f"v-{_commit(os.getppid())}"  # a running writer (our parent) on this host
    other_host = out / f"v-{_commit(1, host='0badc0de')}"  # another host, fresh
    stale = out / f"v-{_commit(1, stamp='20000101T000000Z', host='0badc0de')}"
    tmp_marker = out / f"._SUCCESS.{_commit(_dead_pid())}.tmp"
    for d in (dead, live, other_host, stale):
        d.mkdir()
        (d / "part-0.parquet.tmp").write_bytes(b"half")
    tmp_marker.write_bytes(b"{")
    legacy = [
        tmp_path / f".lake.{uuid.uuid4().hex}.old",
        tmp_path / f".lake.{uuid.uuid4().hex}.tmp",
        tmp_path / f".lake.tmp-{uuid.uuid4().hex}",
    ]
    for d in legacy:
        d.mkdir()
    unrelated = tmp_path / ".other.0123456789abcdef0123456789abcdef.tmp"
    unrelated.mkdir()
    storage.write_dataset(_table(6), str(out))
    assert not dead.exists() and not stale.exists() and not tmp_marker.exists()
    assert live.exists() and other_host.exists()  # never touch a live writer's staging
    assert not any(d.exists() for d in legacy)
    assert unrelated.exists()  # only this output's own staging
    assert storage.read_table(str(out)).num_rows == 6


def test_staged_dir_publishes_a_local_folder(tmp_path):
    target = tmp_path / "out" / "model"
    with storage.staged_dir(str(target)) as staging:
        (staging / "a.bin").write_bytes(b"abc")
        assert not (target / MARKER).exists()  # nothing visible until the block succeeds
    out = storage.open_output(str(target))
    assert out.files == {"a.bin": {"sha256": storage.sha256_bytes(b"abc"), "size": 3}}
    assert out.read_bytes("a.bin") == b"abc"
    assert [p.name for p in target.parent.iterdir()] == ["model"]  # no staging beside it


def test_rewriting_a_legacy_single_file_output(tmp_path):
    legacy = tmp_path / "features.parquet"
    storage.write_table(_table(2), str(legacy))  # the pre-versioned layout: a plain file
    storage.publish_table(_table(4), str(legacy))
    assert storage.read_table(str(legacy)).num_rows == 4


def test_rewriting_a_legacy_folder_output_clears_the_old_layout(tmp_path):
    """A pre-versioned model folder (old marker, files at the top) must not linger: someone
    opening ``model/xgb.ubj`` by hand would get the old model."""
    legacy = tmp_path / "model"
    legacy.mkdir()
    (legacy / "xgb.ubj").write_bytes(b"old")
    (legacy / MARKER).write_text('{"files": {"xgb.ubj": "abc"}}')
    with pytest.raises(storage.StorageError, match="not a cashier-integrity-output marker"):
        storage.open_output(str(legacy))
    with storage.staged_dir(str(legacy)) as folder:
        (folder / "xgb.ubj").write_bytes(b"new")
    out = storage.open_output(str(legacy))
    assert out.read_bytes("xgb.ubj") == b"new"
    assert sorted(p.name for p in legacy.iterdir()) == [MARKER, out.version]
