"""Strict request-body decoding (``serving.body.decode_body``): pure, no app, no server."""

from __future__ import annotations

import json

import msgspec
import pytest

from serving.body import BodyError, decode_body
from serving.schemas import ID_MAX_LENGTH, BatchRequest, PredictRequest
from tests.conftest import BRIEF_REQUEST

ONE = msgspec.json.Decoder(PredictRequest, strict=True)
BATCH = msgspec.json.Decoder(BatchRequest, strict=True)
JSON = "application/json"


def _raw(**change) -> bytes:
    return json.dumps({**BRIEF_REQUEST, **change}).encode()


def _with(raw_member: bytes) -> bytes:
    """BRIEF_REQUEST plus one raw JSON member (``b'"key": value'``) appended verbatim."""
    return _raw()[:-1] + b", " + raw_member + b"}"


def _refused(body: bytes, decoder=ONE, content_type: str | None = JSON) -> BodyError:
    with pytest.raises(BodyError) as info:
        decode_body(body, content_type, decoder)
    return info.value


@pytest.mark.parametrize(
    "content_type",
    [JSON, "application/json; charset=utf-8", 'Application/JSON;Charset="UTF-8"', None, ""],
)
def test_json_content_types_are_accepted(content_type):
    assert decode_body(_raw(), content_type, ONE).item_count == 12


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin-1",
    ],
)
def test_other_content_types_are_415(content_type):
    error = _refused(_raw(), content_type=content_type)
    assert error.status == 415
    assert "application/json" in error.detail or "UTF-8" in error.detail


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("item_count", "12"),  # a string for a count
        ("item_count", 12.5),  # not a whole number
        ("void_count", True),  # a bool for a count
        ("post_payment_void", 0),  # a number for a bool
        ("refund_no_receipt", "true"),  # a string for a bool
        ("cashier_id", 12),  # a number for an id
        ("store_id", 7),
        ("total_amount", "150.00"),  # a string for an amount
        ("timestamp", 1_700_000_000),  # epoch seconds for an RFC 3339 time
        ("timestamp", "2026-01-10"),  # a date alone
        ("lane_type", "Staffed"),  # enums are case-sensitive
    ],
)
def test_mistyped_fields_are_400_naming_the_field(field, value):
    error = _refused(_raw(**{field: value}))
    assert error.status == 400 and error.key == field
    assert error.detail.startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("field", "value"),
    [("item_count", 12.0), ("price_override_count", 3.0), ("total_amount", 150)],
)
def test_json_numbers_are_numbers(field, value):
    """12.0 is a whole number (JSON Schema's integer) and 150 a valid amount."""
    assert getattr(decode_body(_raw(**{field: value}), JSON, ONE), field) == value


def test_errors_inside_a_batch_name_the_item_and_field():
    body = json.dumps(
        {"transactions": [BRIEF_REQUEST, {**BRIEF_REQUEST, "no_sale_count": "1"}]}
    ).encode()
    error = _refused(body, BATCH)
    assert error.key == "transactions[1].no_sale_count"


@pytest.mark.parametrize(
    ("member", "key"),
    [
        (b'"item_count": 13', "item_count"),  # a known field twice
        (b'"note": 1, "note": 2', "note"),  # an ignored field twice
        (b'"x": {"a": 1, "a": 2}', "a"),  # inside a nested object
        (b'"\\u0069tem_count": 12', "item_count"),  # the same key, spelled with an escape
    ],
)
def test_duplicate_keys_are_400(member, key):
    error = _refused(_with(member))
    assert error.status == 400 and "duplicate key" in error.detail and error.key == key


def test_duplicate_key_inside_a_batch_item_is_400():
    item = _with(b'"cashier_id": "C002"')
    error = _refused(b'{"transactions": [' + _raw() + b", " + item + b"]}", BATCH)
    assert error.status == 400 and error.key == "cashier_id"


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 50_000 + b"]" * 50_000,  # the 50,000-deep array, as the whole body
        _with(b'"x": ' + b"[" * 50_000 + b"]" * 50_000),  # and inside an ignored field
        _with(b'"x": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    ],
)
def test_deep_nesting_is_400_not_a_recursion_error(body):
    error = _refused(body)
    assert error.status == 400


def test_deep_nesting_error_names_the_problem():
    assert "nested too deeply" in _refused(_with(b'"x": ' + b"[" * 50_000 + b"]" * 50_000)).detail


@pytest.mark.parametrize(
    ("member", "key"),
    [
        (b'"total_amount": 1e400', "total_amount"),  # overflows a double
        (b'"item_count": ' + b"9" * 400, "item_count"),
        (b'"weight_variance": -1e999', "weight_variance"),
        (b'"void_amount": 1e30', "void_amount"),  # finite but absurd
    ],
)
def test_huge_numbers_are_400_naming_the_field(member, key):
    error = _refused(_with(member))
    assert error.status == 400 and error.key == key


def test_huge_numbers_in_ignored_fields_do_not_break_the_duplicate_check():
    """The stdlib scanner refuses ints over 4,300 digits; numbers are never converted."""
    assert decode_body(_with(b'"note": ' + b"9" * 5000), JSON, ONE).item_count == 12


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"nan"])
def test_nan_and_infinity_literals_are_400(literal):
    error = _refused(_with(b'"total_amount": ' + literal))
    assert error.status == 400 and "malformed" in error.detail


@pytest.mark.parametrize(
    "body",
    [
        _raw(cashier_id="X").replace(b'"X"', b'"\xff\xfe"'),  # invalid bytes in a string
        _with(b'"note": "\xc3"'),  # truncated sequence, in an ignored field
        _raw().replace(b"{", b"{\xed\xa0\x80", 1),  # an encoded surrogate
    ],
)
def test_invalid_utf8_is_400(body):
    error = _refused(body)
    assert error.status == 400 and "UTF-8" in error.detail


@pytest.mark.parametrize(
    "cashier",
    ["Zoë", "收银员-07", "Кассир 3", "🧾" * ID_MAX_LENGTH, " ", "a\tb", "C\u0301"],
)
def test_ids_are_any_unicode_text_up_to_the_limit(cashier):
    decoded = decode_body(_raw(cashier_id=cashier, store_id=cashier), JSON, ONE)
    assert decoded.cashier_id == cashier and decoded.store_id == cashier


@pytest.mark.parametrize("cashier", ["", "x" * (ID_MAX_LENGTH + 1), "🧾" * (ID_MAX_LENGTH + 1)])
def test_empty_or_overlong_ids_are_400(cashier):
    for field in ("transaction_id", "cashier_id", "store_id", "lane_id"):
        error = _refused(_raw(**{field: cashier}))
        assert error.status == 400 and error.key == field
