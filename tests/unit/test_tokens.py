"""Customer-token features (``components.contracts.tokens``): checked against a direct,
non-incremental reference written from the stated rules, online against batch, and through
the bundle's profile table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from components.contracts import features as F
from components.contracts import tokens as T
from serving.store import InProcessStore
from tests.unit.test_features import make_tx

DAY = 86400.0


def reference(tx: pd.DataFrame) -> pd.DataFrame:
    """Per row, from the rules alone: sum(x_j * exp(-(t_i - t_j) / DECAY_S)) over the earlier
    rows with the same (cashier, token) / the same token (time order: no late arrivals);
    NaN for a row without a token."""
    t = F.raw_matrix(tx)[:, F.Raw.epoch_s]
    cashier, token = tx["cashier_id"].to_numpy(), tx["customer_token"].to_numpy()
    refund = (tx["refund_amount"] > 0).to_numpy(dtype=float)
    out = []
    for i in range(len(tx)):
        if pd.isna(token[i]):
            out.append(dict.fromkeys(F.TOKEN_FEATURES, math.nan))
            continue
        same = np.array([token[j] == token[i] for j in range(i)], dtype=bool)
        mine = same & (cashier[:i] == cashier[i])
        w = np.exp(-(t[i] - t[:i]) / T.DECAY_S)
        visits, pair = (w * same).sum(), (w * mine).sum()
        out.append(
            {
                "token_cashier_visits": pair,
                "token_visits": visits,
                "token_cashier_share": pair / (visits + 1.0),
                "token_cashier_refunds": (w * mine * refund[:i]).sum(),
                "token_refunds": (w * same * refund[:i]).sum(),
            }
        )
    return pd.DataFrame(out)


def batch(tx: pd.DataFrame, state: F.ProfileState | None = None) -> pd.DataFrame:
    state = state or F.ProfileState()
    raw = F.raw_matrix(tx)
    prior = state.advance(raw, tx["cashier_id"], tx["store_id"], tx["customer_token"])
    return pd.DataFrame(F.compute_features(raw, prior), columns=list(F.FEATURE_NAMES))


def _spread(tx: pd.DataFrame, days: float) -> pd.DataFrame:
    """``tx`` stretched over ``days`` (so the 30-day decay matters), refunds made common."""
    tx = tx.copy()
    t0 = tx["timestamp"].iloc[0]
    tx["timestamp"] = t0 + (tx["timestamp"] - t0) * (days / 5.0)
    tx["refund_amount"] = np.where(np.arange(len(tx)) % 4 == 0, 20.0, 0.0)
    return tx


def test_token_features_match_the_direct_definition():
    tx = _spread(make_tx(400, seed=5, cashiers=4), days=90)
    got, want = batch(tx), reference(tx)
    for name in F.TOKEN_FEATURES:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-12, err_msg=name)
    sent = tx["customer_token"].notna().to_numpy()
    assert want.loc[sent, "token_cashier_visits"].max() > 3  # friends really come back
    assert want.loc[sent, "token_cashier_refunds"].max() > 0.5
    assert np.isnan(got.loc[~sent, list(F.TOKEN_FEATURES)]).all(axis=None)


def test_a_missing_token_adds_nothing_to_any_state():
    tx = _spread(make_tx(300, seed=8, cashiers=3), days=40)
    sent = tx["customer_token"].notna().to_numpy()
    with_gaps, only_sent = F.ProfileState(), F.ProfileState()
    full = batch(tx, with_gaps)
    kept = batch(tx[sent].reset_index(drop=True), only_sent)
    np.testing.assert_array_equal(
        full.loc[sent, list(F.TOKEN_FEATURES)].to_numpy(), kept[list(F.TOKEN_FEATURES)].to_numpy()
    )
    assert with_gaps.tokens.pairs.keys() == only_sent.tokens.pairs.keys()
    for key, state in with_gaps.tokens.tokens.items():
        np.testing.assert_array_equal(state, only_sent.tokens.tokens[key])


def _online(rows: list[dict], store: InProcessStore | None = None) -> pd.DataFrame:
    store = store or InProcessStore()
    out = []
    for i, row in enumerate(rows):
        raw = F.raw_row(row)
        values = F.fold_values(raw)[0]
        prior = store.fold(row["cashier_id"], row["store_id"], f"t{i}", values, row["token"])
        out.append(F.compute_features(raw, prior)[0])
    return pd.DataFrame(out, columns=list(F.FEATURE_NAMES))


def _requests(tx: pd.DataFrame) -> list[dict]:
    rows = []
    for row in tx.to_dict("records"):
        token = row.pop("customer_token")
        row = {**row, "timestamp": row["timestamp"].isoformat()}
        token = None if pd.isna(token) else token
        rows.append(row | ({} if token is None else {"customer_token": token}) | {"token": token})
    return rows


def test_the_in_process_store_folds_what_the_batch_stage_folds():
    tx = _spread(make_tx(300, seed=9, cashiers=3), days=60)
    np.testing.assert_array_equal(
        _online(_requests(tx))[list(F.TOKEN_FEATURES)].to_numpy(),
        batch(tx)[list(F.TOKEN_FEATURES)].to_numpy(),
    )


def test_late_arrival_is_taken_at_the_states_last_time():
    base = make_tx(1).iloc[0].to_dict() | {"refund_amount": 0.0, "customer_token": "K1"}
    t0 = pd.Timestamp("2026-01-05 08:00")
    days = [0.0, 30.0, 10.0, 60.0]  # the third arrives late (older than the pair's last visit)
    tx = pd.DataFrame([base | {"timestamp": t0 + pd.Timedelta(days=d)} for d in days])
    online = _online(_requests(tx))["token_cashier_visits"].tolist()
    e = math.exp(-1.0)  # 30 days
    assert online[:3] == pytest.approx([0.0, e, 1.0 + e])  # late: nothing decayed
    assert online[3] == pytest.approx((e + 1.0 + 1.0) * e)
    assert batch(tx)["token_cashier_visits"].tolist() == pytest.approx(online)  # same rule


def test_the_bundle_carries_the_history_and_unknown_tokens_read_as_never_seen():
    tx = _spread(make_tx(200, seed=4, cashiers=3), days=20)
    state = F.ProfileState()
    batch(tx, state)
    index = F.ProfileIndex(state.to_table())
    assert index.tokens.pairs.keys() == state.tokens.pairs.keys()
    last = tx[tx["customer_token"].notna()].iloc[-1]
    prior = index.prior_for(last["cashier_id"], last["store_id"], last["customer_token"])
    pair = state.tokens.pairs[T.pair_key(last["cashier_id"], last["customer_token"])]
    np.testing.assert_array_equal(prior[F.PAIR_BLOCK : F.TOKEN_BLOCK], pair)
    np.testing.assert_array_equal(
        prior[F.TOKEN_BLOCK :], state.tokens.tokens[last["customer_token"]]
    )
    fresh = index.prior_for(last["cashier_id"], last["store_id"], "NEVER-SEEN")
    np.testing.assert_array_equal(fresh[F.PAIR_BLOCK :], 0.0)
    got = F.compute_features(F.raw_row(last.to_dict() | {"customer_token": "NEVER-SEEN"}), fresh)
    named = dict(zip(F.FEATURE_NAMES, got[0], strict=True))
    assert [named[n] for n in F.TOKEN_FEATURES] == [0.0] * len(F.TOKEN_FEATURES)
    # The in-process store seeded from the bundle continues the batch history.
    store = InProcessStore()
    store.seed(index, "sha")
    assert store.pairs.keys() == state.tokens.pairs.keys()


def test_pair_keys_cannot_collide():
    assert T.pair_key("a|b", "c") != T.pair_key("a", "b|c")
    assert T.pair_key("é", "x") != T.pair_key("e", "x")
