"""One contract for the relational store, run against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from storage import repositories as repo
from storage.db import Database
from storage.errors import Conflict, InvalidData, NotFound
from storage.models import TenantTier, User, UserRole
from tests.storage.sql_support import (
    BACKENDS,
    make_item,
    make_tenant,
    make_user,
    migrated_database,
    unique,
    view_at,
)


@pytest.fixture(scope="module", params=BACKENDS)
async def database(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    async with migrated_database(request.param, request) as database:
        yield database


@pytest.fixture
async def session(database: Database) -> AsyncIterator[AsyncSession]:
    async with database.session() as session:
        yield session


async def test_tenant_round_trip(session: AsyncSession) -> None:
    domain = unique("Acme") + ".TEST"
    tenant = await repo.create_tenant(
        session=session, name="Acme", domain=domain, tier="premium", settings={"k": 20}
    )
    assert (await repo.get_tenant(session=session, tenant_id=tenant.id)).name == "Acme"
    by_domain = await repo.get_tenant_by_domain(session=session, domain=domain.upper())
    assert by_domain.id == tenant.id
    assert by_domain.tier is TenantTier.PREMIUM and by_domain.settings == {"k": 20}
    assert by_domain.created_at.tzinfo is not None
    with pytest.raises(Conflict):
        await repo.create_tenant(session=session, name="Copy", domain=domain)
    with pytest.raises(NotFound):
        await repo.get_tenant(session=session, tenant_id=uuid.uuid4())
    listed = await repo.list_tenants(session=session, limit=1000)
    assert tenant.id in {row.id for row in listed}


async def test_users_unique_email_per_tenant(session: AsyncSession) -> None:
    tenant, other = await make_tenant(session), await make_tenant(session)
    user = await make_user(session, tenant, email="Ann@Example.com")
    assert user.role is UserRole.USER and user.email == "ann@example.com"
    with pytest.raises(Conflict):
        await make_user(session, tenant, email="ann@example.COM")
    # The failed insert was rolled back to its savepoint: the session is still usable.
    found = await repo.get_user_by_email(
        session=session, tenant_id=tenant.id, email="ANN@example.com"
    )
    assert found.id == user.id
    same_email_elsewhere = await make_user(session, other, email="ann@example.com")
    assert same_email_elsewhere.id != user.id
    with pytest.raises(NotFound):
        await make_user(session, type(tenant)(id=uuid.uuid4()))


async def test_list_users_pages_and_batch_lookup(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    users = [await make_user(session, tenant) for _ in range(5)]
    first = await repo.list_users(session=session, tenant_id=tenant.id, limit=3)
    rest = await repo.list_users(session=session, tenant_id=tenant.id, limit=3, offset=3)
    assert [u.id for u in first + list(rest)] == [u.id for u in users]
    with pytest.raises(InvalidData):
        await repo.list_users(session=session, tenant_id=tenant.id, limit=0)
    missing = uuid.uuid4()
    wanted = [users[3].id, missing, users[0].id, users[3].id]
    found = await repo.users_by_ids(session=session, tenant_id=tenant.id, user_ids=wanted)
    assert [u.id if u else None for u in found] == [users[3].id, None, users[0].id, users[3].id]


async def test_preferences_are_replaced_and_stay_in_their_tenant(
    session: AsyncSession,
) -> None:
    tenant, other = await make_tenant(session), await make_tenant(session)
    user = await make_user(session, tenant)
    assert user.preferences == {}
    stored = {"favorite_categories": ["books"], "excluded_categories": [], "data": {"a": [1]}}
    await repo.set_preferences(
        session=session, tenant_id=tenant.id, user_id=user.id, preferences=stored
    )
    session.expunge_all()  # read back from the database, not the identity map
    reread = await repo.get_user(session=session, tenant_id=tenant.id, user_id=user.id)
    assert reread.preferences == stored
    with pytest.raises(NotFound):
        await repo.set_preferences(
            session=session, tenant_id=other.id, user_id=user.id, preferences={}
        )


async def test_items_crud_search_and_soft_delete(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    boots = await make_item(session, tenant, title="Hiking BOOTS", category="shoes", tags=["x"])
    await make_item(session, tenant, title="Sandal", description="light boots for summer")
    await make_item(session, tenant, title="100% wool hat", category="hats")
    with pytest.raises(Conflict):
        await make_item(session, tenant, external_id=boots.external_id)

    async def titles(**filters: object) -> list[str]:
        rows = await repo.list_items(session=session, tenant_id=tenant.id, **filters)  # type: ignore[arg-type]
        return [row.title for row in rows]

    assert await titles(search="boots") == ["Hiking BOOTS", "Sandal"]
    assert await titles(category="shoes") == ["Hiking BOOTS"]
    assert await titles(search="%") == ["100% wool hat"]  # LIKE wildcards are literal
    assert await titles(limit=1, offset=1) == ["Sandal"]

    before = boots.updated_at
    await asyncio.sleep(0.01)
    updated = await repo.update_item(
        session=session, tenant_id=tenant.id, item_id=boots.id, title="Boots", tags=["a", "b"]
    )
    assert updated.title == "Boots" and updated.tags == ["a", "b"] and updated.updated_at > before
    with pytest.raises(InvalidData):
        await repo.update_item(
            session=session, tenant_id=tenant.id, item_id=boots.id, tenant_id_x=1
        )

    await repo.delete_item(session=session, tenant_id=tenant.id, item_id=boots.id)
    with pytest.raises(NotFound):
        await repo.get_item(session=session, tenant_id=tenant.id, item_id=boots.id)
    kept = await repo.get_item(
        session=session, tenant_id=tenant.id, item_id=boots.id, include_inactive=True
    )
    assert kept.is_active is False
    assert "Boots" not in await titles()
    found = await repo.items_by_ids(session=session, tenant_id=tenant.id, item_ids=[boots.id])
    assert found == [None]


async def test_bulk_upsert_items_keeps_ids(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    rows = [{"external_id": f"e{i}", "title": f"T{i}", "category": "c"} for i in range(1500)]
    first = await repo.bulk_upsert_items(session=session, tenant_id=tenant.id, rows=rows)
    assert len(first) == 1500
    second = await repo.bulk_upsert_items(
        session=session,
        tenant_id=tenant.id,
        rows=[{"external_id": "e7", "title": "New", "item_metadata": {"year": 1999}}],
    )
    assert second == {"e7": first["e7"]}
    item = await repo.get_item_by_external_id(
        session=session, tenant_id=tenant.id, external_id="e7"
    )
    assert item.title == "New" and item.item_metadata == {"year": 1999} and item.category is None
    with pytest.raises(InvalidData):
        await repo.bulk_upsert_items(session=session, tenant_id=tenant.id, rows=[{"title": "x"}])


async def test_record_interaction_is_idempotent(session: AsyncSession) -> None:
    tenant, other = await make_tenant(session), await make_tenant(session)
    user, item = await make_user(session, tenant), await make_item(session, tenant)

    async def record(key: str | None, kind: str = "click", by: User | None = None) -> uuid.UUID:
        row = await repo.record_interaction(
            session=session,
            tenant_id=tenant.id,
            user_id=(by or user).id,
            item_id=item.id,
            interaction_type=kind,
            idempotency_key=key,
        )
        return row.id

    first = await record("req-1")
    assert await record("req-1", kind="purchase") == first
    # Another user of the tenant with the same key: their own request, their own row.
    neighbour = await make_user(session, tenant)
    theirs = await record("req-1", by=neighbour)
    assert theirs != first and await record("req-1", by=neighbour) == theirs
    assert await record(None) != await record(None)  # no key: every call is a new row
    history = await repo.interactions_for_users(
        session=session, tenant_id=tenant.id, user_ids=[user.id]
    )
    assert len(history[0]) == 3
    # The same key in another tenant is a different request.
    other_user, other_item = await make_user(session, other), await make_item(session, other)
    elsewhere = await repo.record_interaction(
        session=session,
        tenant_id=other.id,
        user_id=other_user.id,
        item_id=other_item.id,
        interaction_type="click",
        idempotency_key="req-1",
    )
    assert elsewhere.id != first
    with pytest.raises(InvalidData):
        await record(None, kind="")


async def test_interactions_for_users_batches_in_order(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    ann, bob, cid = [await make_user(session, tenant) for _ in range(3)]
    item = await make_item(session, tenant)
    for user, kind in [(ann, "view"), (ann, "purchase"), (bob, "view")]:
        await repo.record_interaction(
            session=session,
            tenant_id=tenant.id,
            user_id=user.id,
            item_id=item.id,
            interaction_type=kind,
        )
    ids = [bob.id, cid.id, ann.id]
    every = await repo.interactions_for_users(session=session, tenant_id=tenant.id, user_ids=ids)
    assert [len(rows) for rows in every] == [1, 0, 2]
    assert every[2][0].interaction_type == "purchase"  # newest first
    views = await repo.interactions_for_users(
        session=session, tenant_id=tenant.id, user_ids=ids, interaction_type="view"
    )
    assert [[row.interaction_type for row in rows] for rows in views] == [["view"], [], ["view"]]


async def test_user_lists_are_cut_per_user_in_sql(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    ann, bob = [await make_user(session, tenant) for _ in range(2)]
    items = [await make_item(session, tenant) for _ in range(4)]
    kinds = ["view", "view", "view", "like"]  # the like is ann's newest
    for user in (ann, bob):
        for item, kind in zip(items, kinds, strict=True):
            await repo.record_interaction(
                session=session,
                tenant_id=tenant.id,
                user_id=user.id,
                item_id=item.id,
                interaction_type=kind,
            )
            await repo.rate_item(
                session=session, tenant_id=tenant.id, user_id=user.id, item_id=item.id, rating=4
            )
    ids = [ann.id, bob.id]
    cut = await repo.interactions_for_users(
        session=session, tenant_id=tenant.id, user_ids=ids, per_user=1
    )
    # Each user's newest, plus each type's newest (so mixed type filters share a statement).
    assert [sorted(row.interaction_type for row in rows) for rows in cut] == [["like", "view"]] * 2
    ratings = await repo.ratings_for_users(
        session=session, tenant_id=tenant.id, user_ids=ids, per_user=2
    )
    assert [len(rows) for rows in ratings] == [2, 2]


async def test_recent_items_merge_interactions_and_ratings_newest_first(
    session: AsyncSession,
) -> None:
    tenant, other = await make_tenant(session), await make_tenant(session)
    user = await make_user(session, tenant)
    old, mid, new, rated = [await make_item(session, tenant) for _ in range(4)]
    start = datetime(2026, 3, 1, tzinfo=UTC)
    for minutes, item in [(0, old), (5, mid), (10, old), (20, new)]:
        await view_at(session, tenant, user, item, start + timedelta(minutes=minutes))
    rows = [{"user_id": user.id, "item_id": rated.id, "rating": 4.0}]
    rows[0]["created_at"] = start + timedelta(minutes=15)
    await repo.bulk_upsert_ratings(session=session, tenant_id=tenant.id, rows=rows)
    found = await repo.recent_items(session=session, tenant_id=tenant.id, user_id=user.id, limit=10)
    assert found == [new.id, rated.id, old.id, mid.id]  # each item once, at its latest time
    assert await repo.recent_items(
        session=session, tenant_id=tenant.id, user_id=user.id, limit=2
    ) == [new.id, rated.id]
    assert (
        await repo.recent_items(session=session, tenant_id=other.id, user_id=user.id, limit=9) == []
    )


async def test_count_interactions_since_a_moment_per_tenant(session: AsyncSession) -> None:
    tenant, other = await make_tenant(session), await make_tenant(session)
    item, user = await make_item(session, tenant), await make_user(session, tenant)
    moment = datetime(2026, 3, 1, tzinfo=UTC)
    for minutes in (-5, 0, 5, 10):  # the one at ``moment`` counts (inclusive)
        await view_at(session, tenant, user, item, moment + timedelta(minutes=minutes))
    assert await repo.count_interactions(session=session, tenant_id=tenant.id) == 4
    assert await repo.count_interactions(session=session, tenant_id=tenant.id, since=moment) == 3
    assert await repo.count_interactions(session=session, tenant_id=other.id) == 0


async def test_bulk_insert_ten_thousand_rows(
    session: AsyncSession, rng: np.random.Generator
) -> None:
    tenant = await make_tenant(session)
    users = [await make_user(session, tenant) for _ in range(20)]
    items = await repo.bulk_upsert_items(
        session=session,
        tenant_id=tenant.id,
        rows=[{"external_id": f"i{i}", "title": f"Item {i}"} for i in range(50)],
    )
    item_ids = list(items.values())
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        {
            "user_id": users[int(rng.integers(20))].id,
            "item_id": item_ids[int(rng.integers(50))],
            "interaction_type": ("view", "click", "purchase")[i % 3],
            "value": float(i % 7),
            "created_at": start + timedelta(seconds=i),
        }
        for i in range(10_000)
    ]
    written = await repo.bulk_insert_interactions(
        session=session, tenant_id=tenant.id, rows=rows, chunk_size=3000
    )
    assert written == 10_000
    columns = await repo.load_interactions(session=session, tenant_id=tenant.id)
    assert len(columns) == 10_000
    expected = [(r["user_id"], r["item_id"], r["interaction_type"], r["value"]) for r in rows]
    loaded = zip(
        columns.user_ids, columns.item_ids, columns.interaction_types, columns.values, strict=True
    )
    assert list(loaded) == expected  # oldest first, so the order is the insertion order
    assert columns.created_at[0] == start and columns.created_at[-1].tzinfo is not None

    since = start + timedelta(seconds=9_000)
    recent = await repo.load_interactions(session=session, tenant_id=tenant.id, since=since)
    assert len(recent) == 1_000 and min(recent.created_at) == since
    chunks = [
        c
        async for c in repo.iter_interactions(
            session=session, tenant_id=tenant.id, chunk_size=4_000
        )
    ]
    assert [len(chunk) for chunk in chunks] == [4_000, 4_000, 2_000]
    assert chunks[2][-1].value == rows[-1]["value"]


async def test_bulk_insert_is_all_or_nothing(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    user, item = await make_user(session, tenant), await make_item(session, tenant)
    good = {"user_id": user.id, "item_id": item.id, "interaction_type": "view"}
    unknown_item = {**good, "item_id": uuid.uuid4()}
    with pytest.raises(NotFound):
        await repo.bulk_insert_interactions(
            session=session, tenant_id=tenant.id, rows=[good] * 5 + [unknown_item]
        )
    keyed = {**good, "idempotency_key": "k"}
    with pytest.raises(Conflict):
        await repo.bulk_insert_interactions(
            session=session, tenant_id=tenant.id, rows=[keyed, keyed]
        )
    assert len(await repo.load_interactions(session=session, tenant_id=tenant.id)) == 0


async def test_interactions_keep_integrity_without_their_own_tenant_key(
    session: AsyncSession,
) -> None:
    """Interactions reference tenants only through their user (migration 0005): a user of
    another tenant, or an unknown tenant, is still refused, and deleting a user or a whole
    tenant still removes their interactions."""
    tenant, other = await make_tenant(session), await make_tenant(session)
    user, item = await make_user(session, tenant), await make_item(session, tenant)
    stranger = await make_user(session, other)
    row = {"user_id": user.id, "item_id": item.id, "interaction_type": "view"}
    for tenant_id, user_id in (
        (other.id, user.id),
        (tenant.id, stranger.id),
        (uuid.uuid4(), user.id),
    ):
        with pytest.raises(NotFound):
            await repo.bulk_insert_interactions(
                session=session, tenant_id=tenant_id, rows=[{**row, "user_id": user_id}]
            )
    second = await make_user(session, tenant)
    await repo.bulk_insert_interactions(
        session=session, tenant_id=tenant.id, rows=[row, {**row, "user_id": second.id}] * 3
    )
    await session.delete(second)
    await session.flush()
    assert await repo.count_interactions(session=session, tenant_id=tenant.id) == 3
    await session.delete(await repo.get_tenant(session=session, tenant_id=tenant.id))
    await session.flush()
    assert await repo.count_interactions(session=session, tenant_id=tenant.id) == 0


async def test_idempotency_keys_stay_unique_per_user(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    user, item = await make_user(session, tenant), await make_item(session, tenant)
    keyed = {"user_id": user.id, "item_id": item.id, "interaction_type": "view"}
    unkeyed = [keyed] * 3  # rows without a key never collide
    await repo.bulk_insert_interactions(session=session, tenant_id=tenant.id, rows=unkeyed)
    await repo.bulk_insert_interactions(
        session=session, tenant_id=tenant.id, rows=[{**keyed, "idempotency_key": "k"}]
    )
    with pytest.raises(Conflict):
        await repo.bulk_insert_interactions(
            session=session, tenant_id=tenant.id, rows=[{**keyed, "idempotency_key": "k"}]
        )
    assert await repo.count_interactions(session=session, tenant_id=tenant.id) == 4


async def test_import_writes_each_event_once_whether_its_user_is_new_or_not(
    session: AsyncSession,
) -> None:
    """PostgreSQL COPYs the rows of users without interactions straight into the table and
    probes the others for duplicates; either way an event already stored, or repeated in the
    batch, is written once, and a row naming an unknown user writes nothing at all."""
    tenant = await make_tenant(session)
    old, new = await make_user(session, tenant), await make_user(session, tenant)
    item = await make_item(session, tenant)
    at = datetime(2026, 1, 1, tzinfo=UTC)

    def event(user: uuid.UUID, second: int) -> dict[str, object]:
        when = at + timedelta(seconds=second)
        return {"user_id": user, "item_id": item.id, "interaction_type": "view", "created_at": when}

    stored = await repo.import_interactions(
        session=session, tenant_id=tenant.id, rows=[event(old.id, 0)]
    )
    assert len(stored) == 1
    rows = [event(old.id, 0), event(old.id, 1), event(new.id, 0), event(new.id, 2)]
    written = await repo.import_interactions(
        session=session, tenant_id=tenant.id, rows=[*rows, event(new.id, 2)]
    )
    assert sorted((r["user_id"] == new.id, r["created_at"]) for r in written) == sorted(
        (r["user_id"] == new.id, r["created_at"]) for r in rows[1:]
    )
    assert await repo.import_interactions(session=session, tenant_id=tenant.id, rows=rows) == []
    with pytest.raises(NotFound):
        await repo.import_interactions(
            session=session, tenant_id=tenant.id, rows=[event(new.id, 9), event(uuid.uuid4(), 9)]
        )
    assert await repo.count_interactions(session=session, tenant_id=tenant.id) == 4


async def test_every_interaction_write_refuses_another_tenants_user_or_item(
    session: AsyncSession,
) -> None:
    """No foreign keys on interactions (migration 0006): each write path checks the users and
    items itself, and writes nothing when one is unknown or another tenant's."""
    tenant, other = await make_tenant(session), await make_tenant(session)
    user, item = await make_user(session, tenant), await make_item(session, tenant)
    stranger, foreign = await make_user(session, other), await make_item(session, other)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    for user_id, item_id in ((stranger.id, item.id), (user.id, foreign.id), (user.id, user.id)):
        with pytest.raises(NotFound):
            await repo.record_interaction(
                session=session,
                tenant_id=tenant.id,
                user_id=user_id,
                item_id=item_id,
                interaction_type="view",
            )
        good = {"user_id": user.id, "item_id": item.id, "interaction_type": "view"}
        bad = {"user_id": user_id, "item_id": item_id, "interaction_type": "view"}
        with pytest.raises(NotFound):
            await repo.bulk_insert_interactions(
                session=session, tenant_id=tenant.id, rows=[good, bad]
            )
        with pytest.raises(NotFound):
            await repo.import_interactions(
                session=session,
                tenant_id=tenant.id,
                rows=[{**good, "created_at": at}, {**bad, "created_at": at}],
            )
    assert await repo.count_interactions(session=session, tenant_id=tenant.id) == 0


