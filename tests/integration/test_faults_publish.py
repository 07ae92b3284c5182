"""Fault injection for publishing (issue 11, items 3-5): S3 outages and SIGKILLs.

* An S3 outage is injected between the client and moto's server (tests/conftest.py) by a
  small TCP proxy that forwards to moto and, once a byte budget is spent, cuts every open
  connection and refuses new ones. A rewrite of a complete dataset and of a model folder
  through it must leave the previous version complete and readable and nothing partial
  visible; the next publish (S3 back) cleans the partial staging.
* A SIGKILL at several points of a real stage CLI (``split``: four outputs) is delivered by
  the process itself at a named publish point (``storage.FAULT_ENV``, a test hook): a
  ``kill -9`` from outside at that instant has the same effect, without a race. The outputs
  must then read as either the complete old set or the complete new set, and the next run
  must clean the staging.

AWS itself is not used: moto's server on loopback stands in for S3.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from pathlib import Path

import boto3
import pyarrow as pa
import pytest

from components.contracts import storage
from components.contracts.schemas import LABELLED_TRANSACTION, LIVE_LABELS, RAW_TRANSACTION
from tests.conftest import run_stage

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


class CuttingProxy:
    """TCP proxy to ``upstream`` that goes down after forwarding ``budget`` client bytes."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.budget: int | None = None  # None: unlimited
        self.down = False
        self.sent = 0
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut_after(self, budget: int) -> None:
        with self._lock:
            self.budget, self.sent, self.down = budget, 0, False

    def restore(self) -> None:
        with self._lock:
            self.budget, self.down = None, False

    def _cut(self) -> None:
        self.down = True
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self._socks.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        try:
            while data := src.recv(65536):
                if counted:
                    with self._lock:
                        if self.down:
                            return
                        if self.budget is not None and self.sent + len(data) > self.budget:
                            dst.sendall(data[: max(0, self.budget - self.sent)])
                            self._cut()
                            return
                        self.sent += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def close(self) -> None:
        self.server.close()
        with self._lock:
            self._cut()


@pytest.fixture
def proxy(moto_s3, s3_bucket, monkeypatch):
    host, port = moto_s3["S3_ENDPOINT_URL"].removeprefix("http://").split(":")
    p = CuttingProxy((host, int(port)))
    monkeypatch.setenv("S3_ENDPOINT_URL", p.url)
    yield p
    p.close()


def _keys(endpoint: str, bucket: str, prefix: str) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=endpoint)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _tx(n: int, seed: int) -> pa.Table:
    import numpy as np

    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "transaction_id": [f"T{seed}-{i}" for i in range(n)],
            "day": [f"d{i % 7}" for i in range(n)],
            "payload": rng.random(n),
        }
    )


def test_s3_outage_during_a_dataset_rewrite_keeps_the_old_dataset(proxy, moto_s3, s3_bucket):
    uri = f"s3://{s3_bucket}/lake"
    old = _tx(20_000, seed=1)
    storage.write_dataset(old, uri, partition_cols=["day"])
    marker_before = storage.read_json(f"{uri}/_SUCCESS")

    proxy.cut_after(150_000)  # a few of the new partition files get through, then S3 is gone
    with pytest.raises(OSError):
        storage.write_dataset(
            [_tx(20_000, seed=2), _tx(20_000, seed=3)], uri, partition_cols=["day"]
        )
    assert proxy.down
    proxy.restore()

    keys = _keys(moto_s3["S3_ENDPOINT_URL"], s3_bucket, "lake/")
    staged = [k for k in keys if k.startswith("lake/v-") and marker_before["version"] not in k]
    assert staged, "the outage should have hit after some new objects were written"
    assert storage.read_json(f"{uri}/_SUCCESS") == marker_before  # nothing partial visible
    back = storage.read_table(uri)
    assert back.num_rows == old.num_rows
    assert sorted(back.column("transaction_id").to_pylist()) == sorted(
        old.column("transaction_id").to_pylist()
    )
    # The next publish (S3 back) commits and cleans the dead attempt's staging.
    storage.write_dataset(_tx(1_000, seed=4), uri, partition_cols=["day"])
    assert storage.read_table(uri).num_rows == 1_000
    versions = {k.split("/")[1] for k in _keys(moto_s3["S3_ENDPOINT_URL"], s3_bucket, "lake/")} - {
        ""
    }
    assert versions == {"_SUCCESS", storage.read_json(f"{uri}/_SUCCESS")["version"]}


def test_s3_outage_during_a_model_republish_keeps_the_old_model(proxy, moto_s3, s3_bucket):
    uri = f"s3://{s3_bucket}/models/xgb"
    with storage.staged_dir(uri) as folder:
        (folder / "xgb.ubj").write_bytes(b"old-model" * 10_000)
        (folder / "meta.json").write_text('{"v": 1}')
    proxy.cut_after(60_000)
    with pytest.raises(OSError), storage.staged_dir(uri) as folder:
        (folder / "xgb.ubj").write_bytes(b"new-model" * 20_000)
        (folder / "meta.json").write_text('{"v": 2}')
    assert proxy.down
    proxy.restore()
    out = storage.open_output(uri)
    assert out.read_bytes("xgb.ubj") == b"old-model" * 10_000
    assert out.read_json("meta.json") == {"v": 1}


