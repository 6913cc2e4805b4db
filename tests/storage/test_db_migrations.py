"""Alembic migrations are what create the schema, on every backend, and can be undone."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from storage.db import Database, downgrade, migrate
from storage.errors import Unavailable
from storage.models import Base
from tests.storage.sql_support import BACKENDS, backend_url, temporary_database

TABLES = {
    "tenants",
    "users",
    "items",
    "interactions",
    "ratings",
    "refresh_families",
    "tenant_invites",
    "training_jobs",
    "leases",
    "experiments",
    "impressions",
    "attributions",
}


def _schema_differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def _tables(database: Database) -> set[str]:
    async with database.engine.connect() as connection:
        names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    return set(names) - {"alembic_version"}


@pytest.mark.parametrize("backend", BACKENDS)
async def test_upgrade_downgrade_upgrade(backend: str, request: pytest.FixtureRequest) -> None:
    async with temporary_database(backend_url(backend, request)) as url:
        database = Database(url)
        try:
            await migrate(url)
            assert await _tables(database) == TABLES
            async with database.engine.connect() as connection:
                version = await connection.scalar(text("SELECT version_num FROM alembic_version"))
                assert version == "0008"
                # The hand-written migration and the models describe the same schema.
                assert await connection.run_sync(_schema_differences) == []
            await migrate(url)  # already at head: a no-op, not an error
            await downgrade(url)
            assert await _tables(database) == set()
            await migrate(url)
            assert await _tables(database) == TABLES
        finally:
            await database.dispose()


async def test_unreachable_server_is_unavailable() -> None:
    # Port 1 on localhost refuses connections: the driver error must not leak through.
    with pytest.raises(Unavailable):
        await migrate("postgresql+asyncpg://postgres@127.0.0.1:1/nothing")
    database = Database("postgresql+asyncpg://postgres@127.0.0.1:1/nothing")
    try:
        with pytest.raises(Unavailable):
            async with database.session() as session:
                await session.execute(text("SELECT 1"))
    finally:
        await database.dispose()


@pytest.mark.services
async def test_partitioning_keeps_every_interaction(request: pytest.FixtureRequest) -> None:
    """PostgreSQL, 0006 -> 0007: existing events move into their tenants' partitions, and
    back again on downgrade."""
    async with temporary_database(backend_url("postgresql", request)) as url:
        await migrate(url, "0006")
        database = Database(url)
        try:
            async with database.engine.begin() as connection:
                for tenant in ("a", "b"):
                    await connection.execute(
                        text(
                            f"""
                            WITH t AS (INSERT INTO tenants (id, name, domain, tier, settings,
                                           registration, is_active, created_at)
                                       VALUES (gen_random_uuid(), '{tenant}', '{tenant}.test',
                                               'basic', '{{}}', 'closed', true, now())
                                       RETURNING id)
                            INSERT INTO interactions (id, tenant_id, user_id, item_id,
                                                      interaction_type, value, created_at)
                            SELECT gen_random_uuid(), t.id, gen_random_uuid(),
                                   gen_random_uuid(), 'view', 1, now()
                            FROM t, generate_series(1, {3 if tenant == "a" else 2})
                            """
                        )
                    )
            counts = "SELECT count(*) FROM interactions GROUP BY tenant_id ORDER BY 1"
            await migrate(url)
            async with database.engine.connect() as connection:
                assert list((await connection.execute(text(counts))).scalars()) == [2, 3]
                partitions = await connection.scalar(
                    text(
                        "SELECT count(*) FROM pg_inherits "
                        "WHERE inhparent = 'interactions'::regclass"
                    )
                )
                assert partitions == 2
            await downgrade(url, "0006")
            async with database.engine.connect() as connection:
                assert list((await connection.execute(text(counts))).scalars()) == [2, 3]
        finally:
            await database.dispose()
