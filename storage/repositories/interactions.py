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
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple

import numpy as np
from sqlalchemy import Select, String, Uuid, func, select, table, text, tuple_, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from storage.errors import Conflict, InvalidData, NotFound
from storage.models import Interaction, Item, Rating, User, UtcDateTime, utcnow
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
from storage.repositories._common import (
    EventChunk,
    chunks,
    dialect_name,
    epoch_seconds,
    hex_id,
    savepoint,
    stream_event_columns,
    table_of,
)
from storage.repositories.interaction_loads import InteractionLoad

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


@dataclass
class InteractionBatch:
    """Interactions to import as columns, the form the import write step takes: row i is user
    ``user_ids[i]`` and item ``item_ids[i]`` (UUID bytes, ``(n, 16)`` uint8), type
    ``types[type_codes[i]]``, ``values[i]`` and ``times[i]`` (microseconds since the unix
    epoch, UTC)."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    types: Sequence[str]
    type_codes: np.ndarray
    values: np.ndarray
    times: np.ndarray

    def __len__(self) -> int:
        return len(self.times)

    def take(self, rows: np.ndarray) -> InteractionBatch:
        return InteractionBatch(
            self.user_ids[rows],
            self.item_ids[rows],
            self.types,
            self.type_codes[rows],
            self.values[rows],
            self.times[rows],
        )

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> InteractionBatch:
        """Rows as ``import_interactions`` takes them (each needs ``created_at``)."""
        types: dict[str, int] = {}
        codes, values, times = [], [], []
        for row in rows:
            created_at = row.get("created_at")
            if created_at is None:
                raise InvalidData("an imported interaction needs its time (created_at)")
            codes.append(types.setdefault(row["interaction_type"], len(types)))
            values.append(float(row.get("value", 1.0)))
            times.append(_microseconds(created_at))
        return cls(
            uuid_array([row["user_id"] for row in rows]),
            uuid_array([row["item_id"] for row in rows]),
            list(types),
            np.asarray(codes, dtype=np.int64),
            np.asarray(values, dtype=np.float64),
            np.asarray(times, dtype=np.int64),
        )

    def to_rows(self) -> list[dict[str, Any]]:
        users, items = uuid_list(self.user_ids), uuid_list(self.item_ids)
        return [
            {
                "user_id": user,
                "item_id": item,
                "interaction_type": self.types[code],
                "value": value,
                "created_at": _EPOCH + timedelta(microseconds=at),
            }
            for user, item, code, value, at in zip(
                users,
                items,
                self.type_codes.tolist(),
                self.values.tolist(),
                self.times.tolist(),
                strict=True,
            )
        ]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _microseconds(when: datetime) -> int:
    when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return (when - _EPOCH) // timedelta(microseconds=1)


def uuid_array(ids: Sequence[uuid.UUID]) -> np.ndarray:
    """``ids`` as a ``(n, 16)`` uint8 array of their bytes."""
    raw = b"".join(value.bytes for value in ids)
    return np.frombuffer(raw, dtype=np.uint8).reshape(len(ids), 16)


def uuid_hex(ids: np.ndarray) -> list[str]:
    """``ids`` (``(n, 16)`` uint8) as 32-digit hex, which asyncpg takes for a uuid."""
    digits = np.ascontiguousarray(ids).tobytes().hex()
    return [digits[start : start + 32] for start in range(0, len(digits), 32)]


def uuid_list(ids: np.ndarray) -> list[uuid.UUID]:
    raw = np.ascontiguousarray(ids).tobytes()
    return [uuid.UUID(bytes=raw[start : start + 16]) for start in range(0, len(raw), 16)]


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
        _check_type(name)
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
