"""Load a dataset (MovieLens, the synthetic catalogue, a customer export) into a tenant.

Datasets name users and items by their own ids; those become ``external_id`` for items and the
local part of a placeholder e-mail for users. Imported users have no password, so they cannot
log in (nor register: their email is taken); the tenant's backend gets them tokens from the
operator (``recserve token``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from storage import repositories as repo
from storage.db import Database
from storage.models import User
from storage.repositories.interaction_batch import uuid_array
from storage.repositories.users import normalize_email
from training.data import EventColumns, ItemInfo

Timestamp = float | datetime  # unix seconds, or an aware datetime
InteractionEvent = tuple[str, str, str, float | None, Timestamp]  # user, item, type, value, time
RatingEvent = tuple[str, str, float, Timestamp]  # user, item, rating, time
Progress = Callable[[str, int, int], None]
IMPORTED_USER_DOMAIN = "imported.recserve"
_CHUNK = 20_000
STREAM_WRITERS = 2  # concurrent write transactions of ``ingest_stream`` on PostgreSQL
USERNAME_CHARS: int = User.__table__.c["username"].type.length  # type: ignore[attr-defined]


@dataclass(frozen=True)
class IngestCounts:
    items: int
    users: int
    interactions: int
    ratings: int


class IdCache(dict[str, uuid.UUID]):
    """Ids already resolved during one import (user keys or item external ids), so each is
    looked up once rather than once per batch; it forgets everything past ``limit`` entries
    (memory stays bounded, lookups simply happen again)."""

    def __init__(self, limit: int = 2_000_000) -> None:
        super().__init__()
        self.limit = limit

    def update(self, other: Mapping[str, uuid.UUID]) -> None:  # type: ignore[override]
        if len(self) + len(other) > self.limit:
            self.clear()
        super().update(other)


def imported_email(external_user_id: str) -> str:
    return f"{external_user_id}@{IMPORTED_USER_DOMAIN}".lower()


def user_email(user_key: str) -> str:
    """The e-mail a dataset's user key stands for: a key that is an e-mail is the user's own
    (so exported users of any origin come back as themselves); any other id is an imported
    user's placeholder."""
    key = user_key.strip()
    return normalize_email(key) if "@" in key else imported_email(key)


def user_key(email: str) -> str:
    """The inverse of ``user_email``: what an export writes in its ``user`` column."""
    suffix = f"@{IMPORTED_USER_DOMAIN}"
    return email[: -len(suffix)] if email.endswith(suffix) else email


def _item_row(item: ItemInfo) -> dict[str, object]:
    return {
        "external_id": item.id,
        "title": item.title or item.id,
        "description": item.description,
        "category": item.category,
        "tags": list(item.tags),
    }


def _when(time: Timestamp) -> datetime:
    if isinstance(time, datetime):
        return time if time.tzinfo is not None else time.replace(tzinfo=UTC)
    return datetime.fromtimestamp(time, tz=UTC)


async def upsert_users(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    keys: Iterable[str],
    usernames: Mapping[str, str] | None = None,
) -> dict[str, uuid.UUID]:
    """Create the users of ``keys`` that do not exist yet; ``{key: id}`` for every key."""
    names = usernames or {}
    emails = {key: user_email(key) for key in keys}
    rows = [
        {"email": email, "username": (names.get(key) or key.split("@")[0])[:USERNAME_CHARS]}
        for key, email in emails.items()
    ]
    ids = await repo.bulk_upsert_users(session=session, tenant_id=tenant_id, rows=rows)
    return {key: ids[email] for key, email in emails.items()}


async def write_events(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    item_ids: Mapping[str, uuid.UUID],
    *,
    interactions: Sequence[InteractionEvent] | EventColumns = (),
    ratings: Sequence[RatingEvent] = (),
    known_users: IdCache | None = None,
    load: repo.InteractionLoad | None = None,
) -> tuple[int, int]:
    """The one write step of every import: create missing users, add the interactions the
    tenant does not have yet (same user, item, type and time: none are duplicated, so a
    re-import is harmless) and upsert the ratings. ``interactions`` are tuples or, from a
    generator or a file reader, ``EventColumns`` (written without a Python object per row).
    ``item_ids`` maps every item the events name to its id; ``known_users`` holds user ids
    found by earlier batches of the same import (it is filled here). Every user and item
    written is checked to be the tenant's (``check_owners``). With a ``load`` the interactions
    go to a new tenant's bulk load (``with_interaction_load``). Returns (interactions written,
    ratings written).

    The transaction's commit does not wait for the disk (``tune_import_transaction``): what a
    crash of the database loses of an import, re-running it writes again."""
    await repo.tune_import_transaction(session=session)
    events = (
        interactions
        if isinstance(interactions, EventColumns)
        else EventColumns.from_events(interactions)
    )
    used = np.unique(events.user_codes)
    keys = {events.users[code] for code in used.tolist()} | {row[0] for row in ratings}
    cache = known_users if known_users is not None else IdCache()
    # Sorted: concurrent imports create shared new users in one order (no deadlock).
    missing = sorted(key for key in keys if cache.get(key) is None)
    cache.update(await upsert_users(session, tenant_id, missing))
    users = {key: cache[key] for key in keys}
    written = await repo.import_interaction_batch(
        session=session,
        tenant_id=tenant_id,
        batch=_batch(events, users, item_ids, used),
        load=load,
    )
    rated = await repo.bulk_upsert_ratings(
        session=session,
        tenant_id=tenant_id,
        rows=[
            {
                "user_id": users[u],
                "item_id": item_ids[i],
                "rating": float(r),
                "created_at": _when(ts),  # the dataset's time: trending and history need it
            }
            for u, i, r, ts in ratings
        ],
    )
    return int(written.sum()), rated


