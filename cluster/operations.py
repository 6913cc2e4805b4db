"""What the command line does, as plain async functions (the CLI only parses and prints)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from graph_api.accounts import AccountGuard, change_tenant_active, change_user_active
from graph_api.auth import Principal, TokenService, hash_password
from graph_api.auth_mutations import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from ingest.export import ExportCounts, export_tenant
from ingest.files import ColumnMap, ImportReport, import_files
from ingest.writer import IngestCounts, Progress, ingest_dataset, ingest_stream
from storage import repositories as repo
from storage.cache import create_cache
from storage.db import Database, migrate
from storage.errors import NotFound
from storage.models import Registration, Tenant, TenantTier, User, UserRole
from storage.rating_scale import SETTING as RATING_SCALE_SETTING
from storage.rating_scale import RatingScale
from storage.settings import Settings
from training.datasets import generate_catalogue, load_movielens
from training.datasets.synthetic import StreamSpec, stream_event_columns, stream_items


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
    settings: Settings,
    *,
    domain: str,
    name: str | None = None,
    tier: str = "basic",
    registration: str = "closed",
    rating_scale: str | None = None,
) -> Tenant:
    scale = RatingScale.parse(rating_scale) if rating_scale is not None else None
    database = await open_database(settings)
    try:
        async with database.session() as session:
            return await repo.create_tenant(
                session=session,
                name=name or domain,
                domain=domain,
                tier=TenantTier(tier),
                registration=Registration(registration),
                settings={RATING_SCALE_SETTING: scale.name} if scale is not None else None,
            )
    finally:
        await database.dispose()


async def ensure_tenant(
    database: Database,
    *,
    domain: str,
    name: str | None = None,
    tier: str = "basic",
    registration: str | None = None,
) -> tuple[Tenant, bool]:
    """The tenant of ``domain``, created when missing; the flag says whether it was created.

    ``registration``, when given, is applied either way (so the tenant ends up in the mode
    asked for); otherwise a new tenant is closed and an existing one keeps its mode.
    """
    async with database.session() as session:
        try:
            tenant = await repo.get_tenant_by_domain(session=session, domain=domain)
        except NotFound:
            tenant = await repo.create_tenant(
                session=session,
                name=name or domain,
                domain=domain,
                tier=TenantTier(tier),
                registration=Registration(registration or Registration.CLOSED),
            )
            return tenant, True
        if registration is not None:
            tenant.registration = Registration(registration)
        return tenant, False


async def set_registration(settings: Settings, *, domain: str, registration: str) -> Tenant:
    """Change who may register in the tenant: open, invite or closed."""
    database = await open_database(settings)
    try:
        async with database.session() as session:
            tenant = await repo.get_tenant_by_domain(session=session, domain=domain)
            return await repo.set_tenant_registration(
                session=session, tenant_id=tenant.id, registration=Registration(registration)
            )
    finally:
        await database.dispose()


async def set_tier(settings: Settings, *, domain: str, tier: str) -> Tenant:
    """Move the tenant to another subscription tier (its rate limits and quotas)."""
    database = await open_database(settings)
    try:
        async with database.session() as session:
            tenant = await repo.get_tenant_by_domain(session=session, domain=domain)
            return await repo.set_tenant_tier(
                session=session, tenant_id=tenant.id, tier=TenantTier(tier)
            )
    finally:
        await database.dispose()


async def set_rating_scale(settings: Settings, *, domain: str, scale: str) -> Tenant:
    """The scale the tenant's ratings arrive on (``0:10``, ``1:100``, ``thumbs``, stars)."""
    parsed = RatingScale.parse(scale)  # a bad scale fails before the database is opened
    database = await open_database(settings)
    try:
        async with database.session() as session:
            tenant = await repo.get_tenant_by_domain(session=session, domain=domain)
            return await repo.set_tenant_rating_scale(
                session=session, tenant_id=tenant.id, scale=parsed
            )
    finally:
        await database.dispose()


async def set_user_active(settings: Settings, *, domain: str, email: str, active: bool) -> User:
    """(De)activate a user; the running API's cache is told, so their tokens stop at once
    (on the embedded in-process cache, within ``account_state_ttl_seconds``)."""
    database = await open_database(settings)
    cache = create_cache(settings)
    try:
        async with database.session() as session:
            tenant = await repo.get_tenant_by_domain(session=session, domain=domain)
            user = await repo.get_user_by_email(session=session, tenant_id=tenant.id, email=email)
        guard = AccountGuard(cache, database, settings)
        return await change_user_active(database, guard, tenant.id, user.id, active)
    finally:
        await cache.close()
        await database.dispose()


