"""A new tenant's first large import on PostgreSQL: written unindexed, indexed once, swapped in.

Keeping the interaction indexes up to date row by row costs the server about 23 µs per row, of
about 38 µs for the whole write step; writing into a table with no index costs 1.5 µs, and
building the indexes afterwards, a sort each, about 4 µs. ``interactions`` has one partition
per tenant (migration 0007), so a tenant that has no interactions yet can be loaded like that:

1. ``begin_interaction_load`` creates a side table shaped like ``interactions``, with no index,
   and holds an advisory lock on the tenant (a second large import meanwhile takes the normal
   path, and a leftover side table of a crashed load is dropped by the next load).
2. ``import_interaction_batch(..., load=...)`` COPYs each chunk there, checking users and items
   as always. Each chunk removes its own repeated events; a hash of each row's user and time
   is remembered (``MomentSet``), since an event can only repeat one of an earlier chunk if
   its user has a row at the same moment.
3. ``finish_interaction_load`` builds the partition's indexes (two at a time, on two
   connections), removes the events repeated across chunks (first written wins), and in one
   short transaction moves any event recorded into the tenant meanwhile, replaces the empty
   partition with the side table and commits. Nothing of the load is visible before that.

The swap takes ``interactions``' strongest lock for milliseconds, but must wait for every
running reader of the table to get it: it waits at most ``SWAP_WAIT`` per attempt and retries;
if readers never let go, the rows are copied into the partition instead (slow, never blocking).
SQLite (one writer at a time) and small imports (``LOAD_MIN_ROWS``) use the normal write step.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.db import Database, translated_errors
from storage.repositories._bulk import row_hashes

log = logging.getLogger(__name__)

LOAD_MIN_ROWS = 200_000  # below this, keeping indexes row by row costs less than building them
SWAP_WAIT = "5s"  # per attempt to take the table lock of the swap
SWAP_ATTEMPTS = 12
INDEX_MEMORY = "256MB"  # maintenance_work_mem of each index build (two run at once)
LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout ran out
_INDEX_DEF = re.compile(r"^CREATE (UNIQUE )?INDEX \S+ ON ONLY \S+ ")


@dataclass
class InteractionLoad:
    """An import in progress into a side table (``begin_interaction_load``)."""

    tenant_id: uuid.UUID
    table: str
    partition: str
    connection: AsyncConnection  # holds the tenant's advisory lock until the load ends
    users: set[bytes] = field(default_factory=set)  # users with rows in the load
    items: set[bytes] = field(default_factory=set)
    moments: MomentSet = field(default_factory=lambda: MomentSet())
    may_repeat: bool = False  # some row shares its user and time with an earlier chunk's
    rows: int = 0

    def note_chunk(
        self, user_ids: np.ndarray, times: np.ndarray, users: np.ndarray, items: np.ndarray
    ) -> None:
        """Remember a chunk's rows' moments (``user_ids``, UUID bytes ``(n, 16)`` uint8, and
        ``times``, int64) and its distinct ``users`` and ``items`` (UUID bytes)."""
        self.users.update(_rows(users))
        self.items.update(_rows(items))
        keys = np.empty((len(times), 3), dtype=np.uint64)
        keys[:, 0:2] = np.ascontiguousarray(user_ids).view(np.uint64)
        keys[:, 2] = np.asarray(times, dtype=np.int64).view(np.uint64)
        moments = np.unique(row_hashes(keys))
        self.may_repeat = self.may_repeat or self.moments.any_of(moments)
        self.moments.add(moments)
        self.rows += len(times)


class MomentSet:
    """A set of 64-bit hashes as sorted runs of falling sizes (merged as they grow, as in a
    log-structured merge tree): adding n hashes in chunks costs O(n log n) in all, a lookup
    one binary search per run. 8 bytes per row: 80 MB for a 10M-row load. A hash shared by
    two different moments only makes the load look for repeats it will not find."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def any_of(self, hashes: np.ndarray) -> bool:
        for run in self.runs:
            found = np.searchsorted(run, hashes).clip(max=len(run) - 1)
            if (run[found] == hashes).any():
                return True
        return False

    def add(self, hashes: np.ndarray) -> None:
        """Add sorted, distinct ``hashes``."""
        self.runs.append(hashes)
        while len(self.runs) > 1 and len(self.runs[-1]) >= len(self.runs[-2]):
            newest = self.runs.pop()
            self.runs[-1] = np.sort(np.concatenate([self.runs[-1], newest]))


def _rows(ids: np.ndarray) -> list[bytes]:
    raw = np.ascontiguousarray(ids).tobytes()
    return [raw[start : start + 16] for start in range(0, len(raw), 16)]


def _hex(ids: set[bytes]) -> list[str]:
    return [key.hex() for key in ids]


