"""Item and user rows cached behind the DataLoaders, in the shared cache.

Hydrating a recommendation list loads the same catalogue items request after request; the rows
change rarely (an item mutation drops the tenant's item rows at once, user rows expire by TTL).
A row is stored as a plain snapshot of the fields the API shows (never a password hash) under
``rec:{tenant}:row:{kind}:{id}``, and read back as an attribute object the types accept in
place of an ORM row. A cache outage falls back to the database: reads never fail because of it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from storage.cache.base import Cache, tenant_key
from storage.errors import Unavailable

logger = logging.getLogger(__name__)

FIELDS = {
    "item": (
        "id", "tenant_id", "external_id", "title", "description", "category", "tags",
        "item_metadata", "is_active", "created_at", "updated_at",
    ),
    "user": (
        "id", "tenant_id", "email", "username", "role", "preferences", "is_active", "created_at",
    ),
}  # fmt: skip
_UUIDS = {"id", "tenant_id"}
_TIMES = {"created_at", "updated_at"}
Fetch = Callable[[list[uuid.UUID]], Awaitable[Sequence[Any | None]]]


def row_key(tenant_id: object, kind: str, row_id: object) -> str:
    return tenant_key(tenant_id, "row", kind, row_id)


def row_prefix(tenant_id: object, kind: str) -> str:
    return tenant_key(tenant_id, "row", kind) + ":"


def snapshot(kind: str, row: Any) -> dict[str, Any]:
    values = {name: getattr(row, name) for name in FIELDS[kind]}
    for name in _UUIDS:
        values[name] = str(values[name])
    for name in _TIMES & values.keys():
        values[name] = values[name].isoformat()
    values["role"] = str(values["role"]) if "role" in values else None
    return values


def restore(values: dict[str, Any]) -> SimpleNamespace:
    restored = dict(values)
    for name in _UUIDS:
        restored[name] = uuid.UUID(restored[name])
    for name in _TIMES & restored.keys():
        restored[name] = datetime.fromisoformat(restored[name])
    return SimpleNamespace(**restored)


class RowCache:
    def __init__(self, cache: Cache, tenant_id: uuid.UUID, *, ttl: float) -> None:
        self.cache = cache
        self.tenant_id = tenant_id
        self.ttl = ttl

    async def load(self, kind: str, ids: list[uuid.UUID], fetch: Fetch) -> list[Any | None]:
        """Rows for ``ids`` in order: cached ones from the cache, the rest in one fetch."""
        keys = [row_key(self.tenant_id, kind, row_id) for row_id in ids]
        try:
            hits = await self.cache.get_many(keys)
        except Unavailable as error:
            logger.warning("row cache skipped: %s", error)
            hits = {}
        missing = [row_id for row_id, key in zip(ids, keys, strict=True) if key not in hits]
        fetched = dict(zip(missing, await fetch(missing), strict=True)) if missing else {}
        fresh = {
            row_key(self.tenant_id, kind, row_id): snapshot(kind, row)
            for row_id, row in fetched.items()
            if row is not None
        }
        if fresh:
            try:
                await self.cache.set_many(fresh, ttl=self.ttl)
            except Unavailable as error:
                logger.warning("row cache not filled: %s", error)
        return [
            restore(hits[key]) if key in hits else fetched[row_id]
            for row_id, key in zip(ids, keys, strict=True)
        ]
