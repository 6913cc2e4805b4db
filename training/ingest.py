"""Load a dataset (MovieLens, the synthetic catalogue, a customer export) into a tenant.

Datasets name users and items by their own ids; those become ``external_id`` for items and the
local part of a placeholder e-mail for users. Imported users have no password, so they cannot
log in (nor register: their email is taken); the tenant's backend gets them tokens from the
operator (``recserve token``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from storage import repositories as repo
from storage.db import Database
from training.data import ItemInfo

InteractionEvent = tuple[str, str, str, float | None, float]  # user, item, type, value, unix time
RatingEvent = tuple[str, str, float, float]  # user, item, rating, unix time
Progress = Callable[[str, int, int], None]
IMPORTED_USER_DOMAIN = "imported.recserve"
_CHUNK = 20_000


@dataclass(frozen=True)
class IngestCounts:
    items: int
    users: int
    interactions: int
    ratings: int


def imported_email(external_user_id: str) -> str:
    return f"{external_user_id}@{IMPORTED_USER_DOMAIN}".lower()


def _item_row(item: ItemInfo) -> dict[str, object]:
    return {
        "external_id": item.id,
        "title": item.title or item.id,
        "description": item.description,
        "category": item.category,
        "tags": list(item.tags),
    }


def _when(unix_time: float) -> datetime:
    return datetime.fromtimestamp(unix_time, tz=UTC)


async def ingest_dataset(
    database: Database,
    tenant_id: uuid.UUID,
    *,
    items: Sequence[ItemInfo],
    interactions: Sequence[InteractionEvent] = (),
    ratings: Sequence[RatingEvent] = (),
    progress: Progress | None = None,
) -> IngestCounts:
    """Upsert items and users, then bulk-insert interactions and upsert ratings, in one
    transaction: a failure leaves the tenant as it was."""
    user_ids = sorted({row[0] for row in interactions} | {row[0] for row in ratings})
    async with database.session() as session:
        item_map = await repo.bulk_upsert_items(
            session=session, tenant_id=tenant_id, rows=[_item_row(item) for item in items]
        )
        _report(progress, "items", len(item_map), len(items))
        user_map = await repo.bulk_upsert_users(
            session=session,
            tenant_id=tenant_id,
            rows=[{"email": imported_email(u), "username": u} for u in user_ids],
        )
        _report(progress, "users", len(user_map), len(user_ids))
        by_user = {u: user_map[imported_email(u)] for u in user_ids}
        written = 0
        for start in range(0, len(interactions), _CHUNK):
            chunk = interactions[start : start + _CHUNK]
            written += await repo.bulk_insert_interactions(
                session=session,
                tenant_id=tenant_id,
                rows=[
                    {
                        "user_id": by_user[u],
                        "item_id": item_map[i],
                        "interaction_type": kind,
                        "value": 1.0 if value is None else float(value),
                        "created_at": _when(ts),
                    }
                    for u, i, kind, value, ts in chunk
                ],
            )
            _report(progress, "interactions", written, len(interactions))
        rated = await repo.bulk_upsert_ratings(
            session=session,
            tenant_id=tenant_id,
            rows=[
                {
                    "user_id": by_user[u],
                    "item_id": item_map[i],
                    "rating": float(r),
                    "created_at": _when(ts),  # the dataset's time: trending and history need it
                }
                for u, i, r, ts in ratings
            ],
        )
        _report(progress, "ratings", rated, len(ratings))
    return IngestCounts(len(item_map), len(user_map), written, rated)


def _report(progress: Progress | None, stage: str, done: int, total: int) -> None:
    if progress is not None and total:
        progress(stage, done, total)
