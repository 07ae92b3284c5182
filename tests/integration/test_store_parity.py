"""Parity, proven: the live stream replayed through the real app, in time order, is served
with exactly the features the batch features stage computes over historic + live data.

The data is the session's real pipeline run (``trained_pipeline``: datagen -> split ->
features -> ... -> register on small data). The batch side is the features stage's own code:
``feature_chunk`` day by day over the historic lake (checked against the stage's output
files), then the same steps (sort, ``raw_matrix``, ``ProfileState.advance``,
``compute_features``) day by day over the live stream. The served side is the app with
``DEBUG_FEATURES`` (the vector it scored, off by default): in-process store through
Litestar's test client, and Redis behind ``uvicorn --workers 3`` (requests land on different
processes; the state lives in Redis).

Tolerance: profile counts and every feature that does not depend on running sums are
bit-equal; the rest agree to ``rtol=1e-9, atol=1e-9``. The batch stage computes a row's
prior as ``cumsum - value + start`` over a day's chunk (vectorized), serving as a running
``start + v1 + v2 + ...``: the same sums, rounded in a different order (about 1e-13 relative),
which the z-score's variance term can amplify by a few orders of magnitude. The shift counts
and hours (``windows``) are bit-equal too: integer sums and copied timestamps. The decayed
last-hour sums are folded by the same numba code in process and by Lua in Redis: the same
operations in the same order with the C library's ``exp`` on both sides, so bit-equal here,
but only held to the tolerance (another libm could round ``exp`` differently by 1 ulp).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from litestar.testing import TestClient

from components.contracts import features as F
from components.contracts import storage
from components.contracts.layout import TimeBoundaries
from components.contracts.schemas import LABELLED_TRANSACTION, RAW_TRANSACTION
from components.features.logic import feature_chunk
from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import free_port, post_json, running

pytestmark = pytest.mark.integration

RTOL = ATOL = 1e-9
EXACT = [
    j
    for j, name in enumerate(F.FEATURE_NAMES)
    if name in F.TRANSACTION_FEATURES
    or name.endswith("log_txn_count")
    or (name.startswith("shift_") and name.endswith(("_count", "_hours")))
]


@pytest.fixture(scope="module")
def replay(trained_pipeline) -> tuple[list[dict], np.ndarray, str]:
    """(live requests in time order, their batch features, the bundle folder)."""
    p = trained_pipeline
    splits = TimeBoundaries.from_json(storage.open_output(p["time_splits"]).read_json())
    state = F.ProfileState()
    historic = []
    for date in storage.list_partitions(p["historic"], "date"):
        table = storage.read_table(
            p["historic"], LABELLED_TRANSACTION, filter=ds.field("date") == date
        )
        historic.append(feature_chunk(table.to_pandas(), state, splits))
    stage = pq.read_table(p["features"])
    ours = pd.concat([t.to_pandas() for t in historic], ignore_index=True)
    assert ours[list(F.FEATURE_NAMES)].equals(stage.to_pandas()[list(F.FEATURE_NAMES)])
    assert state.to_table().equals(
        pq.read_table(p["profiles"]).select(state.to_table().schema.names)
    )

    live = storage.read_jsonl(p["live_stream"], RAW_TRANSACTION, require_marker=False).to_pandas()
    live = live.sort_values(["timestamp", "transaction_id"], kind="stable").reset_index(drop=True)
    features = []
    for _, day in live.groupby(live["timestamp"].dt.date, sort=True):
        raw = F.raw_matrix(day)
        prior = state.advance(raw, day["cashier_id"].to_numpy(), day["store_id"].to_numpy())
        features.append(F.compute_features(raw, prior))
    requests = []
    for row in live.to_dict("records"):
        row["timestamp"] = row["timestamp"].isoformat()
        row = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        # a null customer_token reads back as NaN: a request leaves it out (JSON has no NaN)
        requests.append({k: v for k, v in row.items() if not (isinstance(v, float) and v != v)})
    return requests, np.vstack(features), p["bundle"]


def assert_parity(served: np.ndarray, batch: np.ndarray) -> None:
    assert served.shape == batch.shape
    np.testing.assert_array_equal(served[:, EXACT], batch[:, EXACT])
    np.testing.assert_allclose(served, batch, rtol=RTOL, atol=ATOL)
    diff = np.abs(served - batch)
    print(
        f"parity over {len(batch)} live transactions: max |diff| {diff.max():.3g}, "
        f"max rel {(diff / np.maximum(np.abs(batch), 1e-300)).max():.3g}, "
        f"bit-equal cells {(diff == 0).mean():.4%}"
    )


def test_in_process_store_serves_the_batch_features(replay):
    requests, batch, bundle = replay
    settings = ServingSettings(model_dir=bundle, debug_features=True)
    with TestClient(create_app(settings)) as client:
        served = []
        for body in requests:
            reply = client.post("/v1/predict", json=body)
            assert reply.status_code == 200, reply.text
            assert reply.json()["profile_source"] == "live"
            served.append(reply.json()["features"])
    assert_parity(np.asarray(served), batch)


def test_redis_store_behind_three_workers_serves_the_batch_features(
    replay, redis_server, tmp_path, tmp_path_factory
):
    requests, batch, bundle = replay
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "MODEL_DIR": bundle,
        "REDIS_URL": redis_server,
        "STORE_NAMESPACE": f"parity-{port}",
        "DEBUG_FEATURES": "true",
        "NUMBA_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "numba-cache"),
        # a loaded 2-core machine must not turn into frozen fallbacks mid-replay
        "STORE_DEADLINE_MS": "2000",
    }
    env.pop("API_KEY", None)
    cmd = [
        sys.executable, "-m", "uvicorn", "--factory", "serving.app:create_app",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "3", "--log-level", "warning",
    ]  # fmt: skip
    with running(cmd, f"{url}/healthz", env=env, log=tmp_path / "app.log", timeout=240):
        served = []
        for body in requests:
            status, reply = post_json(f"{url}/v1/predict", body)
            assert status == 200, reply
            assert reply["profile_source"] == "live", reply
            served.append(reply["features"])
    assert_parity(np.asarray(served), batch)
