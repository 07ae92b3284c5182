"""The pipelined Redis transport and the batch fold against a real ``redis-server``."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest
import redis
from litestar.testing import TestClient

from components.contracts import features as F
from serving.app import create_app
from serving.settings import ServingSettings
from serving.store import InProcessStore, LiveProfiles, StoreError
from serving.store.redis_store import RedisStore
from tests.unit.serving_demo import demo, known_request  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

N = F.STAT_N


@pytest.fixture
def frozen(demo) -> F.ProfileIndex:  # noqa: F811
    return F.ProfileIndex.from_table(pq.read_table(demo.path / "profiles.parquet"))


def _items(demo, n: int) -> list[tuple]:  # noqa: F811
    """Folds with retries (every 7th id repeated) and home-store lookups (every 5th)."""
    out = []
    for i in range(n):
        row = known_request(demo, i % 40)  # 40 rows: many folds per cashier
        txn = f"t{i}" if i % 7 else f"t{i - 7}"
        store_id = None if i % 5 == 0 else row["store_id"]
        out.append((row["cashier_id"], store_id, txn, F.fold_values(F.raw_row(row))[0]))
    return out


def _bytes(priors) -> list[bytes]:
    return [np.asarray(p).tobytes() for p in priors]


def _redis(url: str, request, tag: str = "", **kw) -> RedisStore:
    return RedisStore(url, namespace=f"t-{request.node.name}{tag}", **kw)


def test_pipelined_folds_resolve_in_order_bit_for_bit(redis_server, frozen, demo, request):  # noqa: F811
    """300 folds issued at once on one connection (one write), and a batch: each reply goes
    to its own caller - the priors equal the in-process store's sequential ones."""
    items = _items(demo, 300)
    mem = InProcessStore()
    mem.seed(frozen, "sha")
    expected = _bytes(mem.fold(*item) for item in items)
    expected += _bytes(mem.fold_many(items))

    store = _redis(redis_server, request, deadline_s=5.0)
    store.seed(frozen, "sha")

    async def run() -> list:
        one_by_one = await asyncio.gather(*(store.fold_async(*item) for item in items))
        return [*one_by_one, *await store.fold_many_async(items)]

    assert _bytes(asyncio.run(run())) == expected
    blocking = _redis(redis_server, request, "-b", deadline_s=5.0)
    blocking.seed(frozen, "sha")
    assert _bytes(blocking.fold_many(items) + blocking.fold_many(items)) == expected


def test_concurrent_pipelines_and_threads_lose_no_update(redis_server, frozen, demo, request):  # noqa: F811
    """Three stores (three connections) in one loop, each 200 folds in flight, plus a thread
    with the blocking client; every worker also retries shared ids: exact count."""
    row = known_request(demo, 0)
    cashier, shop = row["cashier_id"], row["store_id"]
    values = F.fold_values(F.raw_row(row))[0]
    first = _redis(redis_server, request, deadline_s=5.0)
    first.seed(frozen, "sha")
    start = frozen.cashiers[cashier][N]

    def blocking() -> None:
        mine = _redis(redis_server, request, deadline_s=5.0)
        for i in range(100):
            mine.fold(cashier, shop, f"thread-{i}", values)
            mine.fold(cashier, shop, f"shared-{i}", values)

    async def worker(k: int) -> None:
        store = _redis(redis_server, request, deadline_s=5.0)
        calls = [store.fold_async(cashier, shop, f"w{k}-{i}", values) for i in range(200)]
        calls += [store.fold_async(cashier, shop, f"shared-{i}", values) for i in range(100)]
        await asyncio.gather(*calls)
        await store.fold_many_async([(cashier, shop, f"m{k}-{i}", values) for i in range(50)])

    async def run() -> None:
        await asyncio.gather(*(worker(k) for k in range(3)))

    thread = threading.Thread(target=blocking)
    thread.start()
    asyncio.run(run())
    thread.join()
    after = first.fold(cashier, shop, "final", values)
    assert after[N] == start + 3 * (200 + 50) + 100 + 100


