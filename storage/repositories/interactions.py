"""Interactions (views, clicks, purchases, ...): the implicit feedback that training reads.

The per-request repository: ``record_interaction`` (one write, idempotent by key), the
DataLoader batch readers, counts and the bounded lists of the request path. Training reads
columns with ``load_interactions`` or streams chunks with ``iter_interactions`` (training:
``iter_interaction_columns``). Bulk writes and imports are in
``storage.repositories.interaction_import``; the columns an import takes
(``InteractionBatch``) in ``storage.repositories.interaction_batch``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple

from sqlalchemy import Select, func, select, text, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from storage.errors import Conflict, InvalidData, NotFound
from storage.models import Interaction, Item, Rating, User, utcnow
from storage.repositories._common import (
    EventChunk,
    chunks,
    dialect_name,
    epoch_seconds,
    hex_id,
    savepoint,
    stream_event_columns,
)

MAX_TYPE_LENGTH = 32
_BATCH = 1000


class InteractionRow(NamedTuple):
    user_id: uuid.UUID
    item_id: uuid.UUID
    interaction_type: str
    value: float
    created_at: datetime


@dataclass
class InteractionColumns:
    """A tenant's interactions as parallel lists (ready for ``np.asarray``), oldest first."""

    user_ids: list[uuid.UUID] = field(default_factory=list)
    item_ids: list[uuid.UUID] = field(default_factory=list)
    interaction_types: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    created_at: list[datetime] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.user_ids)


def check_interaction_type(interaction_type: str) -> str:
    if not interaction_type or len(interaction_type) > MAX_TYPE_LENGTH:
        raise InvalidData(f"interaction type must be 1..{MAX_TYPE_LENGTH} characters")
    return interaction_type


async def _by_idempotency_key(
    session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID, key: str
) -> Interaction | None:
    query = select(Interaction).where(
        Interaction.tenant_id == tenant_id,
        Interaction.user_id == user_id,
        Interaction.idempotency_key == key,
    )
    return await session.scalar(query)


async def record_interaction(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    item_id: uuid.UUID,
    interaction_type: str,
    value: float = 1.0,
    idempotency_key: str | None = None,
    created_at: datetime | None = None,
) -> Interaction:
    """Record one interaction of a user of this tenant with an item of this tenant.

    With an ``idempotency_key`` this user already used, the existing row is returned and
    nothing is written (keys are the user's own: another user's same key is another request).
    NotFound if the user or item is unknown here (or another tenant's).
    """
    if idempotency_key is not None:
        existing = await _by_idempotency_key(session, tenant_id, user_id, idempotency_key)
        if existing is not None:
            return existing
    interaction = Interaction(
        tenant_id=tenant_id,
        user_id=user_id,
        item_id=item_id,
        interaction_type=check_interaction_type(interaction_type),
        value=float(value),
        idempotency_key=idempotency_key,
        created_at=created_at or utcnow(),
    )
    try:
        async with savepoint(session):
            session.add(interaction)
            await session.flush()
            # Checked after the insert, in its savepoint (an unknown owner undoes it): on
            # SQLite a read first would make the insert upgrade a read snapshot, which fails at
            # once ("database is locked") when another connection committed in between.
            await check_owners(
                session=session, tenant_id=tenant_id, user_ids=[user_id], item_ids=[item_id]
            )
    except Conflict:
        # A concurrent request with the same key won the race: its row is the answer.
        if idempotency_key is None:
            raise
        winner = await _by_idempotency_key(session, tenant_id, user_id, idempotency_key)
        if winner is None:
            raise
        return winner
    return interaction


async def interactions_for_users(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    user_ids: Sequence[uuid.UUID],
    interaction_type: str | None = None,
    per_user: int | None = None,
) -> list[list[Interaction]]:
    """Batch lookup for DataLoaders: each user's interactions (newest first), in input order.

    With ``per_user``, only each user's newest ``per_user`` rows, and each type's newest
    ``per_user`` rows too (so a caller can serve mixed type filters from one statement); the
    cut is made in SQL, so a long history is never read whole. Unknown ids and other
    tenants' users get an empty list.
    """
    return await interactions_for(
        session=session,
        tenant_id=tenant_id,
        owner="user",
        ids=user_ids,
        interaction_type=interaction_type,
        per_owner=per_user,
    )


