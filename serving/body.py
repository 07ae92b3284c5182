"""Strict JSON request bodies: bytes -> msgspec Struct, or a ``BodyError`` naming the problem.

One function, ``decode_body``, used by the app for every JSON body (pure: no Litestar, no
I/O). The rules, in the order they are checked:

1. ``Content-Type`` must be ``application/json`` (charset, if given, ``utf-8``): else 415.
2. The body must be UTF-8: else 400 with the byte offset.
3. msgspec decodes it *strictly* into the route's Struct: no coercion (``"12"`` is not a
   count, ``0`` is not a bool, ``12.5`` is not a count, a number is not a string id; ``12.0``
   is a count, as in JSON Schema), every ``Meta`` constraint checked, NaN/Infinity
   literals and out-of-range numbers refused.
   A failure is a 400 naming the field (``transactions[3].item_count``).
4. Nesting deeper than the interpreter's recursion limit (what msgspec and the stdlib
   parser can walk) is a 400, not a ``RecursionError``.
5. No JSON object anywhere in the body may repeat a key: parsers disagree about which
   value wins (msgspec keeps the last), so a duplicate is refused rather than guessed.
   msgspec has no such check; the stdlib scanner does it with a pairs hook, after the
   typed decode succeeded (numbers are not converted: the hook only needs the keys).
   This costs about as much as the typed decode itself (a few microseconds per request,
   a few milliseconds per 1000-transaction batch).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

JSON_MEDIA_TYPE = "application/json"


class BodyError(Exception):
    """A request body the API refuses: HTTP status, one-line detail, offending field."""

    def __init__(self, status: int, detail: str, key: str | None = None, message: str = ""):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.key = key
        self.message = message or detail


def check_content_type(value: str | None) -> None:
    """Refuse (415) a declared type other than ``application/json`` (absent or utf-8 charset).

    A request with no Content-Type at all is read as JSON: many POS clients (and ``curl -d``)
    send none, and the body is still validated strictly.
    """
    if not (value or "").strip():
        return
    media, _, params = value.partition(";")
    if media.strip().lower() != JSON_MEDIA_TYPE:
        raise BodyError(415, f"Content-Type must be {JSON_MEDIA_TYPE} (got {value!r})")
    for param in params.split(";"):
        name, _, charset = param.partition("=")
        if name.strip().lower() == "charset" and charset.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise BodyError(415, f"JSON bodies are UTF-8; charset {charset.strip()!r} is refused")


def _field_path(where: str) -> str:
    # msgspec locates errors as "$.transactions[3].item_count"; the API names
    # "transactions[3].item_count" (and "" for the body itself).
    return where.removeprefix("$").removeprefix(".")


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> None:
    if len(pairs) != len({key for key, _ in pairs}):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BodyError(
                    400,
                    f"duplicate key {key!r} in a JSON object",
                    key=key,
                    message="duplicate key",
                )
            seen.add(key)


_KEYS_ONLY = json.JSONDecoder(
    object_pairs_hook=_refuse_duplicates,
    # Numbers are not needed, only keys: ``len`` (a C function) keeps them as their length,
    # which skips float parsing and the 4,300-digit limit of int().
    parse_int=len,
    parse_float=len,
)
"""The stdlib scanner, used only to see every object's keys (built once: ``json.loads``
with options builds a decoder per call)."""


def decode_body(body: bytes, content_type: str | None, decoder: msgspec.json.Decoder[T]) -> T:
    """Decode one JSON request body with the rules in the module docstring.

    Args:
        body: The raw request body.
        content_type: The request's ``Content-Type`` header (None when absent).
        decoder: A ``msgspec.json.Decoder(Struct, strict=True)`` for the route.

    Raises:
        BodyError: With the HTTP status (400 or 415), a one-line detail and the field.
    """
    check_content_type(content_type)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(400, f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        value = decoder.decode(body)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `")
        message = message.replace("that's a multiple of 1.0", "that is a whole number")
        key = _field_path(where.rstrip("`"))
        raise BodyError(400, f"{key or 'body'}: {message}", key=key, message=message) from None
    except msgspec.DecodeError as exc:
        raise BodyError(400, str(exc)) from None
    except RecursionError:
        raise BodyError(400, "JSON is nested too deeply") from None
    try:
        _KEYS_ONLY.decode(text)
    except RecursionError:
        raise BodyError(400, "JSON is nested too deeply") from None
    return value
