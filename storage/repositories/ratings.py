"""Explicit ratings (0.5 to 5 stars): one per user and item, re-rating updates it."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.errors import InvalidData
from storage.models import RATING_MAX, RATING_MIN, Rating, utcnow
from storage.repositories._common import (
    EventChunk,
    chunks,
    epoch_seconds,
    first_per_user,
    hex_id,
    savepoint,
    stream_event_columns,
    table_of,
    upsert_insert,
)

_BATCH = 1000


class RatingStats(NamedTuple):
    """Average and count of an item's ratings; ``average`` is None when ``count`` is 0."""

    average: float | None
    count: int


def check_rating(rating: float) -> float:
    value = float(rating)
    if math.isnan(value) or not RATING_MIN <= value <= RATING_MAX:
        raise InvalidData(f"rating must be within {RATING_MIN}..{RATING_MAX}, got {rating}")
    return value


def _upsert(session: AsyncSession, target: Any, rows: list[dict[str, Any]]) -> Any:
    insert = upsert_insert(session, target).values(rows)
    return insert.on_conflict_do_update(
        index_elements=["tenant_id", "user_id", "item_id"],
        set_={"rating": insert.excluded.rating, "updated_at": insert.excluded.updated_at},
    )


def _row(
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    item_id: uuid.UUID,
    rating: float,
    when: datetime | None = None,
) -> dict:
    now = when or utcnow()
    return {
        "id": uuid.uuid4(),
        "tenant_id": tenant_id,
        "user_id": user_id,
        "item_id": item_id,
        "rating": check_rating(rating),
        "created_at": now,
        "updated_at": now,
    }


async def rate_item(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    item_id: uuid.UUID,
    rating: float,
    rated_at: datetime | None = None,
) -> Rating:
    """Set the user's rating of an item (insert, or update value and updated_at), as of
    ``rated_at`` (default: now).

    InvalidData outside 0.5..5; NotFound if the user or item is not this tenant's.
    """
    row = _row(tenant_id, user_id, item_id, rating, rated_at)
    statement = _upsert(session, Rating, [row])
    async with savepoint(session):
        result = await session.scalars(
            statement.returning(Rating), execution_options={"populate_existing": True}
        )
        stored = result.one()
    return stored


async def ratings_for_users(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    user_ids: Sequence[uuid.UUID],
    per_user: int | None = None,
) -> list[list[Rating]]:
    """Batch lookup for DataLoaders: each user's ratings (latest change first), in input order;
    at most ``per_user`` of each, cut in SQL."""
    by_user: dict[uuid.UUID, list[Rating]] = {key: [] for key in user_ids}
    latest_first = (Rating.updated_at.desc(), Rating.id)
    for batch in chunks(by_user, _BATCH):
        where = [Rating.tenant_id == tenant_id, Rating.user_id.in_(batch)]
        query = select(Rating).where(*where).order_by(*latest_first)
        if per_user is not None:
            query = first_per_user(Rating, where, latest_first, per_user)
        for rating in (await session.scalars(query)).all():
            by_user[rating.user_id].append(rating)
    return [by_user[key] for key in user_ids]


async def average_ratings(
    *, session: AsyncSession, tenant_id: uuid.UUID, item_ids: Sequence[uuid.UUID]
) -> list[RatingStats]:
    """Batch lookup for DataLoaders: average and count of each item's ratings, in input order."""
    stats: dict[uuid.UUID, RatingStats] = {}
    for batch in chunks(dict.fromkeys(item_ids), _BATCH):
        query = (
            select(Rating.item_id, func.avg(Rating.rating), func.count())
            .where(Rating.tenant_id == tenant_id, Rating.item_id.in_(batch))
            .group_by(Rating.item_id)
        )
        for item_id, average, count in (await session.execute(query)).tuples():
            stats[item_id] = RatingStats(float(average), int(count))
    return [stats.get(key, RatingStats(None, 0)) for key in item_ids]


async def bulk_upsert_ratings(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    rows: Iterable[Mapping[str, Any]],
    chunk_size: int = 1000,
) -> int:
    """Insert or update many ratings (rows: ``user_id``, ``item_id``, ``rating`` and optionally
    ``created_at``, e.g. the time of a rating imported from another system).

    The last row per (user, item) wins; returns how many distinct pairs were written.
    All-or-nothing: any invalid rating or foreign id fails the whole call.
    """
    latest: dict[tuple[uuid.UUID, uuid.UUID], dict[str, Any]] = {}
    for row in rows:
        prepared = _row(
            tenant_id, row["user_id"], row["item_id"], row["rating"], row.get("created_at")
        )
        latest[(row["user_id"], row["item_id"])] = prepared
    table = table_of(Rating)
    async with savepoint(session):
        for chunk in chunks(latest.values(), chunk_size):
            await session.execute(_upsert(session, table, chunk))
    return len(latest)


def _training_query(tenant_id: uuid.UUID) -> Select[tuple[uuid.UUID, uuid.UUID, float, datetime]]:
    return (
        select(Rating.user_id, Rating.item_id, Rating.rating, Rating.updated_at)
        .where(Rating.tenant_id == tenant_id)
        .order_by(Rating.updated_at, Rating.id)
    )


async def load_ratings(
    *, session: AsyncSession, tenant_id: uuid.UUID
) -> list[tuple[uuid.UUID, uuid.UUID, float, datetime]]:
    """Every rating of the tenant as ``(user_id, item_id, rating, updated_at)``, for training."""
    return [tuple(row) for row in (await session.execute(_training_query(tenant_id))).tuples()]


async def iter_rating_columns(
    *, session: AsyncSession, tenant_id: uuid.UUID, chunk_size: int = 10_000
) -> AsyncIterator[EventChunk]:
    """``iter_ratings`` as columns for training (see ``iter_interaction_columns``); ``types``
    is None: every event is a rating."""
    query = select(
        hex_id(session, Rating.user_id),
        hex_id(session, Rating.item_id),
        Rating.rating,
        epoch_seconds(session, Rating.updated_at),
    ).where(Rating.tenant_id == tenant_id)
    query = query.order_by(Rating.updated_at, Rating.id)
    async for chunk in stream_event_columns(session, query, chunk_size, typed=False):
        yield chunk


async def iter_ratings(
    *, session: AsyncSession, tenant_id: uuid.UUID, chunk_size: int = 10_000
) -> AsyncIterator[list[tuple[uuid.UUID, uuid.UUID, float, datetime]]]:
    """``load_ratings`` in chunks of up to ``chunk_size`` rows, streamed from a server-side
    cursor so memory stays flat."""
    query = _training_query(tenant_id).execution_options(yield_per=chunk_size)
    # Core, not ORM, execution: the ORM's per-row loading took a third of the read time
    result = await (await session.connection()).stream(query)
    async for partition in result.partitions():
        yield [tuple(row) for row in partition]
