"""The fast path under ``bulk_insert_interactions``: COPY on PostgreSQL, executemany on SQLite.

Both paths skip the ORM and SQLAlchemy's per-row parameter handling, which cost more CPU than
the database itself at 100k rows. Values still go through each column type's own bind
processor, so what is stored is exactly what the ORM would have stored.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import Table, TableClause
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.db import translate_error


def new_uuid_bytes(count: int) -> np.ndarray:
    """``count`` time-ordered version-7 UUIDs (RFC 9562: milliseconds, then random bits) as a
    ``(count, 16)`` uint8 array, made in one batch.

    Time order puts each batch at the right edge of the primary-key index instead of on random
    pages all over it, which matters once a tenant's index outgrows the database's cache (10M
    rows: ~400 MB).
    """
    raw = np.frombuffer(os.urandom(16 * count), dtype=np.uint8).reshape(count, 16).copy()
    millis = time.time_ns() // 1_000_000
    raw[:, :6] = np.frombuffer(millis.to_bytes(6, "big"), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x70  # version 7
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw


def new_uuid_hex(count: int) -> list[str]:
    """``new_uuid_bytes`` as 32-digit hex: both drivers accept this form for a UUID column, and
    building ``uuid.UUID`` objects one by one was the largest client-side cost of a bulk insert.
    """
    digits = new_uuid_bytes(count).tobytes().hex()
    return [digits[start : start + 32] for start in range(0, 32 * count, 32)]


def unique_uuids(ids: np.ndarray) -> np.ndarray:
    """The distinct rows of ``ids`` (``(n, 16)`` uint8), in the order they first appear."""
    return ids[first_of_each_row(np.ascontiguousarray(ids).view(np.uint64))]


_MIX = np.uint64(0x9E3779B97F4A7C15)


def row_hashes(keys: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row of ``keys`` (``(n, k)`` uint64): equal rows, equal hashes."""
    hashes = keys[:, 0].copy()
    with np.errstate(over="ignore"):
        for column in range(1, keys.shape[1]):
            hashes = (hashes ^ (hashes >> np.uint64(29))) * _MIX ^ keys[:, column]
        return (hashes ^ (hashes >> np.uint64(32))) * _MIX


