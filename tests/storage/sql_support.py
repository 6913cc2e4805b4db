"""Shared helpers for the relational-store suites: throwaway databases and small factories.

Each suite migrates its own fresh database per backend (a temp SQLite file, or a uniquely named
PostgreSQL database dropped afterwards), so runs are repeatable and never clash with others.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from storage import repositories as repo
from storage.db import Database, create_database, drop_database, migrate
from storage.models import Item, Tenant, User

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.services)]


def backend_url(backend: str, request: pytest.FixtureRequest) -> str:
    """A URL for a database that does not exist yet on ``backend``."""
    if backend == "sqlite":
        directory = Path(tempfile.mkdtemp(prefix="recserve-sql-"))
        return f"sqlite+aiosqlite:///{directory / 'test.db'}"
    server = make_url(request.getfixturevalue("postgres_url"))
    name = f"recserve_test_{uuid.uuid4().hex[:12]}"
    return server.set(database=name).render_as_string(hide_password=False)


@asynccontextmanager
async def temporary_database(url: str) -> AsyncIterator[str]:
    await create_database(url)
    try:
        yield url
    finally:
        await drop_database(url)


@asynccontextmanager
async def migrated_database(
    backend: str, request: pytest.FixtureRequest
) -> AsyncIterator[Database]:
    async with temporary_database(backend_url(backend, request)) as url:
        await migrate(url)
        database = Database(url)
        try:
            yield database
        finally:
            await database.dispose()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def make_tenant(session: AsyncSession) -> Tenant:
    return await repo.create_tenant(session=session, name="Shop", domain=unique("shop") + ".test")


async def make_user(session: AsyncSession, tenant: Tenant, email: str | None = None) -> User:
    return await repo.create_user(
        session=session,
        tenant_id=tenant.id,
        email=email or unique("user") + "@example.com",
        username=unique("name"),
        password_hash="argon2-hash",
    )


async def make_item(session: AsyncSession, tenant: Tenant, **fields: object) -> Item:
    values: dict[str, object] = {"external_id": unique("sku"), "title": "Plain item", **fields}
    return await repo.create_item(session=session, tenant_id=tenant.id, **values)  # type: ignore[arg-type]


async def view_at(
    session: AsyncSession, tenant: Tenant, user: User, item: Item, when: datetime
) -> None:
    """A view recorded as if it happened at ``when``."""
    await repo.record_interaction(
        session=session,
        tenant_id=tenant.id,
        user_id=user.id,
        item_id=item.id,
        interaction_type="view",
        created_at=when,
    )