async def set_password(settings: Settings, *, domain: str, email: str, password: str) -> User:
    """Give a user (an operator-made admin, say) a password to sign in with (``login``, the
    console). Other sessions are left as they are."""
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        bounds = f"{MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH}"
        raise ValueError(f"a password has {bounds} characters")
    hashed = await hash_password(password)
    database = await open_database(settings)
    try:
        async with database.session() as session:
            tenant = await repo.get_tenant_by_domain(session=session, domain=domain)
            user = await repo.get_user_by_email(session=session, tenant_id=tenant.id, email=email)
            user.password_hash = hashed
            return user
    finally:
        await database.dispose()


async def set_tenant_active(settings: Settings, *, domain: str, active: bool) -> Tenant:
    """(De)activate a tenant; its users' tokens and live subscriptions stop with it."""
    database = await open_database(settings)
    cache = create_cache(settings)
    try:
        tenant = await tenant_by_domain(database, domain)
        guard = AccountGuard(cache, database, settings)
        return await change_tenant_active(database, guard, tenant.id, active)
    finally:
        await cache.close()
        await database.dispose()


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
    interactions: int = 0,
    progress: Progress | None = None,
) -> IngestCounts:
    """The demo catalogue (``per_user`` engagements per user, in memory), or with
    ``interactions`` a streamed tenant of that many events (``StreamSpec``)."""
    database = await open_database(settings)
    try:
        tenant = await tenant_by_domain(database, domain)
        if interactions:  # a large tenant: generated and written one chunk at a time
            spec = StreamSpec(users, items, interactions, clusters, seed)
            return await ingest_stream(
                database,
                tenant.id,
                items=stream_items(spec),
                chunks=stream_event_columns(spec),
                total=interactions,
                progress=progress,
            )
        catalogue = generate_catalogue(users, items, clusters, per_user, seed)
        return await ingest_dataset(
            database,
            tenant.id,
            items=catalogue.items,
            interactions=catalogue.interactions,
            progress=progress,
        )
    finally:
        await database.dispose()


async def ingest_files(
    settings: Settings,
    *,
    domain: str,
    items: Path | None = None,
    users: Path | None = None,
    interactions: Path | None = None,
    ratings: Path | None = None,
    mapping: list[str] | None = None,
    strict: bool = False,
    progress: Progress | None = None,
    rating_scale: str | None = None,
) -> ImportReport:
    """Import the tenant's own files (``ingest.files``); ``rating_scale`` first becomes the
    tenant's (its ratings are read on the tenant's scale)."""
    columns = ColumnMap(mapping or ())  # a bad mapping fails before the database is opened
    scale = RatingScale.parse(rating_scale) if rating_scale is not None else None
    database = await open_database(settings)
    try:
        tenant = await tenant_by_domain(database, domain)
        if scale is not None:
            async with database.session() as session:
                await repo.set_tenant_rating_scale(
                    session=session, tenant_id=tenant.id, scale=scale
                )
        else:
            scale = RatingScale.of_tenant(tenant.settings)
        return await import_files(
            database,
            tenant.id,
            items=items,
            users=users,
            interactions=interactions,
            ratings=ratings,
            columns=columns,
            strict=strict,
            progress=progress,
            rating_scale=scale,
        )
    finally:
        await database.dispose()


async def export(
    settings: Settings,
    *,
    domain: str,
    out: Path,
    file_format: str = "jsonl",
    progress: Progress | None = None,
) -> ExportCounts:
    """Write the tenant's items, users, interactions and ratings into ``out``."""
    database = await open_database(settings)
    try:
        tenant = await tenant_by_domain(database, domain)
        return await export_tenant(
            database, tenant.id, out, file_format=file_format, progress=progress
        )
    finally:
        await database.dispose()


async def issue_token(
    settings: Settings, *, domain: str, email: str, admin: bool = False
) -> IssuedToken:
    """A bearer token for ``email`` in the tenant, creating the user (no password) when missing."""
    database = await open_database(settings)
    try:
        return await issue_token_in(database, settings, domain=domain, email=email, admin=admin)
    finally:
        await database.dispose()


async def issue_token_in(
    database: Database, settings: Settings, *, domain: str, email: str, admin: bool = False
) -> IssuedToken:
    """``issue_token`` on an open database (``admin`` also promotes an existing user)."""
    role = UserRole.ADMIN if admin else UserRole.USER
    async with database.session() as session:
        tenant = await repo.get_tenant_by_domain(session=session, domain=domain)
        try:
            user = await repo.get_user_by_email(session=session, tenant_id=tenant.id, email=email)
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
