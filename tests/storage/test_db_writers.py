"""Writers on SQLite: a transaction that reads and then writes while another one writes
waits for its turn (``Database.session`` begins IMMEDIATE) instead of failing with "database
is locked", as a deferred one (``readonly=True``) does when the other commits in between. A
mutation failed so with UNAVAILABLE when the feedback writer committed during it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from storage.db import BULK_CACHE_KIB, SERVING_CACHE_KIB, Database
from storage.errors import StorageError


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    found = Database(f"sqlite+aiosqlite:///{tmp_path}/writers.db")
    async with found.session() as session:
        await session.execute(text("CREATE TABLE counts (n INTEGER)"))
    try:
        yield found
    finally:
        await found.dispose()


async def _read_then_write(database: Database, value: int, *, readonly: bool = False) -> None:
    async with database.session(readonly=readonly) as session:
        await session.execute(text("SELECT count(*) FROM counts"))
        await asyncio.sleep(0.3)  # the other transaction would write meanwhile
        await session.execute(text("INSERT INTO counts VALUES (:n)"), {"n": value})


async def test_deferred_writers_collide(database: Database) -> None:
    outcomes = await asyncio.gather(
        *(_read_then_write(database, n, readonly=True) for n in (1, 2)), return_exceptions=True
    )
    assert any(isinstance(outcome, StorageError) for outcome in outcomes), outcomes


async def test_writers_that_read_first_wait_their_turn(database: Database) -> None:
    outcomes = await asyncio.gather(
        *(_read_then_write(database, n) for n in (1, 2, 3)), return_exceptions=True
    )
    assert outcomes == [None, None, None]
    async with database.session() as session:
        assert sorted((await session.scalars(text("SELECT n FROM counts"))).all()) == [1, 2, 3]


async def test_readers_run_beside_a_writer(database: Database) -> None:
    async with database.session() as writer:
        await writer.execute(text("INSERT INTO counts VALUES (1)"))
        # The writer holds the lock and has not committed: a reader is not kept waiting.
        async with asyncio.timeout(2):
            async with database.session(readonly=True) as reader:
                seen = (await reader.scalars(text("SELECT count(*) FROM counts"))).one()
        assert seen == 0


async def _cache_kib(session) -> int:
    return (await session.scalars(text("PRAGMA cache_size"))).one()


async def test_a_bulk_transaction_has_a_large_page_cache_for_its_length(
    database: Database,
) -> None:
    """Every pooled connection keeps its own page cache: serving ones stay at SQLite's 2 MiB
    (a 64 MiB cache each grew a replica's memory through a soak); an ingest's gets 64 MiB."""
    async with database.session() as session:
        assert await _cache_kib(session) == SERVING_CACHE_KIB
    async with database.session(bulk=True) as session:
        assert await _cache_kib(session) == BULK_CACHE_KIB
    with pytest.raises(RuntimeError):
        async with database.session(bulk=True) as session:
            raise RuntimeError("the ingest failed")
    # One connection in the pool here: the same one, back to the small cache either way.
    async with database.session(readonly=True) as session:
        assert await _cache_kib(session) == SERVING_CACHE_KIB
