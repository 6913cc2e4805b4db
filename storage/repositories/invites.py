"""Invites: single-use, expiring permissions to register in one tenant.

Only a SHA-256 of the token is stored, so a leaked database row cannot be turned into an
account. Consumption is one conditional UPDATE, so an invite is used at most once even when two
registrations race on different replicas.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Invite, UserRole, utcnow
from storage.repositories._common import savepoint
from storage.repositories.users import normalize_email


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedInvite:
    token: str  # shown once, to the admin who minted it
    invite: Invite


async def create_invite(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    expires_at: datetime,
    email: str | None = None,
    role: UserRole | str = UserRole.USER,
    created_by: uuid.UUID | None = None,
) -> IssuedInvite:
    """A new invite; ``email`` (when given) is the only address that may use it."""
    token = secrets.token_urlsafe(32)
    invite = Invite(
        tenant_id=tenant_id,
        token_hash=token_hash(token),
        email=normalize_email(email) if email else None,
        role=UserRole(role),
        created_by=created_by,
        expires_at=expires_at,
    )
    async with savepoint(session):
        session.add(invite)
    return IssuedInvite(token, invite)


async def consume_invite(
    *, session: AsyncSession, tenant_id: uuid.UUID, token: str, email: str
) -> Invite | None:
    """Mark the invite used and return it; None if unknown, another tenant's, used, expired
    or addressed to another email. The caller's transaction decides whether it sticks."""
    now = utcnow()
    conditions = (
        Invite.tenant_id == tenant_id,
        Invite.token_hash == token_hash(token),
        Invite.used_at.is_(None),
        Invite.expires_at > now,
        or_(Invite.email.is_(None), Invite.email == normalize_email(email)),
    )
    invite = await session.scalar(select(Invite).where(*conditions))
    if invite is None:
        return None
    claim = update(Invite).where(Invite.id == invite.id, *conditions).values(used_at=now)
    result: CursorResult = await session.execute(claim)  # type: ignore[assignment]
    if result.rowcount != 1:
        return None  # another registration took it first
    return invite


async def mark_invite_user(
    *, session: AsyncSession, invite_id: uuid.UUID, user_id: uuid.UUID
) -> None:
    await session.execute(update(Invite).where(Invite.id == invite_id).values(used_by=user_id))
