"""A POS that sends only the seed brief's seven fields, over real HTTP, to the real app serving
the model the real stages trained on the session's small data (``trained_pipeline``).

Unsent optional fields are missing to the models (not benign defaults). Blatant abuse that
the seven fields show must stand out: here, on the session's 30k rows (about 20 void and
no-sale abuse rows to train on, early stopping after ~16 rounds, the top of valid calibrated
at a few percent), it scores many times an ordinary basket's score; that it reaches High at
the default scale is ``tests/e2e/test_seed_contract_e2e.py``'s job. The timestamp is not
sent either, so it is "now", as for any such client: the cases hold whatever the hour.
"""

from __future__ import annotations

import pytest

from tests.conftest import BRIEF_REQUEST, post_json
from tests.integration.test_prometheus_stack import numba_cache, serve_app

pytestmark = pytest.mark.integration

BLATANT = {
    "many voids on a small basket": {"item_count": 3, "total_amount": 12.0, "void_count": 8},
    "several no-sales": {"item_count": 0, "total_amount": 0.0, "no_sale_count": 5},
    "a large weight variance": {"item_count": 6, "total_amount": 40.0, "weight_variance": 2.5},
}
"""Abuse the seven fields show (the world never generates more than 3 voids or no-sales)."""


def cashiers(bundle: str, n: int = 3) -> list[str]:
    """``n`` cashiers the served profiles know (spread over the sorted ids)."""
    from components.contracts.bundle import load_bundle

    table = load_bundle(bundle).load_profiles().to_pandas()
    ids = sorted(table.loc[table["level"] == "cashier", "key"])
    return ids[:: max(1, len(ids) // n)][:n]


def seven_field_scores(url: str, bundle: str, case: dict) -> list[tuple[str, float]]:
    """(risk level, score) of ``case`` sent with only the seven fields, per known cashier."""
    out = []
    for i, cashier in enumerate(cashiers(bundle)):
        request = {**BRIEF_REQUEST, **case, "transaction_id": f"S{i}", "cashier_id": cashier}
        assert set(request) == set(BRIEF_REQUEST)  # only the brief's seven fields are sent
        status, body = post_json(f"{url}/v1/predict", request)
        assert status == 200, body
        out.append((body["risk_level"], body["risk_score"]))
    return out


@pytest.fixture(scope="module")
def app(trained_pipeline, tmp_path_factory):
    work = tmp_path_factory.mktemp("seed-contract")
    with serve_app(trained_pipeline["bundle"], work, numba_cache(tmp_path_factory)) as (url, _):
        yield url


@pytest.mark.parametrize("case", list(BLATANT))
def test_blatant_abuse_through_the_seven_fields_stands_out(app, trained_pipeline, case):
    bundle = trained_pipeline["bundle"]
    ordinary = seven_field_scores(app, bundle, {})
    blatant = seven_field_scores(app, bundle, BLATANT[case])
    for (_, plain), (_, abuse) in zip(ordinary, blatant, strict=True):
        assert abuse >= 5 * plain, (case, plain, abuse)
    assert all(level != "High Risk" for level, _ in ordinary), ordinary
