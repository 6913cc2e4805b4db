"""Item and user rows behind the DataLoaders come from the cache once loaded, on every backend,
and an item mutation is visible on the very next read."""

from __future__ import annotations

from graph_api.auth import TokenService
from storage.cache.base import tenant_key
from tests.graph_api.cache_backends import backend_api
from tests.graph_api.conftest import Api
from tests.graph_api.test_statements import counting_statements

__all__ = ["backend_api"]

CREATE = "mutation($i: ItemInput!) { createItem(input: $i) { id } }"
UPDATE = "mutation($id: UUID!, $i: ItemUpdateInput!) { updateItem(id: $id, input: $i) { id } }"
DELETE = "mutation($id: UUID!) { deleteItem(id: $id) }"
READ = "query($id: UUID!) { item(id: $id) { id title category } me { id email role } }"


def item_selects(statements: list[str]) -> list[str]:
    return [s for s in statements if s.lstrip().upper().startswith("SELECT") and "items" in s]


async def test_rows_are_served_from_the_cache_until_an_item_changes(backend_api: Api) -> None:
    api = backend_api
    token, _ = await api.register("rows@rows.example", "rows.example")
    created = await api.ok(CREATE, {"i": {"title": "Lamp", "category": "home"}}, token)
    item_id = created["createItem"]["id"]

    with counting_statements(api) as first:
        data = await api.ok(READ, {"id": item_id}, token)
    assert data["item"]["title"] == "Lamp" and data["me"]["email"] == "rows@rows.example"
    with counting_statements(api) as second:
        again = await api.ok(READ, {"id": item_id}, token)
    assert again == data
    assert item_selects(first) and not item_selects(second), second
    assert len(second) < len(first)

    await api.ok(UPDATE, {"id": item_id, "i": {"title": "Desk lamp"}}, token)
    data = await api.ok(READ, {"id": item_id}, token)
    assert data["item"]["title"] == "Desk lamp"

    await api.ok(DELETE, {"id": item_id}, token)
    gone = await api.gql(READ, {"id": item_id}, token)
    assert gone["errors"][0]["extensions"]["code"] == "NOT_FOUND"


RECOMMEND = "query { recommendations(options: {numRecommendations: 3}) { items { item { id } } } }"


def user_selects(statements: list[str]) -> list[str]:
    return [s for s in statements if s.lstrip().upper().startswith("SELECT") and "users" in s]


async def test_a_users_first_request_reads_their_row_once(backend_api: Api) -> None:
    """The account check of a token not seen before reads the user's whole row and caches it,
    so the request's own use of the row (preferences) is not a second statement."""
    api = backend_api
    token, _ = await api.register("first@first.example", "first.example")
    tenant_id = TokenService(api.settings).verify(token).tenant_id
    # As if this cache had never seen the user: no account state, no row.
    await api.cache.delete_prefix(tenant_key(tenant_id, "auth") + ":")
    await api.cache.delete_prefix(tenant_key(tenant_id, "row") + ":")
    with counting_statements(api) as first:
        data = await api.ok(RECOMMEND, {}, token)
    assert "items" in data["recommendations"]
    assert len(user_selects(first)) == 1, user_selects(first)
    with counting_statements(api) as second:
        await api.ok(RECOMMEND, {}, token)
    assert user_selects(second) == []