async def interactions_for(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    owner: Literal["user", "item"],
    ids: Sequence[uuid.UUID],
    interaction_type: str | None = None,
    per_owner: int | None = None,
) -> list[list[Interaction]]:
    """``interactions_for_users``, by user or (``owner="item"``) by item: the interactions of
    each of ``ids``, newest first, in input order, cut to ``per_owner`` per owner and type."""
    column = Interaction.user_id if owner == "user" else Interaction.item_id
    by_key: dict[uuid.UUID, list[Interaction]] = {key: [] for key in ids}
    newest_first = (Interaction.created_at.desc(), Interaction.id)
    for batch in chunks(by_key, _BATCH):
        where = [Interaction.tenant_id == tenant_id, column.in_(batch)]
        if interaction_type is not None:
            where.append(Interaction.interaction_type == interaction_type)
        query = select(Interaction).where(*where).order_by(*newest_first)
        if per_owner is not None:
            query = _newest(column, where, newest_first, per_owner)
        for interaction in (await session.scalars(query)).all():
            by_key[getattr(interaction, f"{owner}_id")].append(interaction)
    return [by_key[key] for key in ids]


def _newest(owner: Any, where: list[Any], order: tuple[Any, ...], per_key: int) -> Select[Any]:
    """The newest ``per_key`` of each owner (user or item), plus the newest ``per_key`` of each
    of its interaction types: window functions, one statement on SQLite and PostgreSQL alike."""
    number = func.row_number()
    by_owner = number.over(partition_by=owner, order_by=order).label("by_owner")
    by_type = number.over(partition_by=(owner, Interaction.interaction_type), order_by=order).label(
        "by_type"
    )
    ranked = select(Interaction, by_owner, by_type).where(*where).subquery()
    rows = aliased(Interaction, ranked)
    wanted = (ranked.c.by_owner <= per_key) | (ranked.c.by_type <= per_key)
    return select(rows).where(wanted).order_by(ranked.c.created_at.desc(), ranked.c.id)


class ItemPopularity(NamedTuple):
    interactions: int
    users: int  # distinct users who interacted


async def item_popularity(
    *, session: AsyncSession, tenant_id: uuid.UUID, item_ids: Sequence[uuid.UUID]
) -> list[ItemPopularity]:
    """Batch lookup for DataLoaders: each item's interaction and distinct-user counts, in
    input order (zeros for unknown ids and other tenants' items); one statement per 1000."""
    found: dict[uuid.UUID, ItemPopularity] = {}
    for batch in chunks(dict.fromkeys(item_ids), _BATCH):
        query = (
            select(
                Interaction.item_id, func.count(), func.count(func.distinct(Interaction.user_id))
            )
            .where(Interaction.tenant_id == tenant_id, Interaction.item_id.in_(batch))
            .group_by(Interaction.item_id)
        )
        for item_id, interactions, users in (await session.execute(query)).tuples():
            found[item_id] = ItemPopularity(int(interactions), int(users))
    return [found.get(key, ItemPopularity(0, 0)) for key in item_ids]


async def check_owners(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    user_ids: Iterable[uuid.UUID | str],
    item_ids: Iterable[uuid.UUID | str],
    importing: bool = False,
    locking: bool = True,
) -> None:
    """NotFound unless every user and item is this tenant's: what the interactions' foreign
    keys checked before migration 0006, once per distinct id instead of once per row.

    PostgreSQL locks them (``FOR KEY SHARE``, as a foreign key check does) until the
    transaction ends, so none can be deleted (nor its interactions removed by the delete
    triggers) before the rows written against it commit. ``importing`` locks the users more
    strongly (``FOR NO KEY UPDATE``): two imports of one user's events run one after the
    other, so the second sees what the first wrote and writes no event twice. Without
    ``locking`` (a bulk load, whose end locks every user and item it wrote once, see
    ``finish_interaction_load``) the ids are only checked: a row lock writes to the row, and
    locking each batch's users and items again made the writing of a 10M-row CSV import
    (random users in every batch) take 83 s instead of 63 s.
    SQLite has one writer at a time.
    """
    postgresql = dialect_name(session) == "postgresql"
    for model, ids in ((User, user_ids), (Item, item_ids)):
        wanted = list(dict.fromkeys(ids))
        if postgresql:
            lock = (_IMPORTER if importing and model is User else _KEY_SHARE) if locking else ""
            await _check_and_lock(session, model, tenant_id, wanted, lock)
            continue
        for batch in chunks(wanted, _OWNER_BATCH):
            query = select(model.id).where(model.tenant_id == tenant_id, model.id.in_(batch))
            found = set((await session.scalars(query)).all())
            if len(found) != len(batch):
                raise _not_found(model, next(key for key in batch if key not in found))


