"""S3 calls are bounded by ``SERVICE_TIMEOUT_S`` (issue 11: retries bounded by the knob).

* An S3 endpoint that accepts TCP connections and never answers (a socket on loopback that
  accepts and stays silent, what a hung server or a black-holing load balancer gives): a
  stage reading from it fails with one line and exit 1, and from the first connection to
  its exit it takes less than 3x the knob (measured ~4.7 s with a 3 s knob: 3 tries of 1 s
  plus back-off; pyarrow's own default took ~10 s whatever the knob, so this failed before;
  MLflow's default ~250 s is what an unbounded retry loop looks like).
* The knob governs both ways: moto's server behind a proxy that holds back each connection's
  first response for ``DELAY_S`` (a slow S3) is read fine with a 30 s knob (pyarrow's
  default 3 s request timeout failed this) and refused, as a ``StorageError``, with a 3 s
  knob. The bound is on time since the first connection, so interpreter start-up on a busy
  machine does not count.

Nothing is mocked: real sockets on loopback and moto's S3 server (AWS itself cannot be used).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest
from faultlib import run_stage, s3_env, split_args, the_error

from components.contracts import storage
from tests.integration.test_faults_publish import CuttingProxy

pytestmark = pytest.mark.integration

KNOB_S = 3
DELAY_S = 4.0


class SilentEndpoint:
    """Accepts TCP connections on loopback and never sends a byte; records when."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.connected_at: list[float] = []
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connected_at.append(time.monotonic())
            self._socks.append(conn)  # kept open, never read or written

    def close(self) -> None:
        self.server.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()


class SlowProxy(CuttingProxy):
    """Forwards to ``upstream``; the first response bytes of each connection wait ``delay_s``."""

    def __init__(self, upstream: tuple[str, int], delay_s: float):
        self.delay_s = delay_s
        super().__init__(upstream)

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        if not counted:  # upstream -> client: S3 answers late
            try:
                first = src.recv(65536)
                time.sleep(self.delay_s)
                dst.sendall(first)
            except OSError:
                first = b""
            if not first:
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.close()
                return
        super()._pump(src, dst, counted)


@pytest.fixture
def silent_s3(tmp_path):
    endpoint = SilentEndpoint()
    env = s3_env(tmp_path / "var", endpoint.url, SERVICE_TIMEOUT_S=str(KNOB_S))
    yield endpoint, env
    endpoint.close()


def test_stage_gives_up_on_a_silent_s3_within_the_knob(silent_s3, tmp_path):
    endpoint, env = silent_s3
    proc = run_stage(
        "split", *split_args("s3://bucket/transactions", tmp_path), env=env, timeout=300
    )
    exited = time.monotonic()
    assert proc.returncode == 1, proc.stderr
    assert "s3://bucket/transactions" in the_error(proc.stderr, "split")
    assert endpoint.connected_at, "the stage never reached the endpoint"
    assert exited - endpoint.connected_at[0] < 3 * KNOB_S
    assert not (tmp_path / "h").exists()


@pytest.fixture
def slow_s3(moto_s3, s3_bucket, monkeypatch):
    """One object on moto, then S3_ENDPOINT_URL pointed at a slow proxy in front of it."""
    uri = f"s3://{s3_bucket}/entry.json"
    storage.write_bytes(b'{"ok": 1}', uri)
    host, port = moto_s3["S3_ENDPOINT_URL"].removeprefix("http://").split(":")
    proxy = SlowProxy((host, int(port)), DELAY_S)
    monkeypatch.setenv("S3_ENDPOINT_URL", proxy.url)
    yield uri
    proxy.close()


def test_a_slow_s3_within_the_knob_is_read(slow_s3, monkeypatch):
    monkeypatch.setenv("SERVICE_TIMEOUT_S", "30")
    assert storage.read_json(slow_s3) == {"ok": 1}


def test_a_slow_s3_beyond_the_knob_is_an_error(slow_s3, monkeypatch):
    monkeypatch.setenv("SERVICE_TIMEOUT_S", "3")
    with pytest.raises(storage.StorageError, match=slow_s3):
        storage.read_json(slow_s3)
