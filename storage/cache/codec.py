"""Value encoding shared by every cache backend.

Plain payloads are the orjson bytes themselves, so counters written by ``INCRBY`` (``b"42"``)
decode like any other value. Large payloads are zlib-compressed behind a NUL header byte, which
can never start a JSON document, so both forms decode without a flag stored elsewhere.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from storage.errors import InvalidData

COMPRESSED_HEADER = b"\x00"
_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def encode(value: Any, compress_min_bytes: int) -> bytes:
    """Serialize ``value``; compress it when longer than ``compress_min_bytes`` and it pays off."""
    try:
        raw = orjson.dumps(value, option=_DUMP_OPTIONS)
    except TypeError as exc:
        raise InvalidData(f"cannot cache a value of type {type(value).__name__}: {exc}") from exc
    if len(raw) <= compress_min_bytes:
        return raw
    packed = COMPRESSED_HEADER + zlib.compress(raw, 6)
    return packed if len(packed) < len(raw) else raw


def decode(payload: bytes | None) -> Any:
    """The value ``encode`` produced, or ``None`` for a missing payload."""
    if payload is None:
        return None
    try:
        if payload[:1] == COMPRESSED_HEADER:
            payload = zlib.decompress(payload[1:])
        return orjson.loads(payload)
    except (zlib.error, orjson.JSONDecodeError) as exc:
        raise InvalidData(f"cached payload is not a valid encoded value: {exc}") from exc