_OWNER_BATCH = 5000
# One array parameter rather than thousands of bound ones (whose compiling cost more than
# the lookup); the count is all a successful check needs back.
_LOCK_OWNERS_SQL = """
    SELECT count(*) FROM (
        SELECT 1 FROM {table} WHERE tenant_id = :tenant_id AND id = ANY(CAST(:ids AS uuid[]))
        {lock}
    ) AS locked
"""
_KEY_SHARE = "FOR KEY SHARE"
# Also excludes other importers of the same users until commit; in id order (no deadlock).
_IMPORTER = "ORDER BY id FOR NO KEY UPDATE"
_MISSING_OWNER_SQL = """
    SELECT w.id FROM unnest(CAST(:ids AS uuid[])) AS w(id)
    WHERE NOT EXISTS (SELECT 1 FROM {table} AS o WHERE o.tenant_id = :tenant_id AND o.id = w.id)
    LIMIT 1
"""


async def _check_and_lock(
    session: AsyncSession,
    model: type[User] | type[Item],
    tenant_id: uuid.UUID,
    ids: list[Any],
    lock: str,
) -> None:
    if not ids:
        return
    params = {"tenant_id": tenant_id, "ids": [str(key) for key in ids]}
    table_name = model.__tablename__
    query = text(_LOCK_OWNERS_SQL.format(table=table_name, lock=lock))
    found = await session.scalar(query, params)
    if found != len(ids):
        missing = await session.scalar(text(_MISSING_OWNER_SQL.format(table=table_name)), params)
        raise _not_found(model, missing)


def _not_found(model: type[User] | type[Item], key: object) -> NotFound:
    return NotFound(f"{model.__tablename__[:-1]} {key} not found in this tenant")


def _columns_query(tenant_id: uuid.UUID, since: datetime | None) -> Select[Any]:
    query = select(
        Interaction.user_id,
        Interaction.item_id,
        Interaction.interaction_type,
        Interaction.value,
        Interaction.created_at,
    ).where(Interaction.tenant_id == tenant_id)
    if since is not None:
        query = query.where(Interaction.created_at >= since)
    return query.order_by(Interaction.created_at, Interaction.id)


async def load_interactions(
    *, session: AsyncSession, tenant_id: uuid.UUID, since: datetime | None = None
) -> InteractionColumns:
    """All of the tenant's interactions (from ``since`` on, inclusive) as parallel columns."""
    rows = (await session.execute(_columns_query(tenant_id, since))).tuples().all()
    if not rows:
        return InteractionColumns()
    users, items, types, values, times = (list(column) for column in zip(*rows, strict=True))
    return InteractionColumns(users, items, types, values, times)


async def iter_interactions(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    since: datetime | None = None,
    chunk_size: int = 10_000,
) -> AsyncIterator[list[InteractionRow]]:
    """The tenant's interactions, oldest first, in chunks of up to ``chunk_size`` rows,
    streamed from a server-side cursor so memory stays flat."""
    query = _columns_query(tenant_id, since).execution_options(yield_per=chunk_size)
    # Core, not ORM, execution: the ORM's per-row loading took a third of the read time
    result = await (await session.connection()).stream(query)
    async for partition in result.partitions():
        yield [InteractionRow(*row) for row in partition]


