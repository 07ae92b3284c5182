"""The transaction is described once (``TRANSACTION_FIELDS``); its three renderings agree.

Checked field by field: the Arrow schema of tables, the HTTP request as its OpenAPI schema
shows it (what msgspec validates), the MLflow model signature and the pyfunc's required
fields: same names, same required/optional split, compatible types, same constraints.
"""

from __future__ import annotations

import json
from datetime import datetime

import msgspec
import pyarrow as pa
import pytest

from components.contracts import features as F
from components.contracts.schemas import (
    ENUM_COLUMNS,
    NON_NEGATIVE_COLUMNS,
    RAW_TRANSACTION,
    REQUIRED_FIELDS,
    TRANSACTION_FIELDS,
)
from components.datagen.logic import DatagenParams, generate
from components.register import logic as register
from serving.schemas import PredictRequest, openapi_components

NAMES = [f.name for f in TRANSACTION_FIELDS]
REQUEST = openapi_components()["PredictRequest"]

# Arrow type -> (JSON Schema type and format of the request field, MLflow type)
RENDERINGS = {
    "string": ("string", None, "string"),
    "timestamp[us]": ("string", "date-time", "string"),
    "int32": ("number", None, "long"),
    "double": ("number", None, "double"),
    "bool": ("boolean", None, "boolean"),
}


def request_property(name: str) -> dict:
    """The request field's JSON Schema, without the ``| null`` of optional fields."""
    prop = REQUEST["properties"][name]
    if "anyOf" in prop:
        (prop,) = [p for p in prop["anyOf"] if p != {"type": "null"}]
    return prop


def test_same_fields_everywhere():
    signature = register.model_signature().inputs
    assert RAW_TRANSACTION.names == NAMES
    assert set(PredictRequest.__struct_fields__) == set(NAMES)
    assert set(REQUEST["properties"]) == set(NAMES)
    assert signature.input_names() == NAMES


def test_same_required_fields_everywhere():
    signature = register.model_signature().inputs
    assert REQUEST["required"] == list(REQUIRED_FIELDS)
    assert [c.name for c in signature.inputs if c.required] == list(REQUIRED_FIELDS)
    # The fields a client may leave out (missing -> NaN features) are optional ones.
    assert set(F.MASKABLE_FIELDS) <= set(NAMES) - set(REQUIRED_FIELDS)


@pytest.mark.parametrize("spec", TRANSACTION_FIELDS, ids=lambda f: f.name)
def test_types_and_constraints_agree(spec):
    arrow = RAW_TRANSACTION.field(spec.name)
    prop = request_property(spec.name)
    mlflow_type = {c.name: c.type.name for c in register.model_signature().inputs.inputs}
    assert arrow.nullable == spec.nullable
    json_type, json_format, ml_type = RENDERINGS[str(arrow.type)]
    assert mlflow_type[spec.name] == ml_type
    if spec.domain.values:
        assert prop == {"enum": sorted(spec.domain.values)}
        assert tuple(ENUM_COLUMNS[spec.name]) == spec.domain.values
        return
    assert prop["type"] == json_type
    assert prop.get("format") == json_format
    assert prop.get("minimum") == spec.domain.ge
    assert prop.get("maximum") == spec.domain.le
    assert (prop.get("multipleOf") == 1) == pa.types.is_integer(arrow.type)
    assert (spec.name in NON_NEGATIVE_COLUMNS) == (spec.domain.ge == 0)
    if json_type == "string" and not json_format:
        assert prop["minLength"] == 1 and prop["maxLength"] == spec.domain.max_length


def test_generated_transactions_are_valid_requests():
    """The request constraints admit every transaction the generator (a model of real POS
    data) produces, and a decoded request keeps its values."""
    params = DatagenParams(rows=2_000, days=3, stores=2, cashiers_per_store=4, seed=5)
    table = pa.concat_tables(list(generate(params))).select(NAMES)
    rows = table.to_pylist()
    for row in rows:
        body = json.dumps(row, default=datetime.isoformat)
        request = msgspec.json.decode(body, type=PredictRequest)
        assert {n: request[n] for n in NAMES} == row, row["transaction_id"]


def test_data_written_before_an_optional_field_existed_reads_it_as_null():
    """``customer_token`` is nullable: a table without the column validates, with nulls."""
    from components.contracts.schemas import validate_table

    params = DatagenParams(rows=300, days=1, stores=1, cashiers_per_store=3, seed=1)
    old = pa.concat_tables(list(generate(params))).select(NAMES).drop_columns(["customer_token"])
    table = validate_table(old, RAW_TRANSACTION, source="old.parquet")
    assert table.column("customer_token").null_count == old.num_rows
    with pytest.raises(ValueError, match="missing column 'item_count'"):
        validate_table(old.drop_columns(["item_count"]), RAW_TRANSACTION, source="old.parquet")
