"""What the command line does, as plain async functions (the CLI only parses and prints)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from graph_api.auth import Principal, TokenService
from storage import repositories as repo
from storage.db import Database, migrate
from storage.errors import NotFound
from storage.models import Tenant, TenantTier, UserRole
from storage.settings import Settings
from training.datasets import generate_catalogue, load_movielens
from training.ingest import IngestCounts, Progress, ingest_dataset


@dataclass(frozen=True)
class IssuedToken:
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    email: str
    role: str
    access_token: str


async def open_database(settings: Settings) -> Database:
    """The settings' database, migrated: every command works on an empty database."""
    assert settings.database_url is not None
    await migrate(settings.database_url)
    return Database.from_settings(settings)


async def create_tenant(
    settings: Settings, *, domain: str, name: str | None = None, tier: str = "basic"
) -> Tenant:
    database = await open_database(settings)
    try:
        async with database.session() as session:
            return await repo.create_tenant(
                session=session, name=name or domain, domain=domain, tier=TenantTier(tier)
            )
    finally:
        await database.dispose()


async def ensure_tenant(
    database: Database, *, domain: str, name: str | None = None, tier: str = "basic"
) -> tuple[Tenant, bool]:
    """The tenant of ``domain``, created when missing; the flag says whether it was created."""
    async with database.session() as session:
        try:
            return await repo.get_tenant_by_domain(session=session, domain=domain), False
        except NotFound:
            tenant = await repo.create_tenant(
                session=session, name=name or domain, domain=domain, tier=TenantTier(tier)
            )
            return tenant, True


async def tenant_by_domain(database: Database, domain: str) -> Tenant:
    async with database.session() as session:
        return await repo.get_tenant_by_domain(session=session, domain=domain)


async def ingest_movielens(
    settings: Settings, *, source: str, domain: str, progress: Progress | None = None
) -> IngestCounts:
    data = load_movielens(source, cache_dir=settings.data_dir / "datasets")
    database = await open_database(settings)
    try:
        tenant = await tenant_by_domain(database, domain)
        return await ingest_dataset(
            database, tenant.id, items=data.items, ratings=data.rows, progress=progress
        )
    finally:
        await database.dispose()


async def ingest_synthetic(
    settings: Settings,
    *,
    domain: str,
    users: int,
    items: int,
    clusters: int,
    per_user: int,
    seed: int,
    progress: Progress | None = None,
) -> IngestCounts:
    catalogue = generate_catalogue(users, items, clusters, per_user, seed)
    database = await open_database(settings)
    try:
        tenant = await tenant_by_domain(database, domain)
        return await ingest_dataset(
            database,
            tenant.id,
            items=catalogue.items,
            interactions=catalogue.interactions,
            progress=progress,
        )
    finally:
        await database.dispose()


async def issue_token(
    settings: Settings, *, domain: str, email: str, admin: bool = False
) -> IssuedToken:
    """A bearer token for ``email`` in the tenant, creating the user (no password) when missing."""
    database = await open_database(settings)
    role = UserRole.ADMIN if admin else UserRole.USER
    try:
        async with database.session() as session:
            tenant = await repo.get_tenant_by_domain(session=session, domain=domain)
            try:
                user = await repo.get_user_by_email(
                    session=session, tenant_id=tenant.id, email=email
                )
                if admin and user.role != UserRole.ADMIN:
                    user.role = UserRole.ADMIN
            except NotFound:
                user = await repo.create_user(
                    session=session,
                    tenant_id=tenant.id,
                    email=email,
                    username=email.split("@")[0],
                    password_hash=repo.NO_PASSWORD,
                    role=role,
                )
            principal = Principal(tenant.id, user.id, str(user.role), str(tenant.tier))
            token = TokenService(settings).issue(principal, "access")
            return IssuedToken(tenant.id, user.id, user.email, str(user.role), token)
    finally:
        await database.dispose()
