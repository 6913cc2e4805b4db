"""Bulk writes of interactions: ``bulk_insert_interactions`` (COPY on PostgreSQL, executemany
on SQLite) and the idempotent import write step (``import_interactions``, or
``import_interaction_batch`` of columns: a binary COPY on PostgreSQL, straight into
``interactions`` or through a stage table, or into a new tenant's bulk load of
``storage.repositories.interaction_loads``), with the planner settings imports run under.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import String, Uuid, select, table, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Interaction, UtcDateTime, utcnow
from storage.repositories._bulk import (
    PG_EPOCH_MICROSECONDS,
    binary_copy_data,
    copy_binary,
    copy_records,
    executemany_records,
    first_of_each_row,
    new_uuid_bytes,
    new_uuid_hex,
    unique_uuids,
)
from storage.repositories._common import chunks, dialect_name, savepoint, table_of
from storage.repositories.interaction_batch import InteractionBatch, uuid_array, uuid_hex, uuid_list
from storage.repositories.interaction_loads import InteractionLoad
from storage.repositories.interactions import check_interaction_type, check_owners

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
            check_interaction_type(row["interaction_type"]),
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
            await check_owners(
                session=session,
                tenant_id=tenant_id,
                user_ids=[row["user_id"] for row in chunk],
                item_ids=[row["item_id"] for row in chunk],
            )
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
) -> list[Mapping[str, Any]]:
    """Insert the rows whose (user, item, type, created_at) the tenant does not have yet;
    returns those rows (the ones written).

    This makes an import idempotent without a natural key in the schema: re-importing the
    same events (same users, items, types and timestamps) writes nothing, and a repeated
    event within ``rows`` is written once (the first one wins). Every row needs
    ``created_at``. All-or-nothing per call; a user or item unknown to this tenant raises
    NotFound. ``import_interaction_batch`` with the rows as columns.
    """
    if not rows:
        return []
    written = await import_interaction_batch(
        session=session, tenant_id=tenant_id, batch=InteractionBatch.from_rows(rows)
    )
    return [rows[index] for index in np.flatnonzero(written)]


async def import_interaction_batch(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    batch: InteractionBatch,
    load: InteractionLoad | None = None,
) -> np.ndarray:
    """``import_interactions`` of columns, the import write step: which rows were written (a
    boolean mask). The distinct users and items are checked (``check_owners``) once.

    With a ``load`` (``begin_interaction_load``) the rows go to the load's side table instead,
    repeated events of the batch removed; events repeating an earlier batch's are removed by
    ``finish_interaction_load``, which reports how many."""
    for name in batch.types:
        check_interaction_type(name)
    if not len(batch):
        return np.zeros(0, dtype=bool)
    first = _first_of_each_key(batch)
    unique = batch.take(first)
    async with savepoint(session):
        # PostgreSQL takes the ids as hex; SQLite's Uuid type wants UUIDs.
        as_ids = uuid_hex if dialect_name(session) == "postgresql" else uuid_list
        users, items = unique_uuids(unique.user_ids), unique_uuids(unique.item_ids)
        await check_owners(
            session=session,
            tenant_id=tenant_id,
            user_ids=as_ids(users),
            item_ids=as_ids(items),
            importing=True,
            locking=load is None,
        )
        if load is not None:
            kept = await _import_into_load(session, load, unique, users, items)
        elif dialect_name(session) == "postgresql":
            kept = await _import_postgresql(session, tenant_id, unique, users)
        else:
            kept = await _import_other(session, tenant_id, unique)
    written = np.zeros(len(batch), dtype=bool)
    written[first[kept]] = True
    return written


def _first_of_each_key(batch: InteractionBatch) -> np.ndarray:
    """Positions of the first row of each (user, item, type, time), in input order."""
    keys = np.empty((len(batch), 6), dtype=np.uint64)
    keys[:, 0:2] = np.ascontiguousarray(batch.user_ids).view(np.uint64)
    keys[:, 2:4] = np.ascontiguousarray(batch.item_ids).view(np.uint64)
    keys[:, 4] = batch.times.astype(np.int64).view(np.uint64)
    keys[:, 5] = batch.type_codes
    return first_of_each_row(keys)


async def _import_other(
    session: AsyncSession, tenant_id: uuid.UUID, batch: InteractionBatch
) -> np.ndarray:
    """SQLite: look the keys up, then insert the rest; the positions written."""
    rows = batch.to_rows()
    existing = await existing_interaction_keys(
        session=session, tenant_id=tenant_id, keys=[_key(row) for row in rows]
    )
    kept = [index for index, row in enumerate(rows) if _key(row) not in existing]
    connection = await session.connection()
    for chunk in chunks(kept, 20_000):
        records = _bulk_records(tenant_id, [rows[index] for index in chunk], None)
        await executemany_records(
            connection, table_of(Interaction), _COLUMNS, records, preprocessed=frozenset({"id"})
        )
    return np.asarray(kept, dtype=np.int64)


# PostgreSQL imports write in two ways. A row can only repeat an event its user already has,
# so the rows of users without any interaction in the tenant (every row of a new tenant, and
# of a generator's chunk of new users) are COPY'd straight into ``interactions``: no stage, no
# probe. The rest are COPY'd into a temporary table (no index, no constraint: the fastest
# write there is), then one INSERT ... SELECT moves the rows the tenant lacks. The LATERAL
# probe with LIMIT 1 cannot be turned into a join, so every row costs one lookup in the
# (tenant, user, created_at) index whatever the planner believes of a freshly filled table; a
# join against all of the tenant's rows made each chunk cost the tenant's size. The probe
# names only the user and the time (OFFSET 0 keeps the item out of it): with the item in it,
# and statistics of a still empty table, the planner probed the (tenant, item) index and read
# every event of a popular item per row (a 100k-row CSV import ran past 400 s). Both COPYs
# send binary rows built by numpy (``binary_copy_data``).
_USERS_WITH_EVENTS_SQL = text(
    """
    SELECT u.id FROM unnest(CAST(:users AS uuid[])) AS u(id)
    WHERE EXISTS (SELECT 1 FROM interactions AS i
                  WHERE i.tenant_id = :tenant_id AND i.user_id = u.id)
    """
).columns(id=Uuid())
_COPY_COLUMNS = ("id", "tenant_id", "user_id", "item_id", "interaction_type", "value", "created_at")
_STAGE = "interaction_import_rows"
_STAGE_COLUMNS = ("id", "user_id", "item_id", "interaction_type", "value", "created_at")
_CREATE_STAGE_SQL = f"""
    CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} (
        id uuid, user_id uuid, item_id uuid, interaction_type varchar(32),
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
        SELECT 1 AS found FROM (
            SELECT i.item_id, i.interaction_type FROM interactions AS i
            WHERE i.tenant_id = :tenant_id AND i.user_id = s.user_id
              AND i.created_at = s.created_at
            OFFSET 0
        ) AS same_moment
        WHERE same_moment.item_id = s.item_id
          AND same_moment.interaction_type = s.interaction_type
        LIMIT 1
    ) AS e ON true
    WHERE e.found IS NULL
    RETURNING interactions.id
    """
).columns(id=Uuid())


def _copy_data(batch: InteractionBatch, leading: Sequence[np.ndarray]) -> bytes:
    """Binary COPY rows: the ``leading`` columns, then user, item, type, value and time."""
    return binary_copy_data(
        [
            *leading,
            batch.user_ids,
            batch.item_ids,
            None,
            batch.values.astype(">f8"),
            (batch.times - PG_EPOCH_MICROSECONDS).astype(">i8"),
        ],
        batch.types,
        batch.type_codes,
    )


async def _import_postgresql(
    session: AsyncSession, tenant_id: uuid.UUID, batch: InteractionBatch, users: np.ndarray
) -> np.ndarray:
    """``import_interaction_batch`` on PostgreSQL, ``batch`` unique by key and ``users`` its
    distinct users: the positions written."""
    result = await session.execute(
        _USERS_WITH_EVENTS_SQL, {"users": uuid_hex(users), "tenant_id": tenant_id}
    )
    known = uuid_array(list(result.scalars()))
    has_events = np.isin(
        np.ascontiguousarray(batch.user_ids).view("V16").ravel(), known.view("V16").ravel()
    )
    connection = await session.connection()
    fresh = np.flatnonzero(~has_events)
    if len(fresh):
        rows = batch.take(fresh)
        tenant = np.frombuffer(tenant_id.bytes, dtype=np.uint8)
        data = _copy_data(
            rows, [new_uuid_bytes(len(rows)), np.broadcast_to(tenant, (len(rows), 16))]
        )
        await copy_binary(connection, table_of(Interaction), _COPY_COLUMNS, data)
    others = np.flatnonzero(has_events)
    if not len(others):
        return fresh
    rows = batch.take(others)
    await connection.exec_driver_sql(_CREATE_STAGE_SQL)
    await connection.exec_driver_sql(f"TRUNCATE {_STAGE}")
    ids = new_uuid_bytes(len(rows))
    await copy_binary(connection, table(_STAGE), _STAGE_COLUMNS, _copy_data(rows, [ids]))
    moved = await connection.execute(_MOVE_STAGE_SQL, {"tenant_id": tenant_id})
    # The written rows by their new ids, matched on the client: joining the RETURNING rows
    # back to the (never analysed) stage table got a nested loop, rows x rows per batch.
    inserted = uuid_array(list(moved.scalars()))
    written = np.isin(ids.view("V16").ravel(), inserted.view("V16").ravel())
    return np.sort(np.concatenate([fresh, others[written]]))


async def _import_into_load(
    session: AsyncSession,
    load: InteractionLoad,
    batch: InteractionBatch,
    users: np.ndarray,
    items: np.ndarray,
) -> np.ndarray:
    """``import_interaction_batch`` into a load's side table: every row (unique by key);
    ``users`` and ``items`` are the batch's distinct ones."""
    load.note_chunk(batch.user_ids, batch.times, users, items)
    tenant = np.frombuffer(load.tenant_id.bytes, dtype=np.uint8)
    data = _copy_data(
        batch, [new_uuid_bytes(len(batch)), np.broadcast_to(tenant, (len(batch), 16))]
    )
    await copy_binary(await session.connection(), table(load.table), _COPY_COLUMNS, data)
    return np.arange(len(batch))


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


async def tune_import_transaction(*, session: AsyncSession) -> None:
    """PostgreSQL, for the bulk import paths, in one round trip: the current transaction's
    commit returns without waiting for its WAL to reach disk (``synchronous_commit = off``),
    and its statements are planned for their own parameters (``plan_cache_mode``).

    - A crash of the database server in the next fraction of a second may lose the last chunks
      an import reported written (never a partial chunk, nor anything of other sessions);
      imports are idempotent, so re-running one writes what is missing.
    - asyncpg prepares each statement once per connection, and after five runs PostgreSQL may
      keep a generic plan made when the tenant had few users: the owner checks of a 10M
      import then scanned every user of the tenant per chunk (1-2 s each, most of the server's
      time). A plan per run costs well under a millisecond.
    """
    if dialect_name(session) == "postgresql":
        await session.execute(
            text(
                "SELECT set_config('synchronous_commit', 'off', true), "
                "set_config('plan_cache_mode', 'force_custom_plan', true)"
            )
        )
