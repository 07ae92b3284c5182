"""Arrow schemas and enumerations shared by every stage and by serving.

The raw transaction schema is what a POS terminal logs for one basket. The seed brief's
fields (``transaction_id, cashier_id, item_count, total_amount, void_count, no_sale_count,
weight_variance``) are kept verbatim; the rest is the context a real POS has. ``is_fraud``
and ``fraud_type`` are the labels, present in generated and historic data, absent from
requests.

``validate_table`` is the one place that checks a table against a schema; it raises
``SchemaError`` naming the source (file/URI) and the offending column.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

SCHEMA_VERSION = 1
"""Bumped whenever a schema below changes incompatibly; stored in bundles and checked by serving."""

LANE_TYPES = ("staffed", "self_checkout")
PAYMENT_TYPES = ("cash", "card", "mobile", "gift_card")
FRAUD_TYPES = (
    "none",
    "sweethearting",
    "void_abuse",
    "no_sale_abuse",
    "refund_fraud",
    "discount_abuse",
    "scan_avoidance",
)
RISK_LEVELS = ("Low Risk", "Medium Risk", "High Risk")
ACTIONS = {
    "Low Risk": "Log only",
    "Medium Risk": "Flag for post-shift audit",
    "High Risk": "Hold transaction: supervisor review",
}

TIMESTAMP = pa.timestamp("us")
"""Store-local wall-clock time, no time zone (what the POS prints on the receipt)."""

ID_MAX_LENGTH = 128
"""Longest id (characters, i.e. Unicode code points) accepted for transaction, cashier,
store and lane ids."""


@dataclass(frozen=True)
class Domain:
    """The values a transaction field may take: its Arrow type and, for requests, its bounds.

    ``ge``/``le`` are kept as written (int or float): the HTTP schema and its error messages
    render them verbatim. Upper bounds reject absurd requests; tables are only checked for
    the lower bound 0 (``NON_NEGATIVE_COLUMNS``).
    """

    arrow: pa.DataType
    ge: float | None = None
    le: float | None = None
    whole: bool = False
    """A count: whole numbers only (12 or 12.0)."""
    values: tuple[str, ...] = ()
    """An enumeration: the allowed strings."""
    max_length: int | None = None
    description: str | None = None
    """Shown in the OpenAPI schema of every field of this domain."""


ID = Domain(
    pa.string(),
    max_length=ID_MAX_LENGTH,
    description=f"Opaque id: any Unicode text of 1 to {ID_MAX_LENGTH} characters, "
    "compared exactly as sent (no trimming or normalization).",
)
TIME = Domain(
    TIMESTAMP,
    description="Store-local time of the transaction, RFC 3339 (an offset is optional "
    "and ignored: the wall-clock time is used); default: now.",
)
COUNT = Domain(pa.int32(), ge=0, le=10_000, whole=True, description="A whole number (12 or 12.0).")
AMOUNT = Domain(pa.float64(), ge=0.0, le=10_000_000.0)
SIGNED = Domain(pa.float64(), ge=-10_000.0, le=10_000.0)
WEIGHT_KG = Domain(pa.float64(), ge=0.0, le=100_000.0)
SECONDS = Domain(pa.float64(), ge=0.0, le=86_400.0)
FLAG = Domain(pa.bool_())
LANE_TYPE = Domain(pa.string(), values=LANE_TYPES)
PAYMENT_TYPE = Domain(pa.string(), values=PAYMENT_TYPES)


@dataclass(frozen=True)
class TransactionField:
    """One field of a POS transaction: in tables (non-nullable unless ``nullable``) and in requests."""

    name: str
    domain: Domain
    required: bool = False
    """Required in a scoring request (the seed brief's fields); the others are defaulted."""
    doc: str = ""
    nullable: bool = False
    """May be null in tables (the POS had nothing to log); absent from a request = null."""


TRANSACTION_FIELDS = (
    TransactionField("transaction_id", ID, required=True),
    TransactionField(
        "timestamp", TIME, doc="Store-local time of the transaction (RFC 3339); default: now."
    ),
    TransactionField("store_id", ID, doc="Store; default: the cashier's home store."),
    TransactionField("lane_id", ID),
    TransactionField("lane_type", LANE_TYPE),
    TransactionField("cashier_id", ID, required=True),
    TransactionField("item_count", COUNT, required=True),
    TransactionField("total_amount", AMOUNT, required=True),
    TransactionField("void_count", COUNT, required=True),
    TransactionField("void_amount", AMOUNT),
    TransactionField("post_payment_void", FLAG),
    TransactionField("no_sale_count", COUNT, required=True),
    TransactionField("refund_amount", AMOUNT),
    TransactionField("refund_no_receipt", FLAG),
    TransactionField("discount_amount", AMOUNT),
    TransactionField("price_override_count", COUNT),
    TransactionField("payment_type", PAYMENT_TYPE),
    TransactionField("weight_variance", SIGNED, required=True),
    TransactionField("basket_weight_kg", WEIGHT_KG),
    TransactionField("scan_duration_s", SECONDS),
    TransactionField(
        "customer_token",
        ID,
        nullable=True,
        doc="Salted hash of the customer's payment card or loyalty card; null when the "
        "customer stayed anonymous (cash, no loyalty card).",
    ),
)
"""The one description of a transaction: ``RAW_TRANSACTION`` (Arrow), the HTTP request
(``serving.schemas.PredictRequest``) and the MLflow signature (``register.logic``) derive
from it."""

REQUIRED_FIELDS = tuple(f.name for f in TRANSACTION_FIELDS if f.required)
"""The seed brief's fields: required in every scoring request."""

RAW_TRANSACTION = pa.schema(
    [pa.field(f.name, f.domain.arrow, nullable=f.nullable) for f in TRANSACTION_FIELDS]
)
"""One POS transaction as logged (no labels)."""

LABELS = pa.schema(
    [
        pa.field("is_fraud", pa.bool_(), nullable=False),
        pa.field("fraud_type", pa.string(), nullable=False),
    ]
)

LABELLED_TRANSACTION = pa.schema(list(RAW_TRANSACTION) + list(LABELS))
"""Generated / historic transactions: raw fields plus labels."""

COHORT_LABELS = pa.schema(
    [
        pa.field("cashier_hired_on", pa.date32()),
        pa.field("cashier_turned_on", pa.date32()),
        pa.field("cashier_left_on", pa.date32()),
    ]
)
"""Label-side facts about the transaction's cashier, for cohort metrics (never request
fields): ``cashier_hired_on`` first day employed (null: employed before the period),
``cashier_turned_on`` first day the cashier steals (null: honest; customer scan avoidance at
the cashier's SCO bank does not count), ``cashier_left_on`` first day no longer employed
(null: still employed at the end of the period). Evaluate derives its cohorts (established,
new hires, late turners, leavers, thieves) from these dates and its own time cut."""

GENERATED_TRANSACTION = pa.schema(list(LABELLED_TRANSACTION) + list(COHORT_LABELS))
"""What ``datagen`` writes and ``split``'s historic lake holds: labelled transactions plus
the cohort label columns (older data without them reads as nulls). Reading it as
``LABELLED_TRANSACTION`` drops the cohort columns (``validate_table`` ignores extras)."""

LIVE_LABELS = pa.schema(
    [pa.field("transaction_id", pa.string(), nullable=False), *LABELS, *COHORT_LABELS]
)
"""Held-out labels of the live stream (cohort labels included), joined by transaction_id
for online evaluation."""

NON_NEGATIVE_COLUMNS = (
    *(f.name for f in TRANSACTION_FIELDS if f.domain.ge == 0),
    "n",
)
"""Columns where a negative value is impossible (a data error, not an anomaly); ``n`` is
the profile tables' transaction count."""

ENUM_COLUMNS = {
    **{f.name: f.domain.values for f in TRANSACTION_FIELDS if f.domain.values},
    "fraud_type": FRAUD_TYPES,
}


class InputError(ValueError):
    """Bad input data or parameters, raised on purpose with a message naming the file (or
    flag) and the problem. Stage CLIs report it in one line and exit 2."""


class ServiceError(RuntimeError):
    """A service the stage needs (MLflow, S3) failed or cannot be reached: one line, exit 1."""


class SchemaError(InputError):
    """A table does not match its declared schema. The message names source and column."""


class DuplicateIds:
    """Counts repeated ids over a stream of chunks in 8 bytes per row (64-bit hashes).

    ``add`` each chunk's id column, then read ``duplicates``: rows whose id already occurred
    (a chance 64-bit collision among 10 million ids has probability ~3e-6).
    """

    def __init__(self) -> None:
        self._hashes: list = []

    def add(self, ids: pa.Array | pa.ChunkedArray) -> None:
        import numpy as np
        import pandas as pd

        values = np.asarray(ids.to_numpy(zero_copy_only=False), dtype=object)
        self._hashes.append(pd.util.hash_array(values, categorize=False))

    @property
    def duplicates(self) -> int:
        import numpy as np

        if not self._hashes:
            return 0
        hashes = np.concatenate(self._hashes)
        return int(hashes.size - np.unique(hashes).size)


def check_unique(ids: pa.Array | pa.ChunkedArray, *, source: str, column: str) -> None:
    """Raise ``SchemaError`` naming ``source``/``column`` when ``ids`` has repeated values."""
    counter = DuplicateIds()
    counter.add(ids)
    raise_on_duplicates(counter, source=source, column=column)


def raise_on_duplicates(counter: DuplicateIds, *, source: str, column: str) -> None:
    """Raise ``SchemaError`` when ``counter`` saw repeated ids."""
    if counter.duplicates:
        raise SchemaError(
            f"{source}: column '{column}' has {counter.duplicates} duplicate value(s) "
            "(ids must be unique)"
        )


def _uncastable_rows(col: pa.ChunkedArray, typ: pa.DataType) -> int:
    """Rows of ``col`` whose value cannot be cast to ``typ`` (checked per distinct value)."""
    import pyarrow.compute as pc

    distinct = pc.unique(col.drop_null())
    if len(distinct) > 100_000:
        return len(col) - col.null_count
    bad = []
    for value in distinct:
        try:
            pa.array([value.as_py()], type=col.type).cast(typ, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            bad.append(value.as_py())
    if not bad:
        return 0
    return int(pc.sum(pc.is_in(col, value_set=pa.array(bad, type=col.type))).as_py() or 0)


def validate_table(
    table: pa.Table, schema: pa.Schema, *, source: str, check_values: bool = True
) -> pa.Table:
    """Check ``table`` against ``schema`` and return it cast to the schema (column order too).

    Extra columns are dropped; a missing nullable column (an optional field added after the
    data was written) reads as nulls. Integer/float widths and timestamp units are cast
    safely; anything that cannot be cast (a string in a numeric column, say) is an error.

    Args:
        table: The table read from ``source``.
        schema: The declared schema.
        source: File or URI the table came from; named in every error.
        check_values: Also reject nulls in non-nullable columns, negative values in
            ``NON_NEGATIVE_COLUMNS``, NaN/inf in float columns and unknown enum values.

    Raises:
        SchemaError: Naming ``source`` and the first offending column.
    """
    import pyarrow.compute as pc

    if table.num_rows == 0:
        raise SchemaError(f"{source}: table is empty")
    columns = []
    for field in schema:
        if field.name not in table.column_names and field.nullable:
            # An optional field added after the data was written: absent = null.
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        if field.name not in table.column_names:
            raise SchemaError(
                f"{source}: missing column '{field.name}' (expected {field.type}); "
                f"found {', '.join(table.column_names)}"
            )
        col = table.column(field.name)
        if col.type != field.type:
            try:
                col = col.cast(field.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                bad = _uncastable_rows(col, field.type)
                rows = f" ({bad} row(s) cannot be read as {field.type})" if bad else ""
                raise SchemaError(
                    f"{source}: column '{field.name}' has type {col.type}, expected "
                    f"{field.type}{rows}"
                ) from exc
        if check_values:
            if not field.nullable and col.null_count:
                raise SchemaError(
                    f"{source}: column '{field.name}' has {col.null_count} null value(s)"
                )
            if pa.types.is_floating(field.type):
                bad = pc.sum(pc.invert(pc.is_finite(col))).as_py() or 0
                if bad:
                    raise SchemaError(
                        f"{source}: column '{field.name}' has {bad} NaN/infinite value(s)"
                    )
            if field.name in NON_NEGATIVE_COLUMNS:
                neg = pc.sum(pc.less(col, 0)).as_py() or 0
                if neg:
                    raise SchemaError(
                        f"{source}: column '{field.name}' has {neg} negative value(s)"
                    )
            if field.name in ENUM_COLUMNS:
                allowed = pa.array(ENUM_COLUMNS[field.name])
                unknown = pc.filter(col, pc.invert(pc.is_in(col, value_set=allowed)))
                if len(unknown):
                    raise SchemaError(
                        f"{source}: column '{field.name}' has unknown value "
                        f"{unknown[0].as_py()!r} (allowed: {', '.join(ENUM_COLUMNS[field.name])})"
                    )
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)
