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

    engine = api.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
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


RECOMMEND = """
query { recommendations(options: {numRecommendations: 3, explain: true}) {
  items { reason item { id title } } explanation } }"""


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
