"""Blatant abuse sent through the seed contract's seven fields scores High (issue 13, "Must
hold"), with the model the default pipeline trains (200k rows, every stage through the local
runner), served by the real app over HTTP; an ordinary seven-field basket does not.

The session's small model cannot show this (``tests/integration/test_seed_contract_http.py``
says why), so this test pays for one default-size run.
"""

from __future__ import annotations

import pytest

from components.contracts.settings import Settings
from pipelines.compile import DEFAULT_PIPELINE_YAML
from pipelines.runner import Runner, RunOptions, record
from tests.e2e.test_pipeline_e2e import env  # noqa: F401  (the run's temp VAR_DIR)
from tests.integration.test_prometheus_stack import numba_cache, serve_app
from tests.integration.test_seed_contract_http import BLATANT, seven_field_scores

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def served(env, tmp_path_factory):  # noqa: F811
    rec = Runner(Settings.from_env(), out=None).run(DEFAULT_PIPELINE_YAML, RunOptions(params={}))
    assert rec.status == record.RUN_SUCCEEDED
    bundle = rec.tasks["register"].outputs["bundle"]["uri"]
    work = tmp_path_factory.mktemp("seed-contract-e2e")
    with serve_app(bundle, work, numba_cache(tmp_path_factory)) as (url, _):
        yield url, bundle


@pytest.mark.parametrize("case", list(BLATANT))
def test_blatant_abuse_through_the_seven_fields_scores_high(served, case):
    levels = seven_field_scores(*served, BLATANT[case])
    assert all(level == "High Risk" for level, _ in levels), (case, levels)


def test_an_ordinary_seven_field_basket_is_not_high(served):
    levels = seven_field_scores(*served, {})
    assert all(level != "High Risk" for level, _ in levels), levels
