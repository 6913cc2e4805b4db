"""DataLoaders keep the statement count of a nested query independent of the number of rows."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from storage import repositories as repo
from storage.settings import Settings
from tests.graph_api.conftest import Api, make_settings


@pytest.fixture
def settings(tmp_path) -> Settings:
    # What is measured here is DataLoader batching, so rows come from SQL, not the row cache.
    return make_settings(tmp_path, cache_row_ttl_seconds=0)


NESTED = """
query($n: Int!) {
  users(limit: $n) {
    id email
    tenant { id domain }
    interactions { interactionType item { id title averageRating } }
    views: interactions(type: "view") { id }
    ratings { rating item { title } }
  }
}"""


@contextmanager
def counting_statements(api: Api) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    # the main engine and the one the request path's reads use (Database.read)
    engines = {api.database.engine.sync_engine, api.database.read_engine.sync_engine}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


async def _seed(api: Api, users: int) -> Any:
    async with api.database.session() as session:
        tenant = await repo.create_tenant(session=session, name="Big", domain="big.example")
        items = [
            await repo.create_item(
                session=session, tenant_id=tenant.id, external_id=f"i{n}", title=f"Item {n}"
            )
            for n in range(4)
        ]
        people = [
            await repo.create_user(
                session=session,
                tenant_id=tenant.id,
                email=f"u{n}@big.example",
                username=f"u{n}",
                password_hash="unused",
                role="admin" if n == 0 else "user",
            )
            for n in range(users)
        ]
        rows = [
            {"user_id": p.id, "item_id": items[(i + k) % 4].id, "interaction_type": kind}
            for i, p in enumerate(people)
            for k, kind in enumerate(["view", "click"])
        ]
        await repo.bulk_insert_interactions(session=session, tenant_id=tenant.id, rows=rows)
        for i, person in enumerate(people):
            await repo.rate_item(
                session=session,
                tenant_id=tenant.id,
                user_id=person.id,
                item_id=items[i % 4].id,
                rating=1.0 + (i % 4),
            )
    return tenant, people[0]


async def test_nested_query_costs_the_same_for_5_and_50_users(api: Api) -> None:
    tenant, admin = await _seed(api, users=50)
    token = api.token_for(tenant.id, admin.id, role="admin")
    # The caller's account state is read once, then cached: not part of what is measured.
    await api.ok("{ me { id } }", token=token)
    counts = {}
    for size in (5, 50):
        with counting_statements(api) as statements:
            data = await api.ok(NESTED, {"n": size}, token)
        users = data["users"]
        assert len(users) == size
        assert all(len(user["interactions"]) == 2 and len(user["views"]) == 1 for user in users)
        assert all(user["tenant"]["domain"] == "big.example" for user in users)
        assert all(user["interactions"][0]["item"]["averageRating"] is not None for user in users)
        counts[size] = len([s for s in statements if s.lstrip().upper().startswith("SELECT")])
    assert counts[5] == counts[50], counts
    # list + tenants + interactions (two types in one batch) + items + ratings + averages
    assert counts[50] <= 6, counts


ITEMS = """
query($n: Int!) {
  items(limit: $n) {
    id
    popularity { interactionCount userCount }
    interactions(limit: 2) { interactionType userId }
    views: interactions(type: "view") { id }
  }
}"""


async def _seed_items(api: Api, count: int) -> tuple[Any, Any]:
    """``count`` items, each viewed by two users and clicked by one."""
    async with api.database.session() as session:
        tenant = await repo.create_tenant(session=session, name="Shop", domain="shop.example")
        admin, other = [
            await repo.create_user(
                session=session,
                tenant_id=tenant.id,
                email=f"{name}@shop.example",
                username=name,
                password_hash="unused",
                role=name,
            )
            for name in ("admin", "user")
        ]
        items = [
            await repo.create_item(
                session=session, tenant_id=tenant.id, external_id=f"i{n}", title=f"Item {n}"
            )
            for n in range(count)
        ]
        rows = [
            {"user_id": user.id, "item_id": item.id, "interaction_type": kind}
            for item in items
            for user, kind in [(admin, "view"), (other, "view"), (other, "click")]
        ]
        await repo.bulk_insert_interactions(session=session, tenant_id=tenant.id, rows=rows)
    return tenant, admin


async def test_item_interactions_and_popularity_cost_the_same_for_5_and_50_items(
    api: Api,
) -> None:
    tenant, admin = await _seed_items(api, 50)
    token = api.token_for(tenant.id, admin.id, role="admin")
    await api.ok("{ me { id } }", token=token)
    counts = {}
    for size in (5, 50):
        with counting_statements(api) as statements:
            items = (await api.ok(ITEMS, {"n": size}, token))["items"]
        assert len(items) == size
        assert all(i["popularity"] == {"interactionCount": 3, "userCount": 2} for i in items)
        assert all(len(i["interactions"]) == 2 and len(i["views"]) == 2 for i in items)
        counts[size] = len([s for s in statements if s.lstrip().upper().startswith("SELECT")])
    assert counts[5] == counts[50], counts
    # list + interactions (both filters in one batch) + popularity
    assert counts[50] <= 3, counts


async def test_item_interactions_are_an_admins_only(api: Api) -> None:
    tenant, _ = await _seed_items(api, 2)
    async with api.database.session() as session:
        user = await repo.get_user_by_email(
            session=session, tenant_id=tenant.id, email="user@shop.example"
        )
    token = api.token_for(tenant.id, user.id)
    counted = await api.ok("{ items { popularity { interactionCount } } }", token=token)
    assert [i["popularity"]["interactionCount"] for i in counted["items"]] == [3, 3]
    reply = await api.gql("{ items { interactions { userId } } }", token=token)
    assert reply["errors"][0]["extensions"]["code"] == "FORBIDDEN"


RECOMMEND = """
query { recommendations(options: {numRecommendations: 3, explain: true}) {
  items { reason item { id title } } explanation { cached } } }"""


async def test_a_cached_recommendation_reads_nothing_from_the_database(api: Api) -> None:
    """A hit is answered from the cached payload alone: list, item rows and all."""
    tenant, admin = await _seed(api, users=3)
    token = api.token_for(tenant.id, admin.id)
    with counting_statements(api) as first:
        computed = await api.ok(RECOMMEND, {}, token)
    assert computed["recommendations"]["explanation"]["cached"] is False
    assert any(s.lstrip().upper().startswith("SELECT") for s in first)
    with counting_statements(api) as second:
        hit = await api.ok(RECOMMEND, {}, token)
    assert hit["recommendations"]["explanation"]["cached"] is True
    assert hit["recommendations"]["items"] == computed["recommendations"]["items"]
    assert hit["recommendations"]["items"], hit
    assert second == []
