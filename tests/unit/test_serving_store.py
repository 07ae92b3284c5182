"""The in-process profile store and the live/frozen switch (no server: see
``tests/integration/test_serving_store_redis.py`` for Redis)."""

from __future__ import annotations

import numpy as np
import pytest
from litestar.testing import TestClient

from components.contracts import features as feats
from components.contracts.feature_columns import Win
from serving.app import create_app
from serving.settings import ServingSettings
from serving.store import FROZEN, LIVE, InProcessStore, LiveProfiles
from tests.conftest import free_port
from tests.unit.serving_demo import demo, known_request  # noqa: F401  (fixture)

N = feats.STAT_N


def _frozen(demo) -> feats.ProfileIndex:  # noqa: F811
    import pyarrow.parquet as pq

    return feats.ProfileIndex.from_table(pq.read_table(demo.path / "profiles.parquet"))


def _stats(row: dict) -> np.ndarray:
    return feats.fold_values(feats.raw_row(row))[0]


def test_fold_sequence_equals_batch_point_in_time_priors(demo):  # noqa: F811
    """Folding one transaction at a time gives the batch stage's priors (``ProfileState``)."""
    rows = [known_request(demo, i) for i in range(300)]
    raw = np.vstack([feats.raw_row(r) for r in rows])
    batch = feats.ProfileState().advance(
        raw, [r["cashier_id"] for r in rows], [r["store_id"] for r in rows]
    )
    store = InProcessStore()
    online = np.vstack(
        [store.fold(r["cashier_id"], r["store_id"], r["transaction_id"], _stats(r)) for r in rows]
    )
    # Batch priors are cumsum - value (one rounding away from a running sum): not bit-equal.
    np.testing.assert_allclose(online, batch, rtol=1e-12, atol=1e-9)
    assert online[:, N].tolist() == batch[:, N].tolist()  # counts are exact


def test_retry_is_scored_but_not_counted_twice_and_seed_stays_frozen(demo):  # noqa: F811
    frozen = _frozen(demo)
    store = InProcessStore()
    store.seed(frozen, "sha")
    row = known_request(demo, 0)
    cashier, shop = row["cashier_id"], row["store_id"]
    seeded_n = frozen.cashiers[cashier][N]
    first = store.fold(cashier, shop, "t1", _stats(row))
    again = store.fold(cashier, shop, "t1", _stats(row))
    after = store.fold(cashier, shop, "t2", _stats(row))
    assert first[N] == seeded_n
    assert again[N] == seeded_n + 1  # scored against the state that includes the first try
    assert after[N] == seeded_n + 1  # ... and the retry was not folded
    shift = feats.WINDOW_BLOCK + Win.shift_txn  # row 0 is older than the seed: same shift
    assert after[shift] == first[shift] + 1  # the window neither
    assert frozen.cashiers[cashier][N] == seeded_n  # the fallback profile never moves
    assert frozen.windows[cashier][Win.shift_txn] == first[shift]
    assert store.seed(frozen, "sha") == 0  # idempotent


def test_new_hire_starts_empty_and_learns_its_home_store(demo):  # noqa: F811
    store = InProcessStore()
    store.seed(_frozen(demo), "sha")
    row = known_request(demo, 0) | {"cashier_id": "NEW-HIRE"}
    first = store.fold("NEW-HIRE", row["store_id"], "n1", _stats(row))
    assert first[: feats.STATS_WIDTH].tolist() == [0.0] * feats.STATS_WIDTH
    second = store.fold("NEW-HIRE", None, "n2", _stats(row))  # no store_id: home store
    assert second[N] == 1
    assert second[feats.STORE_BLOCK + N] == first[feats.STORE_BLOCK + N] + 1


def test_unreachable_store_falls_back_to_frozen_then_backs_off(demo):  # noqa: F811
    """A Redis URL with nothing listening: frozen profile, reason recorded, no exception."""
    from serving.store.redis_store import RedisStore

    frozen = _frozen(demo)
    seen: list[tuple[str, str | None]] = []
    live = LiveProfiles(
        RedisStore(f"redis://127.0.0.1:{free_port()}/0", deadline_s=0.05),
        frozen,
        retry_s=60.0,
        on_lookup=lambda source, reason: seen.append((source, reason)),
    )
    row = known_request(demo, 0)
    prior, source = live.prior(row, feats.raw_row(row))
    assert source == FROZEN
    assert prior.tolist() == frozen.prior_for(row["cashier_id"], row["store_id"]).tolist()
    live.prior(row, feats.raw_row(row))
    assert seen == [(FROZEN, "unreachable"), (FROZEN, "backoff")]


def _app(demo, **kw) -> TestClient:  # noqa: F811
    settings = ServingSettings(model_dir=str(demo.path), debug_features=True, **kw)
    return TestClient(create_app(settings))


def test_app_request_n_plus_1_sees_request_n_and_4xx_changes_nothing(demo):  # noqa: F811
    new_hire = known_request(demo, 0) | {"cashier_id": "NEW-HIRE", "transaction_id": "a"}
    count = feats.FEATURE_NAMES.index("cashier_log_txn_count")
    with _app(demo) as client:
        one = client.post("/v1/predict", json=new_hire).json()
        bad = client.post("/v1/predict", json=new_hire | {"transaction_id": "b", "item_count": -1})
        assert bad.status_code == 400
        retry = client.post("/v1/predict", json=new_hire).json()
        two = client.post("/v1/predict", json=new_hire | {"transaction_id": "c"}).json()
        metrics = client.get("/metrics").text
    assert one["profile_source"] == LIVE
    assert one["features"][count] == 0.0
    assert retry["features"][count] == pytest.approx(np.log1p(1))
    assert two["features"][count] == pytest.approx(np.log1p(1))  # not 2: retry and 400 ignored
    assert 'pos_risk_profile_lookups_total{source="live"} 3.0' in metrics


def test_frozen_mode_and_debug_field_off_by_default(demo):  # noqa: F811
    row = known_request(demo, 0)
    with TestClient(create_app(ServingSettings(model_dir=str(demo.path)))) as client:
        body = client.post("/v1/predict", json=row).json()
    assert body["profile_source"] == LIVE and "features" not in body
    with _app(demo, profile_store="frozen") as client:
        first = client.post("/v1/predict", json=row | {"transaction_id": "x1"}).json()
        second = client.post("/v1/predict", json=row | {"transaction_id": "x2"}).json()
    assert first["profile_source"] == FROZEN and first["features"] == second["features"]


def test_app_with_unreachable_redis_scores_frozen_never_5xx(demo):  # noqa: F811
    url = f"redis://127.0.0.1:{free_port()}/0"
    with _app(demo, profile_store="redis", redis_url=url) as client:
        replies = [client.post("/v1/predict", json=known_request(demo, i)) for i in range(3)]
        metrics = client.get("/metrics").text
    assert [r.status_code for r in replies] == [200, 200, 200]
    assert {r.json()["profile_source"] for r in replies} == {FROZEN}
    assert 'pos_risk_profile_fallbacks_total{reason="unreachable"} 1.0' in metrics
    assert 'pos_risk_profile_fallbacks_total{reason="backoff"} 2.0' in metrics


def test_settings_pick_redis_when_redis_url_is_set(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    assert ServingSettings.from_env().profile_store == "redis"
    monkeypatch.delenv("REDIS_URL")
    assert ServingSettings.from_env().profile_store == "memory"
    with pytest.raises(ValueError, match="REDIS_URL"):
        ServingSettings(profile_store="redis")
