"""Write a tenant's data out as files the importer reads back (``recserve export``).

Four files in the importer's default column names (``ingest.files``): items,
users, interactions and ratings, as JSON Lines or Parquet. Users are written as their user
key (an imported user's own id, anyone else's e-mail), e-mail and username: never a password
hash, role or preference. Every table is streamed from the database in chunks and written
chunk by chunk, so memory does not grow with the tenant.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ingest.writer import Progress, user_key
from storage.db import Database
from storage.repositories import exports

FORMATS = ("jsonl", "parquet")


@dataclass(frozen=True)
class ExportCounts:
    items: int
    users: int
    interactions: int
    ratings: int


def _item(row: exports.ExportedItem) -> dict[str, Any]:
    return {
        "external_id": row.external_id,
        "title": row.title,
        "description": row.description,
        "category": row.category,
        "tags": list(row.tags or []),
        "metadata": json.dumps(row.metadata or {}, separators=(",", ":")),
        "active": bool(row.is_active),
    }


def _user(row: exports.ExportedUser) -> dict[str, Any]:
    return {"user": user_key(row.email), "email": row.email, "username": row.username}


def _interaction(row: exports.ExportedInteraction) -> dict[str, Any]:
    return {
        "user": user_key(row.email),
        "item": row.external_id,
        "type": row.interaction_type,
        "value": float(row.value),
        "time": row.created_at,
    }


def _rating(row: exports.ExportedRating) -> dict[str, Any]:
    return {
        "user": user_key(row.email),
        "item": row.external_id,
        "rating": float(row.rating),
        "time": row.updated_at,
    }


def _schemas() -> dict[str, Any]:
    import pyarrow as pa

    time = pa.timestamp("us", tz="UTC")
    return {
        "items": pa.schema(
            [
                ("external_id", pa.string()),
                ("title", pa.string()),
                ("description", pa.string()),
                ("category", pa.string()),
                ("tags", pa.list_(pa.string())),
                ("metadata", pa.string()),
                ("active", pa.bool_()),
            ]
        ),
        "users": pa.schema(
            [("user", pa.string()), ("email", pa.string()), ("username", pa.string())]
        ),
        "interactions": pa.schema(
            [
                ("user", pa.string()),
                ("item", pa.string()),
                ("type", pa.string()),
                ("value", pa.float64()),
                ("time", time),
            ]
        ),
        "ratings": pa.schema(
            [("user", pa.string()), ("item", pa.string()), ("rating", pa.float64()), ("time", time)]
        ),
    }


class _JsonLinesWriter:
    def __init__(self, path: Path) -> None:
        self._handle = path.open("w", encoding="utf-8")

    def write(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            values = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
            self._handle.write(json.dumps(values, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self._handle.close()


class _ParquetWriter:
    def __init__(self, path: Path, schema: Any) -> None:
        import pyarrow.parquet as pq

        self._schema = schema
        self._writer = pq.ParquetWriter(path, schema)

    def write(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa

        self._writer.write_table(pa.Table.from_pylist(rows, schema=self._schema))

    def close(self) -> None:
        self._writer.close()


def _make_dir(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)


_TABLES: list[tuple[str, Callable[..., AsyncIterator[list[Any]]], Callable[[Any], dict]]] = [
    ("items", exports.iter_items, _item),
    ("users", exports.iter_users, _user),
    ("interactions", exports.iter_interaction_rows, _interaction),
    ("ratings", exports.iter_rating_rows, _rating),
]


async def export_tenant(
    database: Database,
    tenant_id: uuid.UUID,
    out: Path,
    *,
    file_format: str = "jsonl",
    progress: Progress | None = None,
) -> ExportCounts:
    """Write ``items``, ``users``, ``interactions`` and ``ratings`` files into ``out``."""
    if file_format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    _make_dir(out)
    schemas = _schemas() if file_format == "parquet" else {}
    counts: dict[str, int] = {}
    async with database.session() as session:
        for name, reader, convert in _TABLES:
            path = out / f"{name}.{file_format}"
            writer = (
                _ParquetWriter(path, schemas[name])
                if file_format == "parquet"
                else _JsonLinesWriter(path)
            )
            written = 0
            try:
                async for chunk in reader(session=session, tenant_id=tenant_id):
                    writer.write([convert(row) for row in chunk])
                    written += len(chunk)
                    if progress is not None:
                        progress(name, written, written)
            finally:
                writer.close()
            counts[name] = written
    return ExportCounts(**counts)