async def test_deleting_an_item_removes_its_interactions(session: AsyncSession) -> None:
    """The delete trigger on items does what ON DELETE CASCADE did: the item's events go,
    the other items' stay (items are soft-deleted by the API; this is a row deleted outright)."""
    tenant = await make_tenant(session)
    user = await make_user(session, tenant)
    gone, kept = await make_item(session, tenant), await make_item(session, tenant)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        {"user_id": user.id, "item_id": item.id, "interaction_type": "view", "created_at": at}
        for item in (gone, kept)
    ]
    await repo.import_interactions(session=session, tenant_id=tenant.id, rows=rows)
    await session.delete(gone)
    await session.flush()
    remaining = await repo.load_interactions(session=session, tenant_id=tenant.id)
    assert remaining.item_ids == [kept.id]


async def test_an_import_holds_its_users_until_it_commits(
    database: Database, request: pytest.FixtureRequest
) -> None:
    """PostgreSQL: a user whose events an uncommitted import wrote cannot be deleted until the
    import commits (the write step locks it, as the foreign key check did), and the delete
    then removes those events too: nothing is left pointing at a deleted user."""
    if database.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    async with database.session() as session:
        tenant = await make_tenant(session)
        user, item = await make_user(session, tenant), await make_item(session, tenant)
    row = {
        "user_id": user.id,
        "item_id": item.id,
        "interaction_type": "view",
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    deleted = asyncio.Event()

    async def delete_user() -> None:
        async with database.session() as session:
            await session.delete(await session.get(User, user.id))
            await session.flush()
        deleted.set()

    async with database.session() as importing:
        await repo.import_interactions(session=importing, tenant_id=tenant.id, rows=[row])
        deleting = asyncio.create_task(delete_user())
        await asyncio.sleep(0.5)
        assert not deleted.is_set()  # waiting for the import's lock
    await asyncio.wait_for(deleting, 10)
    async with database.session() as session:
        assert await repo.count_interactions(session=session, tenant_id=tenant.id) == 0


async def test_rating_rules(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    user, item = await make_user(session, tenant), await make_item(session, tenant)

    async def rate(value: float) -> object:
        return await repo.rate_item(
            session=session, tenant_id=tenant.id, user_id=user.id, item_id=item.id, rating=value
        )

    first = await rate(4.0)
    await asyncio.sleep(0.01)
    again = await rate(2.5)
    assert again.id == first.id and again.rating == 2.5  # type: ignore[attr-defined]
    assert again.updated_at > again.created_at  # type: ignore[attr-defined]
    for bad in (0.4, 5.01, -1.0, math.nan):
        with pytest.raises(InvalidData):
            await rate(bad)
    await rate(0.5)
    await rate(5)
    ratings = await repo.ratings_for_users(
        session=session, tenant_id=tenant.id, user_ids=[user.id, uuid.uuid4()]
    )
    assert [[r.rating for r in rows] for rows in ratings] == [[5.0], []]
    with pytest.raises(NotFound):
        await repo.rate_item(
            session=session, tenant_id=tenant.id, user_id=user.id, item_id=uuid.uuid4(), rating=3
        )


async def test_average_and_bulk_ratings(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    users = [await make_user(session, tenant) for _ in range(3)]
    rated, unrated = await make_item(session, tenant), await make_item(session, tenant)
    rows = [
        {"user_id": u.id, "item_id": rated.id, "rating": r}
        for u, r in zip(users, (1, 2, 3), strict=True)
    ]
    rows.append({"user_id": users[0].id, "item_id": rated.id, "rating": 5})  # last one wins
    assert await repo.bulk_upsert_ratings(session=session, tenant_id=tenant.id, rows=rows) == 3
    stats = await repo.average_ratings(
        session=session, tenant_id=tenant.id, item_ids=[unrated.id, rated.id]
    )
    assert stats == [repo.RatingStats(None, 0), repo.RatingStats(pytest.approx(10 / 3), 3)]
    loaded = await repo.load_ratings(session=session, tenant_id=tenant.id)
    assert sorted((u, r) for u, _, r, _ in loaded) == sorted(
        [(users[0].id, 5.0), (users[1].id, 2.0), (users[2].id, 3.0)]
    )
    chunks = [
        chunk
        async for chunk in repo.iter_ratings(session=session, tenant_id=tenant.id, chunk_size=2)
    ]
    assert [len(chunk) for chunk in chunks] == [2, 1]  # streamed, in the order load_ratings reads
    assert [row for chunk in chunks for row in chunk] == loaded
    with pytest.raises(InvalidData):
        await repo.bulk_upsert_ratings(
            session=session,
            tenant_id=tenant.id,
            rows=[{"user_id": users[0].id, "item_id": rated.id, "rating": 9}],
        )


async def test_catalogue_size_and_active_ids_for_the_item_quota(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    other = await make_tenant(session)
    kept = await make_item(session, tenant)
    gone = await make_item(session, tenant)
    await make_item(session, other)
    await repo.delete_item(session=session, tenant_id=tenant.id, item_id=gone.id)
    assert await repo.count_items(session=session, tenant_id=tenant.id) == 1
    wanted = [kept.external_id, gone.external_id, "unknown"]
    active = await repo.item_ids_by_external_ids(
        session=session, tenant_id=tenant.id, external_ids=wanted, active_only=True
    )
    assert active == {kept.external_id: kept.id}
    every = await repo.item_ids_by_external_ids(
        session=session, tenant_id=tenant.id, external_ids=wanted
    )
    assert set(every) == {kept.external_id, gone.external_id}


async def test_set_tenant_tier(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    await repo.set_tenant_tier(session=session, tenant_id=tenant.id, tier="enterprise")
    assert (
        await repo.get_tenant(session=session, tenant_id=tenant.id)
    ).tier is TenantTier.ENTERPRISE
    with pytest.raises(ValueError):
        await repo.set_tenant_tier(session=session, tenant_id=tenant.id, tier="gold")


async def test_reads_see_committed_rows_without_a_transaction(database: Database) -> None:
    from sqlalchemy import event

    async with database.session() as session:
        tenant = await make_tenant(session)
        user = await make_user(session, tenant)
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement.strip().split()[0].upper())

    engine = database.read_engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        found = await database.read(
            lambda s: repo.users_by_ids(session=s, tenant_id=tenant.id, user_ids=[user.id])
        )
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert [row.id for row in found if row is not None] == [user.id]
    # one statement: no BEGIN or COMMIT around it, no ping before it
    assert statements == ["SELECT"]
    with pytest.raises(NotFound):
        await database.read(lambda s: repo.get_tenant(session=s, tenant_id=uuid.uuid4()))


async def test_a_read_survives_a_connection_the_server_closed(
    database: Database, request: pytest.FixtureRequest
) -> None:
    """Read connections are not pinged before use: a dropped one costs one retry."""
    from sqlalchemy import text

    async with database.session() as session:
        tenant = await make_tenant(session)
    pids = await database.read(
        lambda s: (
            s.scalar(text("SELECT pg_backend_pid()"))
            if database.dialect == "postgresql"
            else s.scalar(text("SELECT 1"))
        )
    )
    if database.dialect != "postgresql":
        pytest.skip("SQLite has no server to close a connection")
    async with database.session() as session:
        await session.execute(text(f"SELECT pg_terminate_backend({int(pids)})"))
    found = await database.read(lambda s: repo.get_tenant(session=s, tenant_id=tenant.id))
    assert found.id == tenant.id
