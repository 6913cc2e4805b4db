"""How big a client-supplied value may be: every bound of the API's inputs, in one place.

The HTTP body as a whole is capped by ``RECSERVE_MAX_BODY_BYTES`` (``graph_api.http``); inside
it, each string, list and JSON value has its own bound here, so one request can neither store
more than a column holds (SQLite would keep it, PostgreSQL would fail with a driver error) nor
make later reads slow or impossible. Numbers must be finite everywhere: JSON has no NaN or
Infinity, and a stored one breaks every client that parses the item afterwards.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from graph_api.errors import BadUserInput
from storage.bounds import JSON_DEPTH, METADATA_BYTES, json_depth
from storage.models import Item


def _column_chars(name: str) -> int:
    length = Item.__table__.c[name].type.length  # type: ignore[attr-defined]
    assert isinstance(length, int)
    return length


# Item fields: the column sizes where there is a column, generous but finite elsewhere.
TITLE_CHARS = _column_chars("title")
EXTERNAL_ID_CHARS = _column_chars("external_id")
CATEGORY_CHARS = _column_chars("category")
DESCRIPTION_CHARS = 20_000
TAGS = 50
TAG_CHARS = 100

# Queries and recommendation options.
SEARCH_CHARS = 200
NAME_CHARS = 64  # algorithm, strategy, engine and interaction type names
CATEGORIES = 50
EXCLUDE_ITEM_IDS = 500
WEIGHTS = 32
ALGORITHMS = 32

# Bulk writes: rows per importItems / importInteractions call.
IMPORT_ROWS = 10_000

# Login: anything longer cannot match a registered account (registration bounds the same).
EMAIL_CHARS = 320
PASSWORD_CHARS = 1024
DOMAIN_CHARS = 255


def check_text(field: str, value: str | None, max_chars: int) -> None:
    if value is not None and len(value) > max_chars:
        raise BadUserInput(f"{field} must be at most {max_chars} characters.", field=field)


def check_list(field: str, values: Sequence[Any] | None, max_items: int) -> None:
    if values is not None and len(values) > max_items:
        raise BadUserInput(f"{field} takes at most {max_items} entries.", field=field)


def check_number(field: str, value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise BadUserInput(f"{field} must be a finite number.", field=field)


def check_json(
    field: str, value: Any, *, max_bytes: int = METADATA_BYTES, max_depth: int = JSON_DEPTH
) -> None:
    """A JSON value no deeper than ``max_depth``, at most ``max_bytes`` serialised, with only
    finite numbers at any depth."""
    if json_depth(value) > max_depth:
        raise BadUserInput(f"{field} must be nested at most {max_depth} levels deep.")
    try:
        size = len(json.dumps(value, allow_nan=False, separators=(",", ":")).encode())
    except ValueError as error:  # NaN or ±Infinity somewhere inside
        raise BadUserInput(f"{field} must contain only finite numbers.") from error
    if size > max_bytes:
        raise BadUserInput(f"{field} must be at most {max_bytes} bytes as JSON.")
