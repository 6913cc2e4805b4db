"""PostgreSQL: one ``interactions`` partition per tenant, and a new tenant's bulk load.

A large first import is written into an unindexed side table, indexed once and swapped in as
the tenant's partition (``storage.repositories.interaction_loads``); these tests check that
what a user ends up with is what the normal write step would have given them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from ingest.writer import ingest_stream
from storage import repositories as repo
from storage.db import Database
from storage.repositories import interaction_loads
from storage.repositories.interaction_batch import InteractionBatch
from tests.storage.sql_support import make_item, make_tenant, make_user, migrated_database
from training.data import EventColumns
from training.datasets.synthetic import StreamSpec, stream_events, stream_items

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
async def database(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    async with migrated_database("postgresql", request) as database:
        yield database


@pytest.fixture
def always_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(interaction_loads, "LOAD_MIN_ROWS", 0)


async def _tenant(database: Database) -> uuid.UUID:
    async with database.session() as session:
        return (await make_tenant(session)).id


async def _scalar(database: Database, sql: str, **params: object) -> object:
    async with database.session() as session:
        return await session.scalar(text(sql), params)


async def _indexes(database: Database, tenant_id: uuid.UUID) -> list[str]:
    """The tenant partition's indexes, by their parent index (so names do not matter)."""
    async with database.session() as session:
        rows = await session.execute(
            text(
                """
                SELECT parent.relname FROM pg_inherits AS link
                JOIN pg_class AS child ON child.oid = link.inhrelid
                JOIN pg_class AS parent ON parent.oid = link.inhparent
                JOIN pg_index AS i ON i.indexrelid = child.oid
                WHERE i.indrelid = to_regclass(interactions_partition(:tenant))
                """
            ),
            {"tenant": tenant_id},
        )
        return sorted(rows.scalars())


async def _count(database: Database, tenant_id: uuid.UUID) -> int:
    async with database.session() as session:
        return await repo.count_interactions(session=session, tenant_id=tenant_id)


async def test_each_tenant_has_its_partition_until_it_is_deleted(database: Database) -> None:
    tenant_id = await _tenant(database)
    partition = f"interactions_{tenant_id.hex}"
    assert await _scalar(database, f"SELECT to_regclass('{partition}') IS NOT NULL")
    assert len(await _indexes(database, tenant_id)) == 5  # the primary key and four indexes
    async with database.session() as session:
        tenant = await repo.get_tenant(session=session, tenant_id=tenant_id)
        user = await make_user(session, tenant)
        item = await make_item(session, tenant)
        await repo.record_interaction(
            session=session, tenant_id=tenant_id, user_id=user.id, item_id=item.id,
            interaction_type="view",
        )  # fmt: skip
    assert await _count(database, tenant_id) == 1
    async with database.session() as session:
        await session.execute(text("DELETE FROM tenants WHERE id = :id"), {"id": tenant_id})
    assert await _scalar(database, f"SELECT to_regclass('{partition}') IS NULL")


def _spec(users: int = 60) -> StreamSpec:
    return StreamSpec(users=users, items=30, interactions=users * 20, clusters=3, seed=11)


async def _stream(
    database: Database, tenant_id: uuid.UUID, chunks: Iterator[EventColumns | list], total: int
) -> int:
    counts = await ingest_stream(
        database, tenant_id, items=stream_items(_spec()), chunks=chunks, total=total
    )
    return counts.interactions


