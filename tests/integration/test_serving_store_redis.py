"""The Redis profile store against a real ``redis-server`` on loopback."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest
import redis

from components.contracts import features as F
from components.contracts.feature_columns import Win
from serving.store import InProcessStore
from serving.store.redis_store import RedisStore
from tests.unit.serving_demo import demo, known_request  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

N = F.STAT_N


@pytest.fixture
def frozen(demo) -> F.ProfileIndex:  # noqa: F811
    return F.ProfileIndex.from_table(pq.read_table(demo.path / "profiles.parquet"))


def _store(url: str, request: pytest.FixtureRequest, **kw) -> RedisStore:
    return RedisStore(url, namespace=f"t-{request.node.name}", **kw)


@pytest.fixture
def seeded(redis_server, frozen, request):
    """Factory of a RedisStore (this test's namespace) seeded from the demo bundle."""

    def make(**kw) -> RedisStore:
        store = _store(redis_server, request, **kw)
        store.seed(frozen, "sha")
        return store

    return make


def _stats(row: dict) -> np.ndarray:
    return F.fold_values(F.raw_row(row))[0]


def test_redis_and_in_process_stores_agree_bit_for_bit(
    redis_server,
    frozen,
    demo,  # noqa: F811
    request,
):
    """Same seed, same folds (retries and home-store lookups included): identical priors."""
    red, mem = _store(redis_server, request), InProcessStore()
    assert red.seed(frozen, "sha") > 0 and mem.seed(frozen, "sha") > 0
    for i in range(400):
        row = known_request(demo, i)
        txn = row["transaction_id"] if i % 7 else "retried"
        store_id = None if i % 5 == 0 else row["store_id"]
        a = red.fold(row["cashier_id"], store_id, txn, _stats(row))
        b = mem.fold(row["cashier_id"], store_id, txn, _stats(row))
        assert a.tobytes() == b.tobytes(), i


def test_concurrent_folds_for_one_cashier_never_lose_an_update(seeded, frozen, demo, request):  # noqa: F811
    store = seeded(deadline_s=5.0)
    row = known_request(demo, 0)
    cashier, shop = row["cashier_id"], row["store_id"]
    start = frozen.cashiers[cashier][N]
    shift_start = frozen.windows[cashier][Win.shift_txn]  # row 0 is older: same shift
    values = _stats(row)

    def worker(k: int) -> None:
        mine = RedisStore(store._url, namespace=f"t-{request.node.name}", deadline_s=5.0)
        for i in range(150):
            mine.fold(cashier, shop, f"w{k}-{i}", values)
            mine.fold(cashier, shop, f"shared-{i}", values)  # every thread retries these
        mine.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = store.fold(cashier, shop, "final", values)
    assert after[N] == start + 6 * 150 + 150
    assert after[F.WINDOW_BLOCK + Win.shift_txn] == shift_start + 6 * 150 + 150


def test_seed_is_idempotent_and_never_overwrites_live_statistics(
    redis_server,
    frozen,
    demo,  # noqa: F811
    request,
):
    store = _store(redis_server, request)
    written = store.seed(frozen, "sha")
    assert written == 2 * len(frozen.cashiers) + len(frozen.stores) + 1  # + window states
    assert store.seed(frozen, "sha") == 0
    row = known_request(demo, 0)
    store.fold(row["cashier_id"], row["store_id"], "t1", _stats(row))
    store.client.delete(f"{store.prefix}seeded")  # as if a seed had been interrupted
    assert store.seed(frozen, "sha") == 0  # every key exists: nothing overwritten
    prior = store.fold(row["cashier_id"], row["store_id"], "t2", _stats(row))
    assert prior[N] == frozen.cashiers[row["cashier_id"]][N] + 1


def test_keys_are_versioned_by_feature_version(redis_server, frozen, request):
    store = _store(redis_server, request)
    store.seed(frozen, "sha")
    keys = {k.decode() for k in store.client.scan_iter(match=f"{store.prefix}*")}
    assert keys and all(
        k.startswith(f"{{t-{request.node.name}:f{F.FEATURE_VERSION}}}:") for k in keys
    )


def test_seed_cli_twice(redis_server, demo, request):  # noqa: F811
    cmd = [sys.executable, "-m", "serving.store", "seed", "--model-dir", str(demo.path)]
    cmd += ["--redis-url", redis_server, "--namespace", f"cli-{request.node.name}"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "seeded 0 profile keys" not in first.stdout
    assert "seeded 0 profile keys" in second.stdout


@pytest.mark.parametrize("mode", ["blocking", "asyncio"])
def test_deadline_exceeded_is_a_timeout_not_an_exception_to_the_caller(
    seeded,
    redis_server,
    demo,  # noqa: F811
    mode,
):
    """A server busy past the deadline (DEBUG SLEEP, enabled by the fixture) -> StoreError."""
    import asyncio

    from serving.store import StoreError

    store = seeded(deadline_s=0.05)
    blocker = redis.Redis.from_url(redis_server)
    t = threading.Thread(target=lambda: blocker.execute_command("DEBUG", "SLEEP", "2"))
    t.start()
    probe = redis.Redis.from_url(redis_server, socket_timeout=0.02)
    while True:  # until the server stops answering: DEBUG SLEEP has started
        try:
            probe.ping()
        except redis.TimeoutError:
            break
    try:
        row = known_request(demo, 0)
        args = (row["cashier_id"], row["store_id"], "slow", _stats(row))
        with pytest.raises(StoreError) as info:
            if mode == "blocking":
                store.fold(*args)
            else:
                asyncio.run(store.fold_async(*args))
        assert info.value.reason == "timeout"
    finally:
        t.join()


LAMBDA_CODE = """
import json
from serving.lambda_handler import handler
from tests.conftest import BRIEF_REQUEST
from tests.unit.test_serving_lambda import Context, http_v2
for txn in ("L1", "L2"):
    body = BRIEF_REQUEST | {"transaction_id": txn, "cashier_id": "LAMBDA-NEW-HIRE"}
    r = handler(http_v2("/v1/predict", body), Context())
    reply = json.loads(r["body"])
    print(r["statusCode"], reply["profile_source"], reply["features"][FEATURE])
"""


@pytest.mark.parametrize("reachable", [True, False], ids=["redis", "redis-unreachable"])
def test_lambda_handler_uses_redis_when_set_and_degrades_when_not(
    redis_server,
    demo,  # noqa: F811
    reachable,
    request,
):
    """The Mangum handler (real HTTP API v2 event shape; AWS itself cannot run here)."""
    import os

    from tests.conftest import REPO, free_port

    url = redis_server if reachable else f"redis://127.0.0.1:{free_port()}/0"
    env = {
        **os.environ,
        "MODEL_DIR": str(demo.path),
        "REDIS_URL": url,
        "STORE_NAMESPACE": f"lambda-{request.node.name}",
        "DEBUG_FEATURES": "true",
        "METRICS_MODE": "emf",
    }
    env.pop("API_KEY", None)
    feature = F.FEATURE_NAMES.index("cashier_log_txn_count")
    code = LAMBDA_CODE.replace("FEATURE", str(feature))
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line.split() for line in proc.stdout.splitlines() if line[:3].isdigit()]
    if reachable:
        assert lines == [["200", "live", "0.0"], ["200", "live", repr(float(np.log1p(1)))]]
    else:
        assert lines == [["200", "frozen", "0.0"], ["200", "frozen", "0.0"]]
        assert '"reason": "unreachable"' in proc.stdout or '"reason":"unreachable"' in proc.stdout