# ---------------------------------------------------------------- SIGKILL of a real stage


OUTPUTS = ("historic", "live.jsonl", "live_labels.parquet", "time_splits.json")


def _split(src: Path, out: Path, live_days: int, env: dict | None = None):
    return run_stage(
        "split",
        "--in-transactions", str(src),
        "--out-historic", str(out / "historic"),
        "--out-live-stream", str(out / "live.jsonl"),
        "--out-live-labels", str(out / "live_labels.parquet"),
        "--out-time-splits", str(out / "time_splits.json"),
        "--live-days", str(live_days), "--valid-days", "2", "--test-days", "2",
        env=env,
    )  # fmt: skip


def _read_set(out: Path) -> dict:
    """Every output of the split run through the consumers' readers."""
    historic = storage.read_table(str(out / "historic"), LABELLED_TRANSACTION)
    stream = storage.read_jsonl(str(out / "live.jsonl"), RAW_TRANSACTION)
    labels = storage.read_table(str(out / "live_labels.parquet"), LIVE_LABELS)
    splits = storage.read_json(str(out / "time_splits.json"))
    assert labels.num_rows == stream.num_rows
    return {"historic": historic.num_rows, "live": stream.num_rows, "splits": splits}


@pytest.fixture(scope="module")
def transactions(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "transactions"
    args = ["--rows", "4000", "--days", "10", "--stores", "2", "--cashiers-per-store", "4"]
    proc = run_stage("datagen", "--out-transactions", str(out), *args, "--chunk-rows", "1500")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize(
    ("point", "expect"),
    [
        ("write-1", "old"),  # mid-staging of the historic lake
        ("staged", "old"),  # everything staged and verified, no marker switched
        ("switch-1", "old"),  # killed between the 1st and 2nd marker switch
        ("switch-3", "old"),  # ... between the 3rd and the 4th
        ("switched", "new"),  # after the last switch, before old versions are collected
    ],
)
def test_sigkill_during_split_leaves_old_or_new_complete_set(transactions, tmp_path, point, expect):
    out = tmp_path / "split"
    assert _split(transactions, out, live_days=2).returncode == 0
    old = _read_set(out)
    killed = _split(transactions, out, live_days=3, env={storage.FAULT_ENV: point})
    assert killed.returncode == -9, killed.stderr
    after = _read_set(out)
    if expect == "old":
        assert after == old
    else:
        assert after["live"] > old["live"] and after["splits"] != old["splits"]
    commits = {json.loads((out / o / "_SUCCESS").read_text())["commit"] for o in OUTPUTS}
    assert len(commits) == (2 if point.startswith("switch-") else 1)

    # The next run commits and leaves exactly one version per output, no staging.
    assert _split(transactions, out, live_days=3).returncode == 0
    new = _read_set(out)
    assert new["live"] > old["live"]
    for name in OUTPUTS:
        entries = sorted(p.name for p in (out / name).iterdir())
        marker = json.loads((out / name / "_SUCCESS").read_text())
        assert entries == ["_SUCCESS", marker["version"]], (name, entries)
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)  # nothing beside them


def _features(split: Path, out: Path, env: dict | None = None):
    return run_stage(
        "features",
        "--in-historic", str(split / "historic"),
        "--in-time-splits", str(split / "time_splits.json"),
        "--out-features", str(out / "features.parquet"),
        "--out-profiles", str(out / "profiles.parquet"),
        env=env,
    )  # fmt: skip


@pytest.mark.parametrize("point", ["staged", "switch-1"])
def test_sigkill_during_features_never_shows_features_without_their_profiles(
    transactions, tmp_path, point
):
    split_old, split_new, out = tmp_path / "split-old", tmp_path / "split-new", tmp_path / "f"
    assert _split(transactions, split_old, live_days=2).returncode == 0
    assert _split(transactions, split_new, live_days=3).returncode == 0
    assert _features(split_old, out).returncode == 0
    old = (
        storage.read_table(str(out / "features.parquet")).num_rows,
        storage.read_table(str(out / "profiles.parquet")).num_rows,
    )
    killed = _features(split_new, out, env={storage.FAULT_ENV: point})
    assert killed.returncode == -9, killed.stderr
    after = (
        storage.read_table(str(out / "features.parquet")).num_rows,
        storage.read_table(str(out / "profiles.parquet")).num_rows,
    )
    assert after == old
    assert _features(split_new, out).returncode == 0
    assert storage.read_table(str(out / "features.parquet")).num_rows != old[0]  # new set
    for name in ("features.parquet", "profiles.parquet"):
        assert len([p for p in (out / name).iterdir() if p.name.startswith("v-")]) == 1
