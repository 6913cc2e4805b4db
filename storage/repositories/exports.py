"""A tenant's data read back out in chunks, for ``recserve export``.

Each reader streams one query from a server-side cursor (``yield_per``), so an export of
millions of rows keeps memory flat. Users and items are named by the tenant's own keys
(e-mail, ``external_id``), never by this database's ids: those mean nothing elsewhere.
Password hashes, roles and preferences are never read.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Interaction, Item, Rating, User


class ExportedItem(NamedTuple):
    external_id: str
    title: str
    description: str | None
    category: str | None
    tags: list[str]
    metadata: dict[str, Any]
    is_active: bool


class ExportedUser(NamedTuple):
    email: str
    username: str


class ExportedInteraction(NamedTuple):
    email: str
    external_id: str
    interaction_type: str
    value: float
    created_at: datetime


class ExportedRating(NamedTuple):
    email: str
    external_id: str
    rating: float
    updated_at: datetime


async def _stream(
    session: AsyncSession, query: Select[Any], chunk_size: int
) -> AsyncIterator[list[Any]]:
    result = await session.stream(query.execution_options(yield_per=chunk_size))
    async for partition in result.partitions():
        yield list(partition)


async def iter_items(
    *, session: AsyncSession, tenant_id: uuid.UUID, chunk_size: int = 10_000
) -> AsyncIterator[list[ExportedItem]]:
    """Every item of the tenant, deleted ones too (``is_active`` says which)."""
    query = (
        select(
            Item.external_id,
            Item.title,
            Item.description,
            Item.category,
            Item.tags,
            Item.item_metadata,
            Item.is_active,
        )
        .where(Item.tenant_id == tenant_id)
        .order_by(Item.created_at, Item.external_id)
    )
    async for chunk in _stream(session, query, chunk_size):
        yield [ExportedItem(*row) for row in chunk]


async def iter_users(
    *, session: AsyncSession, tenant_id: uuid.UUID, chunk_size: int = 10_000
) -> AsyncIterator[list[ExportedUser]]:
    """Every user of the tenant: e-mail and username only."""
    query = (
        select(User.email, User.username)
        .where(User.tenant_id == tenant_id)
        .order_by(User.created_at, User.email)
    )
    async for chunk in _stream(session, query, chunk_size):
        yield [ExportedUser(*row) for row in chunk]


async def iter_interaction_rows(
    *, session: AsyncSession, tenant_id: uuid.UUID, chunk_size: int = 10_000
) -> AsyncIterator[list[ExportedInteraction]]:
    """Every interaction, oldest first, with its user's e-mail and its item's external id."""
    query = (
        select(
            User.email,
            Item.external_id,
            Interaction.interaction_type,
            Interaction.value,
            Interaction.created_at,
        )
        .join(User, (User.tenant_id == Interaction.tenant_id) & (User.id == Interaction.user_id))
        .join(Item, (Item.tenant_id == Interaction.tenant_id) & (Item.id == Interaction.item_id))
        .where(Interaction.tenant_id == tenant_id)
        .order_by(Interaction.created_at, Interaction.id)
    )
    async for chunk in _stream(session, query, chunk_size):
        yield [ExportedInteraction(*row) for row in chunk]


async def iter_rating_rows(
    *, session: AsyncSession, tenant_id: uuid.UUID, chunk_size: int = 10_000
) -> AsyncIterator[list[ExportedRating]]:
    """Every rating (its latest value and time), with the user's e-mail and item's external id."""
    query = (
        select(User.email, Item.external_id, Rating.rating, Rating.updated_at)
        .join(User, (User.tenant_id == Rating.tenant_id) & (User.id == Rating.user_id))
        .join(Item, (Item.tenant_id == Rating.tenant_id) & (Item.id == Rating.item_id))
        .where(Rating.tenant_id == tenant_id)
        .order_by(Rating.updated_at, Rating.id)
    )
    async for chunk in _stream(session, query, chunk_size):
        yield [ExportedRating(*row) for row in chunk]