def _batch(
    events: EventColumns,
    users: Mapping[str, uuid.UUID],
    item_ids: Mapping[str, uuid.UUID],
    used_users: np.ndarray,
) -> repo.InteractionBatch:
    """The repository's columns: each distinct user and item resolved once, then gathered."""
    user_table = np.zeros((len(events.users), 16), dtype=np.uint8)
    user_table[used_users] = uuid_array([users[events.users[code]] for code in used_users])
    used_items = np.unique(events.item_codes)
    item_table = np.zeros((len(events.items), 16), dtype=np.uint8)
    item_table[used_items] = uuid_array([item_ids[events.items[c]] for c in used_items.tolist()])
    return repo.InteractionBatch(
        user_ids=user_table[events.user_codes],
        item_ids=item_table[events.item_codes],
        types=events.types,
        type_codes=events.type_codes,
        values=np.where(np.isnan(events.values), 1.0, events.values),
        times=events.times,
    )


async def ingest_dataset(
    database: Database,
    tenant_id: uuid.UUID,
    *,
    items: Sequence[ItemInfo],
    interactions: Sequence[InteractionEvent] = (),
    ratings: Sequence[RatingEvent] = (),
    progress: Progress | None = None,
) -> IngestCounts:
    """Upsert items, then write the events chunk by chunk with ``write_events``, in one
    transaction: a failure leaves the tenant as it was."""
    user_keys = {row[0] for row in interactions} | {row[0] for row in ratings}
    async with database.session(bulk=True) as session:
        item_map = await repo.bulk_upsert_items(
            session=session, tenant_id=tenant_id, rows=[_item_row(item) for item in items]
        )
        await repo.refresh_statistics(session=session)
        _report(progress, "items", len(item_map), len(items))
        written = rated = 0
        users = IdCache()
        for start in range(0, len(interactions), _CHUNK):
            chunk = interactions[start : start + _CHUNK]
            written += (
                await write_events(
                    session, tenant_id, item_map, interactions=chunk, known_users=users
                )
            )[0]
            _report(progress, "interactions", start + len(chunk), len(interactions))
        for start in range(0, len(ratings), _CHUNK):
            chunk_r = ratings[start : start + _CHUNK]
            rated += (
                await write_events(session, tenant_id, item_map, ratings=chunk_r, known_users=users)
            )[1]
            _report(progress, "ratings", start + len(chunk_r), len(ratings))
    return IngestCounts(len(item_map), len(user_keys), written, rated)


async def ingest_stream(
    database: Database,
    tenant_id: uuid.UUID,
    *,
    items: Sequence[ItemInfo],
    chunks: Iterator[Sequence[InteractionEvent] | EventColumns],
    total: int,
    progress: Progress | None = None,
) -> IngestCounts:
    """Upsert items, then write each chunk of ``chunks`` with ``write_events`` in its own
    transaction: a generated or streamed tenant of any size, a few chunks in memory at a time.
    On PostgreSQL ``STREAM_WRITERS`` transactions on their own connections write chunks at
    once (one prepares its rows while the other's COPY runs on the server; chunks naming the
    same user wait for each other, see ``import_interaction_batch``). ``total`` (the expected
    event count) only feeds ``progress``. A failure keeps the chunks already written;
    re-running writes the rest (the write step skips what exists). A tenant with no
    interactions yet is loaded in bulk (``with_interaction_load``): then a failure leaves it
    without any, and re-running writes all."""
    async with database.session() as session:
        item_map = await repo.bulk_upsert_items(
            session=session, tenant_id=tenant_id, rows=[_item_row(item) for item in items]
        )
    async with database.session() as session:
        await repo.refresh_statistics(session=session)
    _report(progress, "items", len(item_map), len(items))
    users = IdCache()
    read = written = 0
    source = iter(chunks)

    async def write_all(load: repo.InteractionLoad | None) -> int:
        async def write_next_chunks() -> None:
            nonlocal read, written
            for chunk in source:  # shared by the writers: each takes the next chunk
                async with database.session(bulk=True) as session:
                    done, _ = await write_events(
                        session,
                        tenant_id,
                        item_map,
                        interactions=chunk,
                        known_users=users,
                        load=load,
                    )
                written += done  # not ``written += await ...``: that reads it before the await
                read += len(chunk)
                _report(progress, "interactions", read, max(total, read))

        parallel = STREAM_WRITERS if database.engine.dialect.name == "postgresql" else 1
        async with asyncio.TaskGroup() as writers:
            for _ in range(parallel):
                writers.create_task(write_next_chunks())
        return written

    written = await with_interaction_load(database, tenant_id, total, write_all)
    return IngestCounts(len(item_map), len(users), written, 0)


async def with_interaction_load(
    database: Database,
    tenant_id: uuid.UUID,
    expected_rows: int,
    write: Callable[[repo.InteractionLoad | None], Awaitable[int]],
) -> int:
    """Run ``write`` (which returns the interactions it wrote) with a bulk load of the tenant
    where one applies (PostgreSQL, a tenant with no interactions yet, ``expected_rows`` at least
    ``LOAD_MIN_ROWS``: see ``storage.repositories.interaction_loads``), else with None (the
    normal write step); the interactions written, less those the load's end drops as repeats."""
    load = await repo.begin_interaction_load(database, tenant_id, expected_rows)
    if load is None:
        return await write(None)
    try:
        written = await write(load)
    except BaseException:
        await repo.abandon_interaction_load(load)
        raise
    return written - await repo.finish_interaction_load(database, load)


def _report(progress: Progress | None, stage: str, done: int, total: int) -> None:
    if progress is not None and total:
        progress(stage, done, total)