def _lock_key(tenant_id: uuid.UUID) -> int:
    digest = hashlib.blake2b(b"interaction-load:" + tenant_id.bytes, digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def begin_interaction_load(
    database: Database, tenant_id: uuid.UUID, expected_rows: int
) -> InteractionLoad | None:
    """A load for the tenant's import of ``expected_rows`` events, or None where the normal
    write step is the one to use: not PostgreSQL, fewer than ``LOAD_MIN_ROWS`` rows, a tenant
    that already has interactions, or another load of the tenant running."""
    if database.engine.dialect.name != "postgresql" or expected_rows < LOAD_MIN_ROWS:
        return None
    connection = await database.engine.connect()
    connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
    try:
        with translated_errors():
            locked = await connection.scalar(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": _lock_key(tenant_id)}
            )
            if not locked:
                await connection.close()
                return None
            partition = await connection.scalar(
                text("SELECT interactions_partition(:tenant)"), {"tenant": tenant_id}
            )
            has_rows = await connection.scalar(text(f'SELECT EXISTS (SELECT 1 FROM "{partition}")'))
            if has_rows:
                await connection.close()  # ends the session: the advisory lock goes with it
                return None
            table = f"interaction_load_{tenant_id.hex}"
            await connection.exec_driver_sql(f'DROP TABLE IF EXISTS "{table}"')
            await connection.exec_driver_sql(
                f'CREATE TABLE "{table}" (LIKE interactions INCLUDING DEFAULTS)'
            )
    except BaseException:
        await connection.close()
        raise
    log.info("tenant %s: loading about %d interactions into %s", tenant_id, expected_rows, table)
    return InteractionLoad(tenant_id, table, partition, connection)


async def abandon_interaction_load(load: InteractionLoad) -> None:
    """Drop what a failed load wrote; the tenant is as it was before the load."""
    try:
        with translated_errors():
            await load.connection.exec_driver_sql(f'DROP TABLE IF EXISTS "{load.table}"')
    finally:
        await load.connection.close()


async def finish_interaction_load(database: Database, load: InteractionLoad) -> int:
    """Index the side table and make it the tenant's partition; returns how many loaded rows
    were dropped (events repeated across chunks, or of users or items deleted meanwhile)."""
    steps: dict[str, float] = {}
    started = time.perf_counter()

    def step(name: str) -> None:
        nonlocal started
        now = time.perf_counter()
        steps[name], started = round(now - started, 2), now

    try:
        with translated_errors():
            await _build_indexes(database, load)
            step("indexes")
            connection = load.connection
            await connection.exec_driver_sql(f'ANALYZE "{load.table}"')
            step("analyze")
            removed = 0
            if load.may_repeat:
                result = await connection.exec_driver_sql(_REPEATED_SQL.format(table=load.table))
                removed += result.rowcount
                step("repeats")
            await connection.exec_driver_sql(
                f'ALTER TABLE "{load.table}" ADD CONSTRAINT "{load.table}_tenant" '
                f"CHECK (tenant_id = '{load.tenant_id}')"  # ATTACH then need not scan the rows
            )
            step("check")
            removed += await _swap(database, load)
            step("swap")
    except BaseException:
        await abandon_interaction_load(load)
        raise
    await load.connection.close()
    log.info(
        "tenant %s: %d interactions loaded (seconds: %s)",
        load.tenant_id,
        load.rows - removed,
        steps,
    )
    return removed


# First written wins: a repeated event keeps its smallest (earliest, UUIDv7) id. Only rows
# sharing their user and time with another row can repeat one: one aggregate over the table
# finds those (a few, or none: two events of a user rarely share a microsecond), and the
# (tenant, user, created_at) index finds each one's twins. Joining every row of the repeated
# users to its twins instead took 38 s of a 10M-row CSV import, and filtering the aggregate by
# those users (20,000 ids in an array) made it a linear search per row: 300 s. The aggregate
# alone took 13.6 s there, so it runs only when ``MomentSet`` saw a moment twice.
_REPEATED_SQL = """
    DELETE FROM "{table}" AS later USING "{table}" AS earlier, (
        SELECT user_id, created_at FROM "{table}"
        GROUP BY user_id, created_at HAVING count(*) > 1
    ) AS shared
    WHERE later.user_id = shared.user_id AND later.created_at = shared.created_at
      AND earlier.tenant_id = later.tenant_id AND earlier.user_id = later.user_id
      AND earlier.created_at = later.created_at AND earlier.item_id = later.item_id
      AND earlier.interaction_type = later.interaction_type AND earlier.id < later.id
"""


# The rows of ``source`` whose event (user, time, item, type) ``target`` lacks, into ``target``:
# both are one tenant's and ``target`` is indexed on (tenant, user, created_at).
_MOVE_MISSING_SQL = """
    INSERT INTO "{target}" SELECT * FROM "{source}" AS s WHERE NOT EXISTS (
        SELECT 1 FROM "{target}" AS t
        WHERE t.tenant_id = s.tenant_id AND t.user_id = s.user_id
          AND t.created_at = s.created_at AND t.item_id = s.item_id
          AND t.interaction_type = s.interaction_type
    )
"""


async def _index_statements(connection: AsyncConnection, table: str) -> tuple[list[str], list[str]]:
    """What gives ``table`` the indexes and keys of ``interactions``' partitions, read from the
    catalogue, so that ATTACH adopts them instead of building its own: index builds (which
    can run side by side), then the statements that turn unique indexes into keys."""
    rows = await connection.execute(
        text(
            """
            SELECT pg_get_indexdef(i.indexrelid), c.contype
            FROM pg_index AS i
            LEFT JOIN pg_constraint AS c ON c.conindid = i.indexrelid AND c.contype IN ('p', 'u')
            WHERE i.indrelid = 'interactions'::regclass
            """
        )
    )
    builds, keys = [], []
    for number, (definition, constraint) in enumerate(rows):
        if constraint is None:
            builds.append(_INDEX_DEF.sub(rf'CREATE \1INDEX ON "{table}" ', definition))
            continue
        # ADD PRIMARY KEY would build under a lock that stops every other build meanwhile.
        name = f"{table}_key{number}"
        builds.insert(0, _INDEX_DEF.sub(rf'CREATE \1INDEX "{name}" ON "{table}" ', definition))
        kind = "PRIMARY KEY" if constraint == "p" else "UNIQUE"
        keys.append(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {kind} USING INDEX "{name}"')
    # The partial index holds only keyed rows (none in an import): cheapest, so last.
    return sorted(builds, key=lambda statement: " WHERE " in statement), keys


async def _build_indexes(database: Database, load: InteractionLoad) -> None:
    builds, keys = await _index_statements(load.connection, load.table)

    async def builder() -> None:
        async with database.engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.exec_driver_sql(f"SET maintenance_work_mem = '{INDEX_MEMORY}'")
            await connection.exec_driver_sql("SET max_parallel_maintenance_workers = 0")
            while builds:
                await connection.exec_driver_sql(builds.pop(0))

    async with asyncio.TaskGroup() as builders:
        for _ in range(2):
            builders.create_task(builder())
    for statement in keys:
        await load.connection.exec_driver_sql(statement)


async def _swap(database: Database, load: InteractionLoad) -> int:
    """Make the side table the tenant's partition; the rows dropped as orphans."""
    for attempt in range(SWAP_ATTEMPTS):
        try:
            async with database.engine.begin() as connection:
                removed = await _drop_orphans(connection, load)
                await connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{SWAP_WAIT}'")
                await connection.exec_driver_sql(
                    f'ALTER TABLE interactions DETACH PARTITION "{load.partition}"'
                )
                # Events recorded into the tenant while the load ran, but not those the load
                # carries too (a second import of the same file meanwhile took the normal
                # step): each event once.
                await connection.exec_driver_sql(
                    _MOVE_MISSING_SQL.format(target=load.table, source=load.partition)
                )
                await connection.exec_driver_sql(f'DROP TABLE "{load.partition}"')
                await connection.exec_driver_sql(
                    f'ALTER TABLE "{load.table}" RENAME TO "{load.partition}"'
                )
                await connection.execute(
                    text(
                        f'ALTER TABLE interactions ATTACH PARTITION "{load.partition}" '
                        f"FOR VALUES IN ('{load.tenant_id}')"
                    )
                )
            return removed
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
            log.warning(
                "tenant %s: readers held interactions, swap attempt %d of %d",
                load.tenant_id,
                attempt + 1,
                SWAP_ATTEMPTS,
            )
    # Readers never let go: copy the rows in instead (row by row index upkeep, no table lock).
    async with database.engine.begin() as connection:
        removed = await _drop_orphans(connection, load)
        loaded = await connection.scalar(text(f'SELECT count(*) FROM "{load.table}"'))
        moved = await connection.exec_driver_sql(
            _MOVE_MISSING_SQL.format(target=load.partition, source=load.table)
        )
        await connection.exec_driver_sql(f'DROP TABLE "{load.table}"')
    # the events another import wrote meanwhile are the partition's already
    return removed + int(loaded or 0) - moved.rowcount


async def _drop_orphans(connection: AsyncConnection, load: InteractionLoad) -> int:
    """Lock the load's users and items (as a write step does) so none is deleted before the
    swap commits, and drop the rows of any deleted since its chunk was written."""
    removed = 0
    for owner, column, ids in (("users", "user_id", load.users), ("items", "item_id", load.items)):
        params = {"tenant": load.tenant_id, "ids": _hex(ids)}
        locked = await connection.scalar(
            text(
                f"SELECT count(*) FROM (SELECT 1 FROM {owner} WHERE tenant_id = :tenant "
                "AND id = ANY(CAST(:ids AS uuid[])) FOR KEY SHARE) AS kept"
            ),
            params,
        )
        if locked == len(ids):
            continue
        result = await connection.execute(
            text(
                f'DELETE FROM "{load.table}" AS l WHERE NOT EXISTS (SELECT 1 FROM {owner} AS o '
                f"WHERE o.tenant_id = :tenant AND o.id = l.{column})"
            ),
            {"tenant": load.tenant_id},
        )
        removed += result.rowcount
    return removed
