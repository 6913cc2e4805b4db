"""Users of one tenant. Emails are unique per tenant and compared case-insensitively."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Tenant, User, UserRole, utcnow
from storage.repositories._common import (
    align,
    check_page,
    chunks,
    found,
    ids_by_key,
    savepoint,
    table_of,
    upsert_insert,
)

_BATCH = 1000


def normalize_email(email: str) -> str:
    return email.strip().lower()


async def create_user(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    email: str,
    username: str,
    password_hash: str,
    role: UserRole | str = UserRole.USER,
    preferences: Mapping[str, Any] | None = None,
) -> User:
    """Create a user. Conflict if the email exists in this tenant; NotFound if the tenant does not.

    ``password_hash`` is stored as given: hashing belongs to the auth layer.
    """
    user = User(
        tenant_id=tenant_id,
        email=normalize_email(email),
        username=username,
        password_hash=password_hash,
        role=UserRole(role),
        preferences=dict(preferences or {}),
    )
    async with savepoint(session):
        session.add(user)
    return user


async def get_user(*, session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID) -> User:
    """The user ``user_id`` of this tenant; NotFound if absent or another tenant's."""
    user = await session.scalar(select(User).where(User.tenant_id == tenant_id, User.id == user_id))
    return found(user, "user", user_id)


async def get_user_by_email(*, session: AsyncSession, tenant_id: uuid.UUID, email: str) -> User:
    """The user with ``email`` (case-insensitive) in this tenant; NotFound otherwise."""
    normalized = normalize_email(email)
    user = await session.scalar(
        select(User).where(User.tenant_id == tenant_id, User.email == normalized)
    )
    return found(user, "user with email", normalized)


async def set_user_active(
    *, session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID, is_active: bool
) -> User:
    """Enable or disable a user of this tenant (their data stays); NotFound if not theirs."""
    user = await get_user(session=session, tenant_id=tenant_id, user_id=user_id)
    user.is_active = is_active
    await session.flush()
    return user


async def set_preferences(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    preferences: Mapping[str, Any],
) -> User:
    """Replace the user's preferences (a JSON object); NotFound if not this tenant's user."""
    user = await get_user(session=session, tenant_id=tenant_id, user_id=user_id)
    user.preferences = dict(preferences)  # a new object: JSON columns are not change-tracked
    await session.flush()
    return user


async def account_state(*, session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    """Whether the user exists and both they and their tenant are active (one query)."""
    query = (
        select(User.is_active, Tenant.is_active)
        .join(Tenant, Tenant.id == User.tenant_id)
        .where(User.tenant_id == tenant_id, User.id == user_id)
    )
    row = (await session.execute(query)).first()
    return row is not None and bool(row[0]) and bool(row[1])


async def account_row(
    *, session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID
) -> tuple[User | None, bool]:
    """The user's row (None when they are not the tenant's) and whether the tenant is active,
    in one query: the account check of a user's first request also fills their row cache."""
    query = (
        select(User, Tenant.is_active)
        .join(Tenant, Tenant.id == User.tenant_id)
        .where(User.tenant_id == tenant_id, User.id == user_id)
    )
    row = (await session.execute(query)).first()
    return (row[0], bool(row[1])) if row is not None else (None, False)


async def count_users(*, session: AsyncSession, tenant_id: uuid.UUID) -> int:
    """How many accounts the tenant has (deactivated ones included)."""
    query = select(func.count()).select_from(User).where(User.tenant_id == tenant_id)
    return int(await session.scalar(query) or 0)


async def list_users(
    *, session: AsyncSession, tenant_id: uuid.UUID, limit: int = 100, offset: int = 0
) -> Sequence[User]:
    """One page of the tenant's users, oldest first."""
    check_page(limit, offset)
    query = (
        select(User)
        .where(User.tenant_id == tenant_id)
        .order_by(User.created_at, User.id)
        .limit(limit)
        .offset(offset)
    )
    return (await session.scalars(query)).all()


async def users_by_ids(
    *, session: AsyncSession, tenant_id: uuid.UUID, user_ids: Sequence[uuid.UUID]
) -> list[User | None]:
    """Batch lookup for DataLoaders: one entry per id, in order; ``None`` for unknown ids
    and for ids of other tenants."""
    rows: list[User] = []
    for batch in chunks(dict.fromkeys(user_ids), _BATCH):
        query = select(User).where(User.tenant_id == tenant_id, User.id.in_(batch))
        rows.extend((await session.scalars(query)).all())
    return align(user_ids, rows)


# An unusable hash: argon2 verification of any password against it fails.
NO_PASSWORD = "!"


async def bulk_upsert_users(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    rows: Iterable[Mapping[str, Any]],
    chunk_size: int = 1000,
) -> dict[str, uuid.UUID]:
    """Create the users that do not exist yet (rows: ``email``, ``username``); returns
    ``{email: id}`` for every row. Existing users keep everything, password included; new
    ones get no password (imported users log in only once they set one)."""
    wanted = {normalize_email(row["email"]): row for row in rows}
    table = table_of(User)
    now = utcnow()
    async with savepoint(session):
        for chunk in chunks(wanted.items(), chunk_size):
            values = [
                {
                    "id": uuid.uuid4(),
                    "tenant_id": tenant_id,
                    "email": email,
                    "username": row.get("username") or email.split("@")[0],
                    "password_hash": NO_PASSWORD,
                    "role": UserRole.USER,
                    "preferences": {},
                    "is_active": True,
                    "created_at": now,
                }
                for email, row in chunk
            ]
            # A parameter list (compiled once, sent in batches), not a compiled VALUES clause.
            insert = upsert_insert(session, table)
            await session.execute(
                insert.on_conflict_do_nothing(index_elements=["tenant_id", "email"]), values
            )
    return await ids_by_key(session, User, "email", tenant_id, wanted)
