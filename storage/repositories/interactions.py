"""Interactions (views, clicks, purchases, ...): the implicit feedback that training reads.

Writes are single (``record_interaction``, idempotent by key) or bulk
(``bulk_insert_interactions``: COPY on PostgreSQL, executemany on SQLite). Training reads
columns with ``load_interactions`` or streams chunks with ``iter_interactions`` (training:
``iter_interaction_columns``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple

from sqlalchemy import Select, String, Uuid, func, select, table, text, tuple_, union_all
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import aliased

from storage.errors import Conflict, InvalidData
from storage.models import Interaction, Rating, UtcDateTime, utcnow
from storage.repositories._bulk import copy_records, executemany_records, new_uuid_hex
from storage.repositories._common import (
    EventColumns,
    chunks,
    dialect_name,
    epoch_seconds,
    hex_id,
    savepoint,
    stream_event_columns,
    table_of,
)

MAX_TYPE_LENGTH = 32
_BATCH = 1000
# Column order of the bulk path, shared by COPY and executemany.
_COLUMNS = (
    "id",
    "tenant_id",
    "user_id",
    "item_id",
    "interaction_type",
    "value",
    "created_at",
    "idempotency_key",
)


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


def _check_type(interaction_type: str) -> str:
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
        interaction_type=_check_type(interaction_type),
        value=float(value),
        idempotency_key=idempotency_key,
        created_at=created_at or utcnow(),
    )
    try:
        async with savepoint(session):
            session.add(interaction)
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


def _bulk_records(
    tenant_id: uuid.UUID, rows: list[Mapping[str, Any]], now: datetime | None
) -> list[tuple[Any, ...]]:
    ids = new_uuid_hex(len(rows))
    return [
        (
            new_id,
            tenant_id,
            row["user_id"],
            row["item_id"],
            _check_type(row["interaction_type"]),
            float(row.get("value", 1.0)),
            row.get("created_at") or now,
            row.get("idempotency_key"),
        )
        for new_id, row in zip(ids, rows, strict=True)
    ]


async def bulk_insert_interactions(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    rows: Iterable[Mapping[str, Any]],
    chunk_size: int = 20_000,
) -> int:
    """Insert many interactions fast; returns how many were written.

    Each row: ``user_id``, ``item_id``, ``interaction_type`` and optionally ``value`` (1.0),
    ``created_at`` (now), ``idempotency_key``. All-or-nothing per call: a user or item unknown
    to this tenant raises NotFound, a reused idempotency key raises Conflict (no dedup here).
    Rows written this way are not in the session's identity map.
    """
    now = utcnow()
    table = table_of(Interaction)
    written = 0
    # One savepoint around all chunks: a failure leaves nothing of this call behind.
    async with savepoint(session):
        connection = await session.connection()
        for chunk in chunks(rows, chunk_size):
            records = _bulk_records(tenant_id, chunk, now)
            if connection.dialect.name == "postgresql":
                await copy_records(connection, table, _COLUMNS, records)
            else:
                await executemany_records(
                    connection, table, _COLUMNS, records, preprocessed=frozenset({"id"})
                )
            written += len(records)
    return written


InteractionKey = tuple[uuid.UUID, uuid.UUID, str, datetime]  # user, item, type, created_at
# Rows per lookup of existing keys: 4 parameters each stays far below both drivers' limits.
_KEY_BATCH = 2000


def _key(row: Mapping[str, Any]) -> InteractionKey:
    return (row["user_id"], row["item_id"], row["interaction_type"], row["created_at"])


async def existing_interaction_keys(
    *, session: AsyncSession, tenant_id: uuid.UUID, keys: Iterable[InteractionKey]
) -> set[InteractionKey]:
    """Which of ``keys`` (user, item, type, created_at) the tenant already has.

    One row-value ``IN`` per batch, answered from the (tenant, user, created_at) index.
    """
    if dialect_name(session) == "postgresql":
        return await _existing_keys_postgresql(session, tenant_id, list(dict.fromkeys(keys)))
    found: set[InteractionKey] = set()
    columns = tuple_(
        Interaction.user_id,
        Interaction.item_id,
        Interaction.interaction_type,
        Interaction.created_at,
    )
    for batch in chunks(dict.fromkeys(keys), _KEY_BATCH):
        query = select(
            Interaction.user_id,
            Interaction.item_id,
            Interaction.interaction_type,
            Interaction.created_at,
        ).where(Interaction.tenant_id == tenant_id, columns.in_(batch))
        found.update((await session.execute(query)).tuples().all())
    return found


# PostgreSQL: the keys go as four arrays joined with unnest, not as a row-value IN of
# thousands of parameters (whose binding cost more than the lookup).
_EXISTING_KEYS_SQL = text(
    """
    SELECT i.user_id, i.item_id, i.interaction_type, i.created_at
    FROM interactions AS i
    JOIN unnest(CAST(:users AS uuid[]), CAST(:items AS uuid[]), CAST(:types AS varchar[]),
                CAST(:times AS timestamptz[])) AS k(user_id, item_id, interaction_type, created_at)
      ON i.user_id = k.user_id AND i.item_id = k.item_id
     AND i.interaction_type = k.interaction_type AND i.created_at = k.created_at
    WHERE i.tenant_id = :tenant_id
    """
).columns(user_id=Uuid(), item_id=Uuid(), interaction_type=String(), created_at=UtcDateTime())


async def _existing_keys_postgresql(
    session: AsyncSession, tenant_id: uuid.UUID, keys: list[InteractionKey]
) -> set[InteractionKey]:
    found: set[InteractionKey] = set()
    for batch in chunks(keys, 50_000):
        users, items, types, times = (list(column) for column in zip(*batch, strict=True))
        params = {"users": users, "items": items, "types": types, "times": times}
        result = await session.execute(_EXISTING_KEYS_SQL, {**params, "tenant_id": tenant_id})
        found.update(result.tuples().all())
    return found


async def import_interactions(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    rows: Sequence[Mapping[str, Any]],
    chunk_size: int = 20_000,
) -> list[Mapping[str, Any]]:
    """Insert the rows whose (user, item, type, created_at) the tenant does not have yet;
    returns those rows (the ones written).

    This makes an import idempotent without a natural key in the schema: re-importing the
    same events (same users, items, types and timestamps) writes nothing, and a repeated
    event within ``rows`` is written once (the first one wins). Every row needs
    ``created_at``. Otherwise as ``bulk_insert_interactions`` (all-or-nothing per call).
    """
    fresh: dict[InteractionKey, Mapping[str, Any]] = {}
    for row in rows:
        if row.get("created_at") is None:
            raise InvalidData("an imported interaction needs its time (created_at)")
        fresh.setdefault(_key(row), row)
    if dialect_name(session) == "postgresql":
        return await _import_postgresql(session, tenant_id, list(fresh.values()), chunk_size)
    for key in await existing_interaction_keys(session=session, tenant_id=tenant_id, keys=fresh):
        del fresh[key]
    written = list(fresh.values())
    await bulk_insert_interactions(
        session=session, tenant_id=tenant_id, rows=written, chunk_size=chunk_size
    )
    return written


# PostgreSQL imports write in two ways. A row can only repeat an event its user already has,
# so the rows of users without any interaction in the tenant (every row of a new tenant, and
# of a generator's chunk of new users) are COPY'd straight into ``interactions``: no stage, no
# probe. The rest are COPY'd into a temporary table (no index, no constraint: the fastest
# write there is), then one INSERT ... SELECT moves the rows the tenant lacks. The LATERAL
# probe with LIMIT 1 cannot be turned into a join, so every row costs one lookup in the
# (tenant, user, created_at) index whatever the planner believes of a freshly filled table; a
# join against all of the tenant's rows made each chunk cost the tenant's size.
_USERS_WITH_EVENTS_SQL = text(
    """
    SELECT u.id FROM unnest(CAST(:users AS uuid[])) AS u(id)
    WHERE EXISTS (SELECT 1 FROM interactions AS i
                  WHERE i.tenant_id = :tenant_id AND i.user_id = u.id)
    """
).columns(id=Uuid())
_STAGE = "interaction_import_stage"
_STAGE_COLUMNS = ("ord", "id", "user_id", "item_id", "interaction_type", "value", "created_at")
_CREATE_STAGE_SQL = f"""
    CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} (
        ord integer, id uuid, user_id uuid, item_id uuid, interaction_type varchar(32),
        value double precision, created_at timestamptz
    ) ON COMMIT DELETE ROWS