async def iter_interaction_columns(
    *, session: AsyncSession, tenant_id: uuid.UUID, chunk_size: int = 10_000
) -> AsyncIterator[EventChunk]:
    """``iter_interactions`` as columns for training: ids as hex digits, times as unix seconds
    (computed by PostgreSQL), so reading makes no UUID or datetime object per row."""
    query = select(
        hex_id(session, Interaction.user_id),
        hex_id(session, Interaction.item_id),
        Interaction.interaction_type,
        Interaction.value,
        epoch_seconds(session, Interaction.created_at),
    ).where(Interaction.tenant_id == tenant_id)
    query = query.order_by(Interaction.created_at, Interaction.id)
    async for chunk in stream_event_columns(session, query, chunk_size, typed=True):
        yield chunk


async def count_interactions(
    *, session: AsyncSession, tenant_id: uuid.UUID, since: datetime | None = None
) -> int:
    """How many interactions the tenant has (recorded at or after ``since``, when given)."""
    query = select(func.count()).select_from(Interaction).where(Interaction.tenant_id == tenant_id)
    if since is not None:
        query = query.where(Interaction.created_at >= since)
    return int(await session.scalar(query) or 0)


async def interactions_per_day(
    *, session: AsyncSession, tenant_id: uuid.UUID, days: int
) -> list[tuple[str, int]]:
    """``(YYYY-MM-DD, count)`` per UTC day for the ``days`` days that end on the day of the
    tenant's newest interaction (an imported history may end long ago), oldest first, with
    days without interactions at 0; empty when the tenant has none."""
    newest = await session.scalar(
        select(func.max(Interaction.created_at)).where(Interaction.tenant_id == tenant_id)
    )
    if newest is None:
        return []
    if isinstance(newest, str):  # SQLite hands back text for an aggregate
        newest = datetime.fromisoformat(newest)
    last = newest.date()
    first = last - timedelta(days=days - 1)
    if dialect_name(session) == "postgresql":
        day = func.to_char(func.timezone("UTC", Interaction.created_at), "YYYY-MM-DD")
    else:
        day = func.date(Interaction.created_at)
    since = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    query = (
        select(day.label("day"), func.count())
        .where(Interaction.tenant_id == tenant_id, Interaction.created_at >= since)
        .group_by(day)
    )
    counts = {str(row[0]): int(row[1]) for row in await session.execute(query)}
    dates = [(first + timedelta(days=n)).isoformat() for n in range(days)]
    return [(date, counts.get(date, 0)) for date in dates]


async def count_interacting_users(*, session: AsyncSession, tenant_id: uuid.UUID) -> int:
    """How many distinct users of the tenant have interactions."""
    query = select(func.count(func.distinct(Interaction.user_id))).where(
        Interaction.tenant_id == tenant_id
    )
    return int(await session.scalar(query) or 0)


async def recent_items(
    *, session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID, limit: int
) -> list[uuid.UUID]:
    """The user's latest ``limit`` distinct items, newest first, from interactions and ratings
    alike: one bounded statement for the request path (a request sends it as the history)."""
    events = select(Interaction.item_id.label("item_id"), Interaction.created_at.label("at"))
    events = events.where(Interaction.tenant_id == tenant_id, Interaction.user_id == user_id)
    rated = select(Rating.item_id.label("item_id"), Rating.updated_at.label("at"))
    rated = rated.where(Rating.tenant_id == tenant_id, Rating.user_id == user_id)
    both = union_all(events, rated).subquery()
    latest = func.max(both.c.at).label("latest")
    query = (
        select(both.c.item_id, latest)
        .group_by(both.c.item_id)
        .order_by(latest.desc(), both.c.item_id)
        .limit(limit)
    )
    return [row.item_id for row in (await session.execute(query)).all()]


async def popular_items(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    since: datetime,
    window: int,
    limit: int,
) -> list[tuple[uuid.UUID, int]]:
    """The items most interacted with among the tenant's latest ``window`` interactions since
    ``since``, most first: a bounded scan for cold-start lists (no trained model yet)."""
    recent = (
        select(Interaction.item_id.label("item_id"))
        .where(Interaction.tenant_id == tenant_id, Interaction.created_at >= since)
        .order_by(Interaction.created_at.desc())
        .limit(window)
        .subquery()
    )
    count = func.count().label("n")
    query = (
        select(recent.c.item_id, count)
        .group_by(recent.c.item_id)
        .order_by(count.desc(), recent.c.item_id)
        .limit(limit)
    )
    return [(row.item_id, int(row.n)) for row in (await session.execute(query)).all()]
