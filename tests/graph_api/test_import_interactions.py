"""importInteractions: an admin's bulk import of past events, row by row accountable."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from graph_api import bounds
from graph_api.auth import TokenService
from storage import repositories as repo
from tests.graph_api.conftest import Api

IMPORT = """mutation($rows: [InteractionImportInput!]!) {
  importInteractions(input: $rows) { imported duplicates errors { index message } }
}"""
CREATE_ITEM = "mutation($input: ItemInput!) { createItem(input: $input) { id } }"
RECOMMEND = """query { recommendations(options: {numRecommendations: 3}) {
  explanation { cached } items { item { id } } } }"""
WHEN = "2025-03-01T12:00:00Z"


async def _seed(api: Api) -> dict[str, Any]:
    admin, _ = await api.register("admin@imp.example", "imp.example")
    shopper, shopper_id = await api.register("shopper@imp.example", "imp.example")
    items = [
        (await api.ok(CREATE_ITEM, {"input": {"title": f"T{n}"}}, admin))["createItem"]["id"]
        for n in range(3)
    ]
    _, stranger = await api.register("someone@other.example", "other.example")
    return {
        "admin": admin, "shopper": shopper, "shopper_id": shopper_id, "items": items,
        "stranger": stranger,
    }  # fmt: skip


def _row(user: str, item: str, kind: str = "view", when: str = WHEN, **extra: Any) -> dict:
    return {"userId": user, "itemId": item, "interactionType": kind, "occurredAt": when, **extra}


async def _stored(api: Api, seeded: dict[str, Any]) -> list[tuple[str, str, str, float, datetime]]:
    tenant_id = TokenService(api.settings).verify(seeded["admin"]).tenant_id
    async with api.database.session() as session:
        columns = await repo.load_interactions(session=session, tenant_id=tenant_id)
    return sorted(
        (str(u), str(i), kind, value, at)
        for u, i, kind, value, at in zip(
            columns.user_ids,
            columns.item_ids,
            columns.interaction_types,
            columns.values,
            columns.created_at,
            strict=True,
        )
    )


@pytest.fixture
async def seeded(api: Api) -> dict[str, Any]:
    return await _seed(api)


async def test_good_rows_are_stored_and_bad_ones_reported(
    api: Api, seeded: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    published: list[tuple[str, dict]] = []
    original = api.cache.publish

    async def publish(channel: str, message: Any) -> int:
        published.append((channel, message))
        return await original(channel, message)

    monkeypatch.setattr(api.cache, "publish", publish)
    user, items = seeded["shopper_id"], seeded["items"]
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    rows = [
        _row(user, items[0]),
        _row(user, items[1], "teleport"),  # 1: unknown type
        _row(user, str(uuid.uuid4())),  # 2: unknown item
        _row(seeded["stranger"], items[0]),  # 3: another tenant's user
        _row(user, items[2], "purchase", "2025-03-01T13:00:00", interactionValue=3.0),
        _row(user, items[0], when=future),  # 5: in the future
    ]
    result = (await api.ok(IMPORT, {"rows": rows}, seeded["admin"]))["importInteractions"]
    assert result["imported"] == 2 and result["duplicates"] == 0
    assert [(e["index"], e["message"]) for e in result["errors"]] == [
        (1, result["errors"][0]["message"]),
        (2, "Item not found."),
        (3, "User not found."),
        (5, "occurredAt must not be in the future."),
    ]
    assert result["errors"][0]["message"].startswith("interactionType must be one of")
    assert await _stored(api, seeded) == sorted(
        [
            (user, items[0], "view", 1.0, datetime(2025, 3, 1, 12, tzinfo=UTC)),
            (user, items[2], "purchase", 3.0, datetime(2025, 3, 1, 13, tzinfo=UTC)),  # naive: UTC
        ]
    )
    # The same events as recordInteraction, one per stored row.
    events = [message for _channel, message in published if message.get("kind") == "interaction"]
    assert sorted((e["item_id"], e["interaction_type"]) for e in events) == sorted(
        [(items[0], "view"), (items[2], "purchase")]
    )
    assert all(e["user_id"] == user for e in events)


async def test_importing_again_stores_nothing_twice(api: Api, seeded: dict[str, Any]) -> None:
    user, items = seeded["shopper_id"], seeded["items"]
    rows = [_row(user, items[0]), _row(user, items[1]), _row(user, items[0])]
    first = (await api.ok(IMPORT, {"rows": rows}, seeded["admin"]))["importInteractions"]
    assert (first["imported"], first["duplicates"]) == (2, 1)
    again = (await api.ok(IMPORT, {"rows": rows}, seeded["admin"]))["importInteractions"]
    assert (again["imported"], again["duplicates"]) == (0, 3)
    assert len(await _stored(api, seeded)) == 2


async def test_only_admins_import_and_within_bounds(
    api: Api, seeded: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    row = _row(seeded["shopper_id"], seeded["items"][0])
    refused = await api.gql(IMPORT, {"rows": [row]}, seeded["shopper"])
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    anonymous = await api.gql(IMPORT, {"rows": [row]})
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    empty = await api.gql(IMPORT, {"rows": []}, seeded["admin"])
    assert empty["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    monkeypatch.setattr(bounds, "IMPORT_ROWS", 2)
    too_many = await api.gql(IMPORT, {"rows": [row] * 3}, seeded["admin"])
    assert too_many["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "1 to 2 rows" in too_many["errors"][0]["message"]
    not_a_time = await api.gql(IMPORT, {"rows": [{**row, "occurredAt": "soon"}]}, seeded["admin"])
    assert not_a_time["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert await _stored(api, seeded) == []


async def test_the_users_cached_results_are_dropped(api: Api, seeded: dict[str, Any]) -> None:
    shopper = seeded["shopper"]
    await api.ok(RECOMMEND, token=shopper)
    cached = await api.ok(RECOMMEND, token=shopper)
    assert cached["recommendations"]["explanation"]["cached"] is True
    row = _row(seeded["shopper_id"], seeded["items"][0])
    await api.ok(IMPORT, {"rows": [row]}, seeded["admin"])
    fresh = await api.ok(RECOMMEND, token=shopper)
    assert fresh["recommendations"]["explanation"]["cached"] is False