def test_timeout_fails_the_calls_then_a_new_connection_answers(redis_server, frozen, demo, request):  # noqa: F811
    """A server busy past the deadline (DEBUG SLEEP): the batch and a single fold fail with
    ``timeout``; after it wakes, the next calls get their own replies (no reply of a
    timed-out call is ever matched to a later one)."""
    store = _redis(redis_server, request, deadline_s=0.05)
    store.seed(frozen, "sha")
    items = _items(demo, 20)
    blocker = redis.Redis.from_url(redis_server)

    async def run() -> tuple:
        await store.fold_async(*items[0])  # connected
        sleeping = asyncio.get_running_loop().run_in_executor(
            None, lambda: blocker.execute_command("DEBUG", "SLEEP", "0.5")
        )
        await asyncio.sleep(0.05)
        failures = []
        for call in (store.fold_many_async(items[1:]), store.fold_async(*items[1])):
            try:
                await call
            except StoreError as exc:
                failures.append(exc.reason)
        await sleeping
        return failures, await store.fold_many_async(
            [items[1], ("fresh", None, "new", items[1][3])]
        )

    failures, (again, fresh) = asyncio.run(run())
    assert failures == ["timeout", "timeout"]
    assert fresh[:N].tolist() == [0.0] * N  # a cashier never seen: its own empty prior
    assert again[N] >= frozen.cashiers[items[1][0]][N]


def test_a_killed_connection_or_a_flushed_script_is_recovered(redis_server, frozen, demo, request):  # noqa: F811
    store = _redis(redis_server, request, deadline_s=5.0)
    store.seed(frozen, "sha")
    admin = redis.Redis.from_url(redis_server)
    items = _items(demo, 10)
    mem = InProcessStore()
    mem.seed(frozen, "sha")
    expected = _bytes(mem.fold(*item) for item in items)

    async def run() -> list:
        out = [await store.fold_async(*items[0])]
        admin.client_kill_filter(_type="normal", skipme=True)  # drops our connection
        await asyncio.sleep(0.05)
        out.append(await store.fold_async(*items[1]))
        admin.script_flush()  # EVALSHA now refused: EVAL, same result
        out.append(await store.fold_async(*items[2]))
        admin.script_flush()
        return out + await store.fold_many_async(items[3:])

    assert _bytes(asyncio.run(run())) == expected


def test_auth_and_database_from_the_url(redis_server, frozen, demo, request):  # noqa: F811
    admin = redis.Redis.from_url(redis_server)
    admin.acl_setuser("perf", enabled=True, passwords=["+s3cret"], keys="*", commands=["+@all"])
    host = redis_server.removeprefix("redis://").split("/")[0]
    good = RedisStore(f"redis://perf:s3cret@{host}/3", namespace=f"t-{request.node.name}")
    bad = RedisStore(f"redis://perf:wrong@{host}/3", namespace=f"t-{request.node.name}")
    good.seed(frozen, "sha")
    item = _items(demo, 1)[0]
    first = asyncio.run(good.fold_async(*item))
    retry = asyncio.run(good.fold_async(*item))  # another event loop: a new connection
    after = asyncio.run(good.fold_async(item[0], item[1], "next", item[3]))
    assert retry[N] == after[N] == first[N] + 1  # the retry saw the fold, was not folded
    assert redis.Redis.from_url(f"redis://{host}/3").exists(f"{good.prefix}c:{item[0]}")
    with pytest.raises(StoreError) as info:
        asyncio.run(bad.fold_async(*item))
    assert info.value.reason == "unreachable" and "handshake" in str(info.value)


