"""Tenant isolation: a security property, tested as one.

Two tenants get the same kind of data; every read made as tenant A must see only A's rows,
and any id or key of tenant B addressed as tenant A must behave as if it did not exist.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from storage import repositories as repo
from storage.db import Database
from storage.errors import NotFound
from storage.models import Item, Tenant, User
from tests.storage.sql_support import BACKENDS, make_item, make_tenant, make_user, migrated_database

SHARED_EMAIL = "same@example.com"
SHARED_SKU = "sku-shared"


@dataclass
class World:
    tenant: Tenant
    user: User
    item: Item


@pytest.fixture(scope="module", params=BACKENDS)
async def database(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    async with migrated_database(request.param, request) as database:
        yield database


async def _populate(session: AsyncSession) -> World:
    tenant = await make_tenant(session)
    user = await make_user(session, tenant, email=SHARED_EMAIL)
    item = await make_item(
        session, tenant, external_id=SHARED_SKU, title="Shared title", category="c"
    )
    ids = {"tenant_id": tenant.id, "user_id": user.id, "item_id": item.id}
    await repo.record_interaction(
        session=session, interaction_type="view", idempotency_key="k", **ids
    )
    await repo.rate_item(session=session, rating=4, **ids)
    return World(tenant, user, item)


@pytest.fixture
async def worlds(database: Database) -> AsyncIterator[tuple[AsyncSession, World, World]]:
    async with database.session() as session:
        yield session, await _populate(session), await _populate(session)


async def test_reads_never_cross_tenants(worlds: tuple[AsyncSession, World, World]) -> None:
    session, a, b = worlds
    t = a.tenant.id
    users = await repo.list_users(session=session, tenant_id=t)
    assert [u.id for u in users] == [a.user.id]
    items = await repo.list_items(session=session, tenant_id=t, search="shared", category="c")
    assert [i.id for i in items] == [a.item.id]
    assert await repo.users_by_ids(session=session, tenant_id=t, user_ids=[b.user.id]) == [None]
    assert await repo.items_by_ids(
        session=session, tenant_id=t, item_ids=[b.item.id], include_inactive=True
    ) == [None]
    history = await repo.interactions_for_users(
        session=session, tenant_id=t, user_ids=[a.user.id, b.user.id]
    )
    assert [len(rows) for rows in history] == [1, 0]
    assert all(row.tenant_id == t for row in history[0])
    ratings = await repo.ratings_for_users(
        session=session, tenant_id=t, user_ids=[a.user.id, b.user.id]
    )
    assert [len(rows) for rows in ratings] == [1, 0]
    stats = await repo.average_ratings(session=session, tenant_id=t, item_ids=[b.item.id])
    assert stats == [repo.RatingStats(None, 0)]
    columns = await repo.load_interactions(session=session, tenant_id=t)
    assert columns.user_ids == [a.user.id]
    streamed = [
        row async for chunk in repo.iter_interactions(session=session, tenant_id=t) for row in chunk
    ]
    assert [row.user_id for row in streamed] == [a.user.id]


async def test_other_tenants_ids_are_not_found(worlds: tuple[AsyncSession, World, World]) -> None:
    session, a, b = worlds
    t = a.tenant.id
    lookups = [
        repo.get_user(session=session, tenant_id=t, user_id=b.user.id),
        repo.get_item(session=session, tenant_id=t, item_id=b.item.id, include_inactive=True),
        repo.update_item(session=session, tenant_id=t, item_id=b.item.id, title="hijacked"),
        repo.delete_item(session=session, tenant_id=t, item_id=b.item.id),
    ]
    for lookup in lookups:
        with pytest.raises(NotFound):
            await lookup
    # Lookups by natural key resolve within the caller's tenant only.
    by_email = await repo.get_user_by_email(session=session, tenant_id=t, email=SHARED_EMAIL)
    assert by_email.id == a.user.id
    by_sku = await repo.get_item_by_external_id(
        session=session, tenant_id=t, external_id=SHARED_SKU
    )
    assert by_sku.id == a.item.id
    with pytest.raises(NotFound):
        await repo.get_user_by_email(session=session, tenant_id=uuid.uuid4(), email=SHARED_EMAIL)
    assert (
        await repo.get_item(session=session, tenant_id=b.tenant.id, item_id=b.item.id)
    ).is_active


@pytest.mark.parametrize("mix", ["user", "item"])
async def test_writes_cannot_reference_other_tenants_rows(
    worlds: tuple[AsyncSession, World, World], mix: str
) -> None:
    session, a, b = worlds
    ids = {"tenant_id": a.tenant.id, "user_id": a.user.id, "item_id": a.item.id}
    ids[f"{mix}_id"] = getattr(b, mix).id
    with pytest.raises(NotFound):
        await repo.record_interaction(session=session, interaction_type="click", **ids)
    with pytest.raises(NotFound):
        await repo.rate_item(session=session, rating=3, **ids)
    row = {key: value for key, value in ids.items() if key != "tenant_id"}
    with pytest.raises(NotFound):
        await repo.bulk_insert_interactions(
            session=session, tenant_id=a.tenant.id, rows=[{**row, "interaction_type": "view"}]
        )
    with pytest.raises(NotFound):
        await repo.bulk_upsert_ratings(
            session=session, tenant_id=a.tenant.id, rows=[{**row, "rating": 2}]
        )
    # The same idempotency key replayed by B does not return A's row.
    replay = await repo.record_interaction(
        session=session,
        tenant_id=b.tenant.id,
        user_id=b.user.id,
        item_id=b.item.id,
        interaction_type="view",
        idempotency_key="k",
    )
    assert replay.tenant_id == b.tenant.id


async def test_training_reads_and_imports_stay_in_their_tenant(
    worlds: tuple[AsyncSession, World, World],
) -> None:
    session, a, b = worlds
    t = a.tenant.id
    ratings = await repo.load_ratings(session=session, tenant_id=t)
    assert [(user, item) for user, item, _, _ in ratings] == [(a.user.id, a.item.id)]
    catalogue = await repo.catalogue_items(session=session, tenant_id=t)
    assert [item.id for item in catalogue] == [a.item.id]
    # The same e-mail exists in tenant B: importing it into A maps to A's user, never B's.
    ids = await repo.bulk_upsert_users(
        session=session,
        tenant_id=t,
        rows=[{"email": SHARED_EMAIL, "username": "x"}, {"email": "new@example.com"}],
    )
    assert ids[SHARED_EMAIL] == a.user.id
    assert ids["new@example.com"] not in (a.user.id, b.user.id)
    again = await repo.bulk_upsert_users(
        session=session, tenant_id=t, rows=[{"email": "NEW@example.com"}]
    )
    assert again == {"new@example.com": ids["new@example.com"]}
    assert len(await repo.list_users(session=session, tenant_id=b.tenant.id)) == 1
