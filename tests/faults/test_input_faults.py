"""Bad inputs where they enter each stage: one line naming file, column (or key) and the
count of bad rows, exit 2, never a traceback. Every case runs the real stage CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from faultlib import clean_env, run_stage, the_error, unpublished_copy, write_published
from published import publish_in_place
from train_synthetic import features_table

from components.contracts import storage

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    return clean_env(tmp_path_factory.mktemp("faults-input") / "var")


@pytest.fixture(scope="module")
def transactions(tmp_path_factory, env) -> pa.Table:
    """A small labelled transactions table made by the real datagen CLI."""
    out = tmp_path_factory.mktemp("faults-datagen") / "transactions"
    proc = run_stage(
        "datagen", "--rows", "3000", "--days", "16", "--stores", "2", "--seed", "5",
        "--out-transactions", str(out), env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return storage.read_table(str(out))


@pytest.fixture(scope="module")
def lake(tmp_path_factory, transactions, env) -> dict[str, Path]:
    """The real split CLI's historic lake and time splits of ``transactions``."""
    root = tmp_path_factory.mktemp("faults-split")
    write_published(transactions, root / "tx.parquet")
    proc = split(root / "tx.parquet", root, env)
    assert proc.returncode == 0, proc.stderr
    return {"historic": root / "historic", "time_splits": root / "time_splits.json"}


def split(src: Path, out: Path, env, *extra: str):
    return run_stage(
        "split", "--in-transactions", str(src), "--out-historic", str(out / "historic"),
        "--out-live-stream", str(out / "live.jsonl"),
        "--out-live-labels", str(out / "live_labels.parquet"),
        "--out-time-splits", str(out / "time_splits.json"), *extra, env=env,
    )  # fmt: skip


def refused(proc, stage: str, *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr
    line = the_error(proc.stderr, stage)
    for needle in needles:
        assert needle in line, line
    return line


def with_column(table: pa.Table, name: str, values) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def duplicated(table: pa.Table, n: int) -> pa.Table:
    """``table`` whose first ``n`` rows' ids are repeated on the next ``n`` rows."""
    ids = table.column("transaction_id").to_pylist()
    ids[n : 2 * n] = ids[:n]
    return with_column(table, "transaction_id", pa.array(ids))


# ---------------------------------------------------------------- split


def test_split_duplicate_ids(transactions, tmp_path, env):
    src = write_published(duplicated(transactions, 7), tmp_path / "tx.parquet")
    proc = split(src, tmp_path, env)
    refused(proc, "split", str(src), "'transaction_id'", "7 duplicate")
    assert not (tmp_path / "historic").exists() and not (tmp_path / "live.jsonl").exists()


def test_split_label_not_boolean(transactions, tmp_path, env):
    src = tmp_path / "tx.parquet"
    labels = np.where(transactions.column("is_fraud").to_numpy(zero_copy_only=False), "yes", "no")
    labels = labels.astype(object)
    labels[:3] = "true"  # readable as a boolean: not counted
    write_published(with_column(transactions, "is_fraud", pa.array(labels)), src)
    refused(split(src, tmp_path, env), "split", str(src), "'is_fraud'", f"{len(labels) - 3} row(s)")


def test_split_period_too_short_names_the_file(transactions, tmp_path, env):
    src = write_published(transactions, tmp_path / "tx.parquet")
    refused(split(src, tmp_path, env, "--live-days", "30"), "split", str(src), "too short")


# ---------------------------------------------------------------- features


def features(lake_dir: Path, splits: Path, out: Path, env):
    return run_stage(
        "features", "--in-historic", str(lake_dir), "--in-time-splits", str(splits),
        "--out-features", str(out / "features.parquet"),
        "--out-profiles", str(out / "profiles.parquet"), env=env,
    )  # fmt: skip


def test_features_duplicate_ids_across_days(lake, tmp_path, env):
    bad = unpublished_copy(lake["historic"], tmp_path / "historic")
    days = sorted(p for p in bad.iterdir() if p.name.startswith("date="))
    first = pq.read_table(next(days[0].glob("*.parquet")))
    later_file = next(days[-1].glob("*.parquet"))
    later = pq.read_table(later_file)
    ids = later.column("transaction_id").to_pylist()
    ids[:4] = first.column("transaction_id").to_pylist()[:4]
    pq.write_table(with_column(later, "transaction_id", pa.array(ids)), later_file)
    publish_in_place(bad)  # a well-published lake whose rows repeat ids across days
    proc = features(bad, lake["time_splits"], tmp_path, env)
    refused(proc, "features", str(bad), "'transaction_id'", "4 duplicate")
    assert not (tmp_path / "features.parquet").exists()


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ({"train_end": "yesterday"}, ("'train_end'",)),
        ([1, 2, 3], ("JSON object",)),
    ],
    ids=["bad-timestamp", "not-an-object"],
)
def test_features_bad_time_splits_name_the_key(lake, tmp_path, env, content, needles):
    splits = storage.read_json(str(lake["time_splits"]))
    bad = tmp_path / "splits.json"
    bad.write_text(json.dumps({**splits, **content} if isinstance(content, dict) else content))
    publish_in_place(bad)
    refused(features(lake["historic"], bad, tmp_path, env), "features", str(bad), *needles)


# ---------------------------------------------------------------- training stages

SIGNAL_FEATURE = "void_ratio"  # >= 0 by construction (not in features.SIGNED_FEATURES)


def _inf(t):
    x = t.column(SIGNAL_FEATURE).to_numpy().copy()
    x[:5] = np.inf
    return with_column(t, SIGNAL_FEATURE, pa.array(x)), ("'void_ratio'", "5 row(s)", "infinite")