def test_batch_endpoint_folds_in_order_in_one_call(redis_server, demo, request):  # noqa: F811
    """POST /v1/predict/batch with Redis: the same scores as the in-process store's batch and
    as the same transactions sent one by one; a retried id inside the batch counts once."""
    rows = [known_request(demo, i % 6) | {"transaction_id": f"b{i % 9}"} for i in range(12)]
    rows[3] |= {"cashier_id": "NEW-HIRE"}
    rows[4] |= {"cashier_id": "NEW-HIRE"}

    def app(tag: str, **kw) -> TestClient:
        settings = ServingSettings(
            model_dir=str(demo.path), store_namespace=f"t-{request.node.name}-{tag}", **kw
        )
        return TestClient(create_app(settings))

    def scores(body: dict) -> list:
        return [(p["risk_score"], p["profile_source"]) for p in body["predictions"]]

    redis_kw = {"profile_store": "redis", "redis_url": redis_server}
    with app("batch", **redis_kw) as client:
        batch = scores(client.post("/v1/predict/batch", json={"transactions": rows}).json())
    with app("memory", profile_store="memory") as client:
        memory = scores(client.post("/v1/predict/batch", json={"transactions": rows}).json())
    with app("single", **redis_kw) as client:
        single = [client.post("/v1/predict", json=r).json() for r in rows]
    assert batch == memory == [(s["risk_score"], s["profile_source"]) for s in single]
    assert {source for _, source in batch} == {"live"}


def test_batch_with_an_unreachable_store_is_scored_frozen(demo, frozen):  # noqa: F811
    from tests.conftest import free_port

    reasons = []
    live = LiveProfiles(
        RedisStore(f"redis://127.0.0.1:{free_port()}/0", deadline_s=0.5),
        frozen,
        on_lookup=lambda source, reason: reasons.append((source, reason)),
    )
    rows = [known_request(demo, i) for i in range(3)]
    raw = np.vstack([F.raw_row(r) for r in rows])
    prior, sources = asyncio.run(live.prior_many_async(rows, raw))
    again = asyncio.run(live.prior_many_async(rows, raw))
    expected = np.vstack([frozen.prior_for(r["cashier_id"], r["store_id"]) for r in rows])
    assert sources == ["frozen"] * 3 and prior.tobytes() == expected.tobytes()
    assert again[1] == ["frozen"] * 3
    assert reasons == [("frozen", "unreachable")] * 3 + [("frozen", "backoff")] * 3


def _tls_files(folder) -> tuple[str, str, str]:
    """A CA and a server certificate for localhost/127.0.0.1 signed by it (cert, key, ca)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(subject: str, key, issuer: str, signer, ca: bool, names=()) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert("test-ca", ca_key, "test-ca", ca_key, True)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = cert("localhost", key, "test-ca", ca_key, False, names)
    paths = [folder / n for n in ("server.crt", "server.key", "ca.crt")]
    paths[0].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[2].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return tuple(str(p) for p in paths)  # type: ignore[return-value]


def test_rediss_url_verified_tls(tmp_path, frozen, demo):  # noqa: F811
    """``rediss://`` against a TLS ``redis-server``: verified with the URL's CA (the seed
    goes through redis-py, the folds through the transport); an unknown CA is refused."""
    import shutil

    from tests.conftest import free_port
    from tools.bench.http import redis_server as run_redis

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    cert, key, ca = _tls_files(tmp_path)
    port = free_port()
    extra = ["--tls-port", str(port), "--tls-cert-file", cert, "--tls-key-file", key]
    extra += ["--tls-ca-cert-file", ca, "--tls-auth-clients", "no"]
    with run_redis(tmp_path, extra=extra):
        store = RedisStore(f"rediss://localhost:{port}/0?ssl_ca_certs={ca}", deadline_s=2.0)
        assert store.seed(frozen, "sha") > 0
        item = _items(demo, 1)[0]
        prior = asyncio.run(store.fold_async(*item))
        assert prior[N] == frozen.cashiers[item[0]][N]
        untrusted = RedisStore(f"rediss://localhost:{port}/0", deadline_s=2.0)
        with pytest.raises(StoreError) as info:
            asyncio.run(untrusted.fold_async(*item))
        assert info.value.reason == "unreachable" and "CERTIFICATE_VERIFY_FAILED" in str(info.value)