async def test_a_new_tenants_load_matches_the_normal_write_step(
    database: Database, always_load: None
) -> None:
    """Same events through the load and through the normal step: the same rows, the same
    indexes; events repeated within a chunk and across chunks are written once; an event
    recorded into the tenant while the load runs is kept."""
    chunks = list(stream_events(_spec(), chunk_rows=300))
    total = sum(map(len, chunks))
    first_user = chunks[0][0][0]
    # chunk 1 repeats 15 events of chunk 0 (a user split over two chunks) and 5 of its own
    doubled = [chunks[0], chunks[1] + chunks[0][:15] + chunks[1][:5], *chunks[2:]]
    loaded = await _tenant(database)
    normal = await _tenant(database)

    def with_live_event() -> Iterator[list]:
        for index, chunk in enumerate(doubled):
            if index == 2:  # the load is running: its rows are not visible yet
                live.set()
            yield chunk

    live = asyncio.Event()

    async def record_live() -> None:
        await live.wait()
        async with database.session() as session:
            user_id = (await repo.get_user_by_email(
                session=session, tenant_id=loaded, email=f"{first_user}@imported.recserve"
            )).id  # fmt: skip
            items = await repo.list_items(session=session, tenant_id=loaded, limit=1)
            await repo.record_interaction(
                session=session, tenant_id=loaded, user_id=user_id, item_id=items[0].id,
                interaction_type="live-click",
            )  # fmt: skip
            assert await repo.count_interactions(session=session, tenant_id=loaded) == 1

    recorder = asyncio.create_task(record_live())
    written = await _stream(database, loaded, with_live_event(), total + 20)
    await recorder
    assert written == total
    assert await _count(database, loaded) == total + 1
    assert not await _scalar(database, f"SELECT to_regclass('interaction_load_{loaded.hex}')")
    assert await _stream(database, normal, iter(doubled), total) == total  # the normal step
    assert await _indexes(database, loaded) == await _indexes(database, normal)
    # ATTACH adopted the load's own indexes: it built none beside them
    assert await _scalar(
        database,
        "SELECT count(*) FROM pg_index WHERE indrelid = to_regclass(interactions_partition(:t))",
        t=loaded,
    ) == len(await _indexes(database, loaded))

    async def events(tenant_id: uuid.UUID) -> set[tuple]:
        async with database.session() as session:
            rows = await session.execute(
                text(
                    "SELECT u.email, i.external_id, e.interaction_type, e.value, e.created_at "
                    "FROM interactions AS e JOIN users AS u ON u.id = e.user_id "
                    "JOIN items AS i ON i.id = e.item_id WHERE e.tenant_id = :t"
                ),
                {"t": tenant_id},
            )
            return {tuple(row) for row in rows if row[2] != "live-click"}

    assert await events(loaded) == await events(normal)
    # The tenant has events now: a second import takes the normal step and adds nothing.
    assert await _stream(database, loaded, iter(chunks), total) == 0
    assert await _count(database, loaded) == total + 1


async def test_a_failed_load_leaves_the_tenant_as_it_was(
    database: Database, always_load: None
) -> None:
    chunks = list(stream_events(_spec(), chunk_rows=300))
    tenant_id = await _tenant(database)

    def failing() -> Iterator[list]:
        yield chunks[0]
        raise RuntimeError("the source broke")

    with pytest.raises(ExceptionGroup):
        await _stream(database, tenant_id, failing(), 1200)
    assert await _count(database, tenant_id) == 0
    assert not await _scalar(database, f"SELECT to_regclass('interaction_load_{tenant_id.hex}')")
    # and the next import loads it from the start
    assert await _stream(database, tenant_id, iter(chunks), 1200) == 1200


