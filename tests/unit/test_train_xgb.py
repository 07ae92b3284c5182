"""train-xgb logic: training data checks, imbalance weight, early stopping, leave-one-type-out folds,
metrics, and the atomic model-folder / MLflow-guard helpers."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import xgboost as xgb
from published import publish_in_place
from sklearn.metrics import roc_auc_score
from train_synthetic import features_table

from components.contracts.features import FEATURE_NAMES, LABEL_COLUMNS
from components.contracts.layout import SUBSET_COLUMN
from components.contracts.training import (
    MlflowLoggingError,
    TrainingData,
    TrainingDataError,
    mlflow_guard,
    ranking_metrics,
    recall_at_fpr,
    training_data,
)
from components.train_xgb import logic

FAST = {"n_estimators": 40, "max_depth": 3, "early_stopping_rounds": 5, "nthread": 1}


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return features_table(4000, seed=11, fraud_rate=0.12)


@pytest.fixture(scope="module")
def data(table) -> TrainingData:
    return training_data(table, FEATURE_NAMES, source="features.parquet")


def _set_labels(table: pa.Table, subset: str, value: bool) -> pa.Table:
    label = LABEL_COLUMNS[0]
    mask = pc.equal(table.column(SUBSET_COLUMN), subset)
    column = pc.if_else(mask, pa.scalar(value), table.column(label))
    return table.set_column(table.schema.get_field_index(label), label, column)


# ------------------------------------------------------------------ training data


def test_training_data_takes_features_in_feature_names_order(table, data):
    assert data.feature_names == FEATURE_NAMES
    train = table.filter(pc.equal(table.column(SUBSET_COLUMN), "train"))
    for j in (0, len(FEATURE_NAMES) // 2, len(FEATURE_NAMES) - 1):
        np.testing.assert_array_equal(data.train.X[:, j], train.column(FEATURE_NAMES[j]).to_numpy())
    assert data.train.n == 2400 and data.valid.n == 800  # test rows are never used
    assert data.train.positives == int(pc.sum(train.column("is_fraud")).as_py())


def test_training_data_reordered_columns_give_same_matrix(table, data):
    shuffled = table.select(list(reversed(table.column_names)))
    again = training_data(shuffled, FEATURE_NAMES)
    np.testing.assert_array_equal(again.train.X, data.train.X)


@pytest.mark.parametrize("column", [FEATURE_NAMES[3], SUBSET_COLUMN, LABEL_COLUMNS[1]])
def test_missing_column_names_file_and_column(table, column):
    broken = table.drop_columns([column])
    with pytest.raises(TrainingDataError, match=rf"features\.parquet: missing column.*'{column}'"):
        training_data(broken, FEATURE_NAMES, source="features.parquet")


def test_non_numeric_feature_is_rejected(table):
    name = FEATURE_NAMES[0]
    broken = table.set_column(
        table.schema.get_field_index(name), name, pc.cast(table.column(name), pa.string())
    )
    with pytest.raises(TrainingDataError, match=f"'{name}' must be numeric"):
        training_data(broken, FEATURE_NAMES, source="f.parquet")


def test_no_positives_in_train_is_rejected(table):
    with pytest.raises(TrainingDataError, match="subset 'train' has no fraud rows"):
        training_data(_set_labels(table, "train", False), FEATURE_NAMES, source="f.parquet")


def test_no_positives_allowed_when_not_required(table):
    data = training_data(_set_labels(table, "train", False), FEATURE_NAMES, require_positives=False)
    assert data.train.positives == 0


def test_empty_valid_subset_is_rejected(table):
    no_valid = table.filter(pc.not_equal(table.column(SUBSET_COLUMN), "valid"))
    with pytest.raises(TrainingDataError, match="subset 'valid' is empty"):
        training_data(no_valid, FEATURE_NAMES, source="f.parquet")


def test_only_fraud_in_valid_is_rejected(table):
    with pytest.raises(TrainingDataError, match="subset 'valid' has only fraud rows"):
        training_data(_set_labels(table, "valid", True), FEATURE_NAMES)


# ------------------------------------------------------------------ metrics


def test_recall_at_fpr_hand_computed():
    # 100 negatives, 4 positives. With no false positive the threshold stays above the
    # negative at 0.95 (2 positives caught); one false positive (1% FPR) lets it drop to
    # 0.94 (3 caught). The positive at 0.5 needs far more false positives.
    y = np.array([0] * 100 + [1] * 4)
    score = np.array([*np.linspace(0.0, 0.9, 99), 0.95, 0.99, 0.97, 0.94, 0.5])
    assert recall_at_fpr(y, score, 0.01) == pytest.approx(0.75)
    assert recall_at_fpr(y, score, 0.0) == pytest.approx(0.5)


def test_ranking_metrics_single_class_is_nan():
    out = ranking_metrics(np.zeros(5), np.arange(5.0))
    assert all(np.isnan(v) for v in out.values())


def test_ranking_metrics_perfect_score():
    y = np.array([0, 0, 1, 1])
    assert ranking_metrics(y, np.array([0.1, 0.2, 0.8, 0.9])) == {
        "roc_auc": 1.0,
        "pr_auc": 1.0,
        "recall_at_1pct_fpr": 1.0,
    }


# ------------------------------------------------------------------ training


def test_imbalance_weight_is_negatives_over_positives():
    assert logic.imbalance_weight(np.array([0] * 95 + [1] * 5)) == pytest.approx(19.0)
    assert logic.imbalance_weight(np.zeros(3)) == 1.0


@pytest.mark.parametrize(
    ("field", "value"),
    [("n_estimators", 0), ("learning_rate", 0.0), ("subsample", 1.5), ("scale_pos_weight", -1.0)],
)
def test_invalid_hyperparameters_are_rejected(field, value):
    with pytest.raises(ValueError, match=f"{field}="):
        logic.XgbParams(**{field: value})


def test_early_stopping_trims_booster_to_best_iteration(data):
    params = logic.XgbParams(**{**FAST, "n_estimators": 300, "learning_rate": 0.3})
    result = logic.train_booster(data.train, data.valid, data.feature_names, params)
    # The synthetic signal saturates quickly: training stops long before 300 rounds, exactly
    # early_stopping_rounds after the best iteration.
    assert result.rounds_trained < 300
    assert result.rounds_trained == result.best_iteration + 1 + params.early_stopping_rounds
    assert result.booster.num_boosted_rounds() == result.best_iteration + 1
    assert result.booster.feature_names == list(FEATURE_NAMES)
    assert result.valid_metrics["pr_auc"] > 0.8
    assert result.scale_pos_weight == pytest.approx(logic.imbalance_weight(data.train.y))


def test_no_early_stopping_trains_all_rounds(data):
    params = logic.XgbParams(**{**FAST, "n_estimators": 12, "early_stopping_rounds": 0})
    result = logic.train_booster(data.train, data.valid, data.feature_names, params)
    assert result.booster.num_boosted_rounds() == 12 and result.best_iteration == 11


def test_scale_pos_weight_override_reaches_xgboost(data):
    params = logic.XgbParams(**{**FAST, "n_estimators": 3, "scale_pos_weight": 2.5})
    result = logic.train_booster(data.train, data.valid, data.feature_names, params)
    assert result.scale_pos_weight == 2.5
    config = json.loads(result.booster.save_config())
    assert float(config["learner"]["objective"]["reg_loss_param"]["scale_pos_weight"]) == 2.5


def test_trimmed_booster_survives_ubj_round_trip(data, tmp_path):
    params = logic.XgbParams(**FAST)
    result = logic.train_booster(data.train, data.valid, data.feature_names, params)
    path = tmp_path / "xgb.ubj"
    result.booster.save_model(str(path))
    loaded = xgb.Booster(model_file=str(path))
    assert loaded.feature_names == list(FEATURE_NAMES)
    dm = xgb.DMatrix(data.valid.X, feature_names=list(FEATURE_NAMES))
    np.testing.assert_array_equal(loaded.predict(dm), result.booster.predict(dm))


FOLD = logic.FoldParams(loto_rounds=30, loto_learning_rate=0.3, loto_legit_fraction=0.5)


def test_a_fold_booster_never_sees_its_held_out_type(data):
    held_out = "scan_avoidance"
    params = logic.XgbParams(**FAST)
    fold, dropped = logic.train_fold(data, held_out, params, FOLD)
    in_train = int(np.sum(data.train.fraud_type == held_out))
    in_valid = int(np.sum(data.valid.fraud_type == held_out))
    assert in_train > 0 and in_valid > 0
    assert dropped == {"train": in_train, "valid": in_valid}
    assert fold.n_valid == data.valid.n - in_valid
    assert fold.train_positives == data.train.positives - in_train
    # Leak test: scramble the held-out type's rows (features AND labels) in train and valid;
    # the fold booster comes out byte-identical, so nothing of them reached it.
    rng = np.random.default_rng(0)

    def scrambled(subset):
        X, y = subset.X.copy(), subset.y.copy()
        rows = subset.fraud_type == held_out
        X[rows] = rng.normal(size=(int(rows.sum()), X.shape[1]))
        y[rows] = 0
        return type(subset)(X, y, subset.fraud_type)

    other = TrainingData(data.feature_names, scrambled(data.train), scrambled(data.valid))
    again, _ = logic.train_fold(other, held_out, params, FOLD)
    assert again.booster.save_raw("ubj") == fold.booster.save_raw("ubj")
    # Behaviour: each fraud type shifts its own features, so the fold booster cannot tell
    # the held-out type's rows from legitimate ones, while the production booster can.
    production = logic.train_booster(data.train, data.valid, data.feature_names, params)
    rows = np.isin(data.valid.fraud_type, [held_out, "none"])
    dm = xgb.DMatrix(data.valid.X[rows], feature_names=list(FEATURE_NAMES))
    y = data.valid.y[rows]
    production_auc = roc_auc_score(y, production.booster.predict(dm))
    assert production_auc > 0.9
    assert roc_auc_score(y, fold.booster.predict(dm)) < production_auc - 0.2


def test_train_models_makes_one_fold_per_fraud_type(data):
    models = logic.train_models(data, logic.XgbParams(**FAST), FOLD)
    types = sorted(set(data.train.fraud_type[data.train.y == 1]))
    assert sorted(models.folds) == types == logic.fold_types(data)
    flat = logic.flat_metrics(models)
    assert {"valid_pr_auc", "loto_train_seconds"} <= set(flat)
    assert all(f"loto_{t}_best_iteration" in flat for t in types)


def test_zero_loto_rounds_disables_the_folds(data):
    models = logic.train_models(data, logic.XgbParams(**FAST), logic.FoldParams(loto_rounds=0))
    assert models.folds == {}
    assert not any(k.startswith("loto") for k in logic.flat_metrics(models))


def test_fold_without_positives_left_is_a_clear_error(table):
    # Every fraud row of train becomes one type: nothing left to learn from without it.
    mask = pc.and_(pc.equal(table.column(SUBSET_COLUMN), "train"), table.column("is_fraud"))
    types = pc.if_else(mask, pa.scalar("void_abuse"), table.column("fraud_type"))
    table = table.set_column(table.schema.get_field_index("fraud_type"), "fraud_type", types)
    data = training_data(table, FEATURE_NAMES)
    with pytest.raises(TrainingDataError, match="fold without fraud type 'void_abuse'"):
        logic.train_fold(data, "void_abuse", logic.XgbParams(**FAST), FOLD)


# ------------------------------------------------------------------ output helpers
# (publishing the model folder: tests/unit/test_storage_publish.py)


def test_mlflow_guard_names_the_store():
    with (
        pytest.raises(
            MlflowLoggingError,
            match=r"MLflow logging failed \(tracking URI http://x\)"
            r": ConnectionError: refused",
        ),
        mlflow_guard("logging", "http://x"),
    ):
        raise ConnectionError("refused")


def test_cli_bad_input_exits_2_without_output(tmp_path, local_env, table, capsys):
    from components.train_xgb.__main__ import main

    path = tmp_path / "features.parquet"
    pq.write_table(table.drop_columns([FEATURE_NAMES[5]]), path)
    publish_in_place(path)
    out = tmp_path / "model"
    code = main(["--in-features", str(path), "--out-model", str(out), "--n-estimators", "3"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"train-xgb: error: {path}: missing column(s) '{FEATURE_NAMES[5]}'")
    assert not out.exists()


def test_held_out_cashiers_rows_are_never_trained_on(table):
    """``features`` marks held-out cashiers' train/valid rows ``holdout``: not in any matrix."""
    from components.contracts.layout import HOLDOUT

    cashier = table.column("cashier_id")
    first = cashier[0].as_py()
    subset = table.column(SUBSET_COLUMN)
    held = pc.and_(pc.equal(cashier, first), pc.not_equal(subset, "test"))
    marked = table.set_column(
        table.schema.get_field_index(SUBSET_COLUMN),
        SUBSET_COLUMN,
        pc.if_else(held, pa.scalar(HOLDOUT), subset),
    )
    n_held = pc.sum(held).as_py()
    assert n_held > 0
    before, after = training_data(table, FEATURE_NAMES), training_data(marked, FEATURE_NAMES)
    assert after.train.n + after.valid.n == before.train.n + before.valid.n - n_held