def _nan(t):
    # void_ratio may be missing (a client that does not send void_amount); a feature of the
    # seed brief's required fields may not.
    x = t.column("no_sale_count").to_numpy().astype(np.float64)
    x[:6] = np.nan
    return with_column(t, "no_sale_count", pa.array(x)), ("'no_sale_count'", "6 row(s)", "NaN")


def _negative(t):
    x = t.column(SIGNAL_FEATURE).to_numpy().copy()
    x[:8] = -1.0
    return with_column(t, SIGNAL_FEATURE, pa.array(x)), ("'void_ratio'", "8 row(s)", "negative")


def _label_strings(t):
    y = np.where(t.column("is_fraud").to_numpy(zero_copy_only=False), "yes", "no")
    return with_column(t, "is_fraud", pa.array(y)), ("'is_fraud'", f"{len(y)} row(s)")


def _label_two(t):
    y = t.column("is_fraud").to_numpy(zero_copy_only=False).astype(np.int64)
    y[:9] = 2
    return with_column(t, "is_fraud", pa.array(y)), ("'is_fraud'", "9 row(s)", "0 or 1")


def _subset(t):
    s = t.column("subset").to_pylist()
    s[-10:] = ["live"] * 10  # live-period rows never belong in the feature table
    return with_column(t, "subset", pa.array(s)), (
        "'subset'",
        "10 row(s)",
        "train, valid, test, holdout",
    )


def _dups(t):
    return duplicated(t, 3), ("'transaction_id'", "3 duplicate")


TRAINING_CASES = {
    "inf": _inf,
    "nan": _nan,
    "negative": _negative,
    "label-strings": _label_strings,
    "label-two": _label_two,
    "subset": _subset,
    "duplicate-ids": _dups,
}


@pytest.mark.parametrize("stage", ["train_xgb", "train_iforest"])
@pytest.mark.parametrize("case", list(TRAINING_CASES))
def test_training_rejects_what_the_model_must_not_see(stage, case, tmp_path, env):
    table, needles = TRAINING_CASES[case](features_table(1500, seed=1, fraud_rate=0.1))
    src = write_published(table, tmp_path / "features.parquet")
    proc = run_stage(
        stage, "--in-features", str(src), "--out-model", str(tmp_path / "model"),
        "--n-estimators", "5", env=env,
    )  # fmt: skip
    line = refused(proc, stage.replace("_", "-"), str(src), *needles)
    assert "xgboost" not in line.lower() and "[bt]" not in proc.stderr  # no C++ backtrace
    assert not (tmp_path / "model").exists()


# ---------------------------------------------------------------- evaluate


def evaluate(trained, tmp_path: Path, env, *, features=None, xgb=None, iforest=None):
    return run_stage(
        "evaluate", "--in-features", str(features or trained["features"]),
        "--in-xgb-model", str(xgb or trained["xgb"]),
        "--in-iforest-model", str(iforest or trained["iforest"]),
        "--out-evaluation", str(tmp_path / "evaluation"), env=env,
    )  # fmt: skip


def test_evaluate_duplicate_ids(trained, tmp_path, env):
    features = storage.read_table(str(trained["features"]))
    src = write_published(duplicated(features, 11), tmp_path / "features.parquet")
    refused(evaluate(trained, tmp_path, env, features=src), "evaluate", str(src), "11 duplicate")
    assert not (tmp_path / "evaluation").exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage-zip"])
def test_evaluate_corrupt_forest_is_one_line(trained, tmp_path, env, damage):
    bad = unpublished_copy(trained["iforest"], tmp_path / "iforest")
    data = (bad / "forest.npz").read_bytes()
    data = data[: len(data) // 2] if damage == "truncated" else b"PK\x03\x04" + b"\x00" * 64
    (bad / "forest.npz").write_bytes(data)
    publish_in_place(bad)  # the marker matches the damaged bytes: evaluate's reader refuses
    proc = evaluate(trained, tmp_path, env, iforest=bad)
    refused(proc, "evaluate", str(bad / "forest.npz"), "not a readable .npz")


def test_evaluate_corrupt_xgb_is_one_line(trained, tmp_path, env):
    bad = unpublished_copy(trained["xgb"], tmp_path / "xgb")
    data = (bad / "xgb.ubj").read_bytes()
    (bad / "xgb.ubj").write_bytes(data[: len(data) // 2])
    publish_in_place(bad)
    refused(evaluate(trained, tmp_path, env, xgb=bad), "evaluate", str(bad / "xgb.ubj"))


def test_evaluate_records_the_digests_of_what_it_scored(trained):
    metrics = storage.open_output(str(trained["evaluation"])).read_json("metrics.json")
    digests = metrics["inputs"]["model_digests"]
    for role, folder in (("xgb_model", trained["xgb"]), ("iforest_model", trained["iforest"])):
        assert digests[role], role
        published = storage.open_output(str(folder))
        for name, digest in digests[role].items():
            assert digest == published.files[name]["sha256"], (role, name)
            assert digest == storage.sha256_bytes(published.read_bytes(name)), (role, name)
    assert {"xgb.ubj", "meta.json"} <= set(digests["xgb_model"])
    assert "forest.npz" in digests["iforest_model"]


def test_negative_count_in_profiles_is_a_schema_error():
    from faultlib import profiles_table

    from components.contracts import features as F
    from components.contracts.schemas import SchemaError, validate_table

    table = profiles_table()
    table = with_column(table, "n", pc.negate(table.column("n")))
    with pytest.raises(SchemaError, match=r"column 'n' has .* negative"):
        validate_table(table, F.PROFILE_SCHEMA, source="profiles.parquet")