"""
_MOVE_STAGE_SQL = text(
    f"""
    INSERT INTO interactions (id, tenant_id, user_id, item_id, interaction_type, value,
                              created_at)
    SELECT s.id, :tenant_id, s.user_id, s.item_id, s.interaction_type, s.value, s.created_at
    FROM {_STAGE} AS s
    LEFT JOIN LATERAL (
        SELECT 1 AS found FROM interactions AS i
        WHERE i.tenant_id = :tenant_id AND i.user_id = s.user_id
          AND i.created_at = s.created_at AND i.item_id = s.item_id
          AND i.interaction_type = s.interaction_type
        LIMIT 1
    ) AS e ON true
    WHERE e.found IS NULL
    RETURNING interactions.id
    """
)


async def _users_with_events(
    session: AsyncSession, tenant_id: uuid.UUID, rows: list[Mapping[str, Any]]
) -> set[uuid.UUID]:
    """Which users of ``rows`` already have an interaction in the tenant (one probe each)."""
    users = list({row["user_id"] for row in rows})
    result = await session.execute(_USERS_WITH_EVENTS_SQL, {"users": users, "tenant_id": tenant_id})
    return set(result.scalars())


async def _import_postgresql(
    session: AsyncSession, tenant_id: uuid.UUID, rows: list[Mapping[str, Any]], chunk_size: int
) -> list[Mapping[str, Any]]:
    """``import_interactions`` on PostgreSQL; ``rows`` are already unique by key."""
    async with savepoint(session):
        known = await _users_with_events(session, tenant_id, rows)
        fresh = [row for row in rows if row["user_id"] not in known]
        others = [row for row in rows if row["user_id"] in known]
        connection = await session.connection()
        for chunk in chunks(fresh, max(chunk_size, 100_000)):
            records = _bulk_records(tenant_id, chunk, None)  # imported rows have their time
            await copy_records(connection, table_of(Interaction), _COLUMNS, records)
        if others:
            fresh += await _move_through_stage(connection, tenant_id, others, chunk_size)
    return fresh


async def _move_through_stage(
    connection: AsyncConnection,
    tenant_id: uuid.UUID,
    rows: list[Mapping[str, Any]],
    chunk_size: int,
) -> list[Mapping[str, Any]]:
    """The rows the tenant lacks, written through the stage table and the duplicate probe."""
    written: list[Mapping[str, Any]] = []
    await connection.exec_driver_sql(_CREATE_STAGE_SQL)
    for chunk in chunks(rows, chunk_size):
        ids = new_uuid_hex(len(chunk))
        records = [
            (
                ordinal,
                new_id,
                row["user_id"],
                row["item_id"],
                _check_type(row["interaction_type"]),
                float(row.get("value", 1.0)),
                row["created_at"],
            )
            for ordinal, (new_id, row) in enumerate(zip(ids, chunk, strict=True))
        ]
        await connection.exec_driver_sql(f"TRUNCATE {_STAGE}")
        await copy_records(connection, table(_STAGE), _STAGE_COLUMNS, records)
        result = await connection.execute(_MOVE_STAGE_SQL, {"tenant_id": tenant_id})
        inserted = {found.hex for found in result.scalars()}
        written.extend(row for new_id, row in zip(ids, chunk, strict=True) if new_id in inserted)
    return written


async def refresh_statistics(*, session: AsyncSession) -> None:
    """PostgreSQL: refresh the planner's statistics of the tables an import's rows point to.

    Every interaction written checks its user and item by foreign key; against tables never
    analysed (a new tenant's catalogue, written seconds ago) those checks scan the whole table
    per row: 20,000 interactions over 1,000 new items took 3.9 s of checks instead of 0.2 s.
    Likewise the duplicate probe of ``import_interactions`` picked an index scanning each
    user's rows until ``interactions`` was analysed. Imports call this once their items are
    written. SQLite plans without it.
    """
    if dialect_name(session) == "postgresql":
        await session.execute(text("ANALYZE tenants, users, items, interactions"))


async def relax_commit_durability(*, session: AsyncSession) -> None:
    """PostgreSQL: the current transaction's commit returns without waiting for its WAL to
    reach disk (``synchronous_commit = off`` for this transaction only).

    For the bulk import paths: a crash of the database server in the next fraction of a second
    may lose the last chunks an import reported written (never a partial chunk, nor anything
    of other sessions); imports are idempotent, so re-running one writes what is missing.
    """
    if dialect_name(session) == "postgresql":
        await session.execute(text("SET LOCAL synchronous_commit = off"))


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
) -> AsyncIterator[EventColumns]:
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