async def test_a_swap_that_readers_block_copies_the_rows_instead(
    database: Database, always_load: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(interaction_loads, "SWAP_WAIT", "200ms")
    monkeypatch.setattr(interaction_loads, "SWAP_ATTEMPTS", 2)
    chunks = list(stream_events(_spec(), chunk_rows=300))
    tenant_id = await _tenant(database)
    async with database.engine.connect() as reader:
        await reader.execute(text("SELECT count(*) FROM interactions"))  # holds its lock
        assert await _stream(database, tenant_id, iter(chunks), 1200) == 1200
        await reader.rollback()
    assert await _count(database, tenant_id) == 1200
    assert not await _scalar(database, f"SELECT to_regclass('interaction_load_{tenant_id.hex}')")


async def test_events_of_a_user_deleted_during_the_load_are_dropped(
    database: Database, always_load: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks = list(stream_events(_spec(), chunk_rows=300))
    tenant_id = await _tenant(database)
    gone = chunks[0][0][0]
    gone_events = sum(1 for chunk in chunks for event in chunk if event[0] == gone)

    def deleting() -> Iterator[list]:
        yield chunks[0]
        deleted.set()
        yield from chunks[1:]

    deleted = asyncio.Event()

    async def delete_user() -> None:
        await deleted.wait()
        for _ in range(200):  # until the writer of the first chunk has committed its user
            async with database.session() as session:
                result = await session.execute(
                    text("DELETE FROM users WHERE tenant_id = :t AND email = :e"),
                    {"t": tenant_id, "e": f"{gone}@imported.recserve"},
                )
            if result.rowcount == 1:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the user was never written")

    deleter = asyncio.create_task(delete_user())
    build_indexes = interaction_loads._build_indexes

    async def after_the_delete(*args: object) -> None:
        await deleter  # the user is gone before the load ends
        await build_indexes(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(interaction_loads, "_build_indexes", after_the_delete)
    written = await _stream(database, tenant_id, deleting(), 1200)
    assert gone_events and written == 1200 - gone_events
    assert await _count(database, tenant_id) == 1200 - gone_events


async def test_a_csv_import_into_a_new_tenant_loads_in_bulk(
    database: Database, always_load: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file import uses the same load: lines repeated across its batches are reported
    as duplicates, not written twice."""
    from ingest import files as ingest_files

    monkeypatch.setattr(ingest_files, "BATCH_ROWS", 4)
    tenant_id = await _tenant(database)
    (tmp_path / "items.csv").write_text("external_id,title\na,A\nb,B\n")
    lines = [f"u{n % 3},{'ab'[n % 2]},view,,{1700000000 + n}" for n in range(10)]
    (tmp_path / "events.csv").write_text(
        "user,item,type,value,time\n" + "\n".join(lines + lines[:3]) + "\n"
    )
    report = await ingest_files.import_files(
        database, tenant_id, items=tmp_path / "items.csv", interactions=tmp_path / "events.csv"
    )
    assert (report.interactions, report.duplicates, report.bad_count) == (10, 3, 0)
    assert await _count(database, tenant_id) == 10


async def _events(database: Database, tenant_id: uuid.UUID, count: int) -> InteractionBatch:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    async with database.session() as session:
        tenant = await repo.get_tenant(session=session, tenant_id=tenant_id)
        users = [await make_user(session, tenant) for _ in range(3)]
        items = [await make_item(session, tenant) for _ in range(4)]
    rows = [
        {
            "user_id": users[n % 3].id,
            "item_id": items[n % 4].id,
            "interaction_type": "view",
            "created_at": start + timedelta(minutes=n),
        }
        for n in range(count)
    ]
    return InteractionBatch.from_rows(rows)


@pytest.mark.parametrize("swap", ["swapped", "copied"])
async def test_an_import_meanwhile_of_the_same_events_stores_each_once(
    database: Database, always_load: None, monkeypatch: pytest.MonkeyPatch, swap: str
) -> None:
    """A second import of the same file while the first one's load runs takes the normal
    step (the load holds the tenant's lock); when the load lands, each event is there once,
    whether its side table is swapped in or, with readers in the way, copied."""
    tenant_id = await _tenant(database)
    batch = await _events(database, tenant_id, 60)
    load = await interaction_loads.begin_interaction_load(database, tenant_id, len(batch))
    assert load is not None
    async with database.session() as session:
        await repo.import_interaction_batch(
            session=session, tenant_id=tenant_id, batch=batch, load=load
        )
    # the same events again, meanwhile: no second load for the tenant, the normal step
    assert await interaction_loads.begin_interaction_load(database, tenant_id, 60) is None
    async with database.session() as session:
        written = await repo.import_interaction_batch(
            session=session, tenant_id=tenant_id, batch=batch
        )
    assert written.all() and await _count(database, tenant_id) == 60
    if swap == "copied":
        monkeypatch.setattr(interaction_loads, "SWAP_WAIT", "200ms")
        monkeypatch.setattr(interaction_loads, "SWAP_ATTEMPTS", 1)
        async with database.engine.connect() as reader:
            await reader.execute(text("SELECT count(*) FROM interactions"))  # holds its lock
            removed = await interaction_loads.finish_interaction_load(database, load)
            await reader.rollback()
        assert removed == 60  # every loaded event was the partition's already
    else:
        await interaction_loads.finish_interaction_load(database, load)
    assert await _count(database, tenant_id) == 60
    assert not await _scalar(database, f"SELECT to_regclass('interaction_load_{tenant_id.hex}')")


async def test_a_partition_a_tenant_delete_left_behind_is_dropped_later(
    database: Database,
) -> None:
    """A tenant deleted while a reader holds ``interactions`` keeps its (emptied) partition:
    the delete waits 2 s at most. The scheduler's housekeeping drops it once nobody holds it."""
    tenant_id = await _tenant(database)
    partition = f"interactions_{tenant_id.hex}"
    async with database.engine.connect() as reader:
        await reader.execute(text("SELECT count(*) FROM interactions"))  # holds its lock
        async with database.session() as session:
            await session.execute(text("DELETE FROM tenants WHERE id = :id"), {"id": tenant_id})
        assert await _scalar(database, f"SELECT to_regclass('{partition}') IS NOT NULL")
        async with database.session() as session:  # still held: left for the next round
            assert await repo.drop_orphan_partitions(session=session, lock_wait="100ms") == []
        await reader.rollback()
    async with database.session() as session:
        dropped = await repo.drop_orphan_partitions(session=session)
    assert partition in dropped
    assert await _scalar(database, f"SELECT to_regclass('{partition}') IS NULL")
    other = await _tenant(database)  # a live tenant's partition is never touched
    async with database.session() as session:
        assert f"interactions_{other.hex}" not in await repo.drop_orphan_partitions(session=session)
    assert await _scalar(database, f"SELECT to_regclass('interactions_{other.hex}') IS NOT NULL")