def first_of_each_row(keys: np.ndarray) -> np.ndarray:
    """Positions of the first occurrence of each distinct row of ``keys`` (``(n, k)``
    uint64), in input order.

    Rows are sorted by a 64-bit hash (one sort of n integers), then each row is compared with
    its neighbour: exact whatever the hash does. Only if two different rows share a hash does
    it sort the rows themselves (``np.lexsort`` over k keys, 2.5 times slower on 1M rows of 6
    keys; ``np.unique`` of 16-byte ids as numpy voids was the largest client cost of a bulk
    import)."""
    if not len(keys):
        return np.zeros(0, dtype=np.int64)
    hashes = row_hashes(keys)
    order = np.argsort(hashes)  # numpy's fastest sort; not stable, hence the min below
    ordered = hashes[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    members = keys[order]
    # Exact: rows next to each other in hash order differ exactly where a hash group starts.
    if np.array_equal(np.any(members[1:] != members[:-1], axis=1), starts[1:]):
        firsts = np.minimum.reduceat(order, np.flatnonzero(starts))  # each group's earliest row
    else:  # a hash shared by different rows
        order = np.lexsort(keys.T[::-1])
        ordered_keys = keys[order]
        starts[1:] = np.any(ordered_keys[1:] != ordered_keys[:-1], axis=1)
        firsts = order[starts]  # lexsort is stable: the first of equal rows came first
    return np.sort(firsts)


# PostgreSQL's binary COPY format: a signature, flags and header extension length, then one
# tuple per row (int16 field count, then int32 length + bytes per field), then -1.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_TRAILER = b"\xff\xff"
PG_EPOCH_MICROSECONDS = 946_684_800_000_000  # 2000-01-01, PostgreSQL's timestamp zero


def binary_copy_data(
    columns: Sequence[np.ndarray | None], texts: Sequence[str], text_codes: np.ndarray
) -> bytes:
    """Rows in PostgreSQL's binary COPY format, built by numpy, not row by row.

    ``columns`` hold fixed-width values in order: ``(n, 16)`` uint8 for a uuid, or ``(n,)``
    big-endian numbers (``>i4``, ``>f8``, ``>i8`` for a timestamp in microseconds since 2000);
    the one ``None`` among them is the text column, whose value in row i is
    ``texts[text_codes[i]]``. Rows come out grouped by text (each group has one fixed width).
    """
    if sum(column is None for column in columns) != 1:
        raise ValueError("exactly one column must be the text column (None)")
    parts = [_COPY_HEADER]
    count = np.dtype(">i2")
    for code, text in enumerate(texts):
        rows = np.flatnonzero(text_codes == code)
        if not len(rows):
            continue
        encoded = text.encode()
        fields: list[tuple[str, Any]] = [("fields", count)]
        for index, column in enumerate(columns):
            fields.append((f"length{index}", ">i4"))
            if column is None:
                fields.append((f"value{index}", f"S{len(encoded)}"))
            elif column.ndim == 2:
                fields.append((f"value{index}", column.dtype, column.shape[1:]))
            else:
                fields.append((f"value{index}", column.dtype))
        group = np.empty(len(rows), dtype=np.dtype(fields))
        group["fields"] = len(columns)
        for index, column in enumerate(columns):
            if column is None:
                group[f"length{index}"] = len(encoded)
                group[f"value{index}"] = encoded
            else:
                group[f"length{index}"] = column.dtype.itemsize * (
                    column.shape[1] if column.ndim == 2 else 1
                )
                group[f"value{index}"] = column[rows]
        parts.append(group.tobytes())
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


async def copy_binary(
    connection: AsyncConnection,
    table: Table | TableClause,
    columns: Sequence[str],
    data: bytes,
) -> None:
    """PostgreSQL: COPY ``data`` (``binary_copy_data``) into ``table`` on the session's own
    asyncpg connection, inside the caller's transaction (as ``copy_records``)."""
    import asyncpg

    raw = await connection.get_raw_connection()
    try:
        await raw.driver_connection.copy_to_table(  # type: ignore[union-attr]
            table.name,
            source=memoryview(data),  # bytes would be taken for a path
            columns=list(columns),
            schema_name=table.schema,
            format="binary",
        )
    except asyncpg.PostgresError as exc:
        raise translate_error(exc) from exc


async def copy_records(
    connection: AsyncConnection,
    table: Table | TableClause,
    columns: Sequence[str],
    records: list[tuple],
) -> None:
    """PostgreSQL: stream ``records`` with COPY on the session's own asyncpg connection.

    The caller must already be inside a transaction (e.g. a SAVEPOINT), so the rows commit or
    roll back with the rest of the session's work.
    """
    import asyncpg

    raw = await connection.get_raw_connection()
    try:
        await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
            table.name, records=records, columns=list(columns), schema_name=table.schema
        )
    except asyncpg.PostgresError as exc:
        raise translate_error(exc) from exc


def _bind_processors(table: Table, columns: Sequence[str], dialect: Dialect) -> list[Any]:
    return [table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns]


async def executemany_records(
    connection: AsyncConnection,
    table: Table,
    columns: Sequence[str],
    records: list[tuple],
    *,
    preprocessed: frozenset[str] = frozenset(),
) -> None:
    """Any backend: one prepared INSERT run over all ``records`` by the driver.

    Columns named in ``preprocessed`` already hold their storage form and are passed as is.
    """
    dialect = connection.dialect
    processors = [
        None if name in preprocessed else processor
        for name, processor in zip(columns, _bind_processors(table, columns, dialect), strict=True)
    ]
    active = [(index, p) for index, p in enumerate(processors) if p is not None]
    params = []
    for record in records:
        values = list(record)
        for index, process in active:
            values[index] = process(values[index])
        params.append(tuple(values))
    placeholders = ", ".join(["?"] * len(columns)) if dialect.paramstyle == "qmark" else None
    if placeholders is None:
        raise NotImplementedError(f"executemany fast path needs qmark, not {dialect.paramstyle}")
    statement = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({placeholders})"
    await connection.exec_driver_sql(statement, params)
