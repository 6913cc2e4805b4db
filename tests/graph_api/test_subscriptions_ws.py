"""Subscriptions over a real websocket against a real uvicorn server running ``create_app``.

The fake recommender ranks the catalogue minus the request's history, so a pushed update that
drops the item just interacted with (or rated) proves the history reached the recommender.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.graph_api.conftest import Api
from tests.graph_api.test_flow import CREATE_ITEM, RECOMMEND, RECORD
from tests.graph_api.ws_client import GraphQLSocket, graphql_socket, live_server, refused_close_code

UPDATES = """subscription($k: Int!) {
  recommendationUpdates(numRecommendations: $k) { score item { id title } }
}"""
ITEM_EVENTS = """subscription($id: UUID!) {
  itemInteractions(itemId: $id) { kind itemId userId interactionType value occurredAt }
}"""
ACTIVITY = "subscription { userActivity { kind itemId userId interactionType } }"
TRENDING = "subscription { trendingItems(limit: 2) { score item { id } } }"
METRICS = """subscription($s: Float!) {
  performanceMetricsStream(intervalSeconds: $s) { totalRequests p50LatencyMs }
}"""
RATE = "mutation($id: UUID!, $r: Float!) { rateItem(itemId: $id, rating: $r) { rating } }"


@dataclass
class Live:
    api: Api
    http: httpx.AsyncClient
    ws_url: str

    async def ok(self, query: str, variables: dict[str, Any], token: str) -> dict[str, Any]:
        body = {"query": query, "variables": variables}
        response = await self.http.post("/graphql", json=body, headers=_auth(token))
        assert response.status_code == 200, response.text
        assert "errors" not in response.json(), response.json()
        return response.json()["data"]

    async def items(self, token: str, count: int) -> list[str]:
        made = [
            await self.ok(CREATE_ITEM, {"input": {"title": f"T{n}"}}, token) for n in range(count)
        ]
        return [data["createItem"]["id"] for data in made]

    async def record(self, token: str, item_id: str, kind: str = "click") -> None:
        await self.ok(RECORD, {"input": {"itemId": item_id, "interactionType": kind}}, token)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _ids(entries: list[dict[str, Any]]) -> list[str]:
    return [entry["item"]["id"] for entry in entries]


@pytest.fixture
async def live(api: Api) -> AsyncIterator[Live]:
    async with (
        live_server(api.app) as address,
        httpx.AsyncClient(base_url=f"http://{address}") as http,
    ):
        yield Live(api, http, f"ws://{address}/graphql")


async def test_interaction_pushes_fresh_recommendations(live: Live) -> None:
    token, _ = await live.api.register("ada@live.example", "live.example")
    items = await live.items(token, 4)
    async with graphql_socket(live.ws_url, token) as ws:
        await ws.subscribe(UPDATES, {"k": 3})
        first = (await ws.next_data())["recommendationUpdates"]
        assert _ids(first) == items[:3]
        await live.record(token, items[0])
        pushed = (await ws.next_data())["recommendationUpdates"]
        assert _ids(pushed) == items[1:4]
        # A rating is folded in too, a low one included (as in training: it weighs less, and
        # the user has seen the item, so it is not offered again).
        await live.ok(RATE, {"id": items[1], "r": 5.0}, token)
        assert _ids((await ws.next_data())["recommendationUpdates"]) == items[2:4]
        await live.ok(RATE, {"id": items[2], "r": 1.0}, token)
        assert _ids((await ws.next_data())["recommendationUpdates"]) == items[3:4]
    # The user's cached result was dropped: a plain query sees the interaction too.
    data = await live.ok(RECOMMEND, {"options": {"numRecommendations": 3}}, token)
    assert items[0] not in _ids(data["recommendations"]["items"])
    assert live.api.recommender.requests[-1].history == (items[2], items[1], items[0])


async def test_activity_streams_are_tenant_scoped(live: Live) -> None:
    ada, ada_id = await live.api.register("ada@a.example", "a.example")
    cy, _ = await live.api.register("cy@a.example", "a.example")
    bob, _ = await live.api.register("bob@b.example", "b.example")
    (item,) = await live.items(ada, 1)
    async with (
        graphql_socket(live.ws_url, ada) as mine,
        graphql_socket(live.ws_url, cy) as colleague,
        graphql_socket(live.ws_url, bob) as outsider,
        graphql_socket(live.ws_url, bob) as prober,
    ):
        await mine.subscribe(ACTIVITY)
        await colleague.subscribe(ITEM_EVENTS, {"id": item})
        await outsider.subscribe("subscription { tenantEvents(onlyMine: false) }")
        await prober.subscribe(ITEM_EVENTS, {"id": item})
        refused = await prober.receive()
        assert refused["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        await asyncio.sleep(0.1)  # the streams are listening once their first poll started
        await live.record(ada, item, "purchase")
        own = (await mine.next_data())["userActivity"]
        assert own == {"kind": "interaction", "itemId": item, "userId": ada_id} | {
            "interactionType": "purchase"
        }
        seen = (await colleague.next_data())["itemInteractions"]
        assert seen["itemId"] == item and seen["value"] == 1.0 and seen["occurredAt"]
        assert seen["userId"] is None  # a colleague sees the event, not who it was
        assert await outsider.nothing_within(0.5)


async def test_trending_is_pushed_when_interactions_arrive(live: Live) -> None:
    token, _ = await live.api.register("tia@trend.example", "trend.example")
    items = await live.items(token, 3)
    async with graphql_socket(live.ws_url, token) as ws:
        await ws.subscribe(TRENDING)
        assert _ids((await ws.next_data())["trendingItems"]) == items[:2]
        await live.record(token, items[2])
        assert _ids((await ws.next_data(wait_s=5))["trendingItems"]) == items[:2]


async def test_metrics_stream_is_admin_only_and_bounded(live: Live) -> None:
    admin, _ = await live.api.register("root@m.example", "m.example")
    user, _ = await live.api.register("user@m.example", "m.example")
    for _ in range(2):  # the tenant's own traffic, which the stream reports
        await live.ok("{ me { id } }", {}, admin)
    async with graphql_socket(live.ws_url, admin) as ws:
        await ws.subscribe(METRICS, {"s": 0.5})
        first = (await ws.next_data())["performanceMetricsStream"]
        second = (await ws.next_data(wait_s=3))["performanceMetricsStream"]
        assert second["totalRequests"] >= first["totalRequests"] >= 2
        await ws.subscribe(METRICS, {"s": 0.01})
        await _expect_error(ws, "BAD_USER_INPUT")
    async with graphql_socket(live.ws_url, user) as ws:
        await ws.subscribe(METRICS, {"s": 1.0})
        await _expect_error(ws, "FORBIDDEN")


async def _expect_error(ws: GraphQLSocket, code: str) -> None:
    while (message := await ws.receive())["type"] == "next" and "errors" not in message["payload"]:
        pass  # a stream opened before this one may still be ticking
    assert message["payload"]["errors"][0]["extensions"]["code"] == code, message


async def test_invalid_token_is_refused_and_anonymous_gets_unauthenticated(live: Live) -> None:
    assert await refused_close_code(live.ws_url, "not-a-token") == 4403
    async with graphql_socket(live.ws_url, None) as ws:
        await ws.subscribe(ACTIVITY)
        await _expect_error(ws, "UNAUTHENTICATED")


async def test_only_an_admin_follows_everyones_events(live: Live) -> None:
    admin, _ = await live.api.register("root@events.example", "events.example")
    user, user_id = await live.api.register("user@events.example", "events.example")
    (item,) = await live.items(admin, 1)
    async with (
        graphql_socket(live.ws_url, user) as prying,
        graphql_socket(live.ws_url, user) as own,
        graphql_socket(live.ws_url, admin) as everyone,
    ):
        await prying.subscribe("subscription { tenantEvents(onlyMine: false) }")
        await _expect_error(prying, "FORBIDDEN")
        await own.subscribe("subscription { tenantEvents }")
        await everyone.subscribe("subscription { tenantEvents(onlyMine: false) }")
        await asyncio.sleep(0.1)  # the streams are listening once their first poll started
        await live.record(admin, item, "view")
        await live.record(user, item, "click")
        seen = (await everyone.next_data())["tenantEvents"]
        assert seen["interaction_type"] == "view"
        mine = (await own.next_data())["tenantEvents"]
        assert mine["user_id"] == user_id and mine["interaction_type"] == "click"


ITEM_UPDATES = """subscription {
  tenantItemUpdates { change itemId occurredAt item { id title tenant { domain } } }
}"""
UPDATE_ITEM = """
mutation($id: UUID!, $title: String!) { updateItem(id: $id, input: {title: $title}) { id } }"""
DELETE_ITEM = "mutation($id: UUID!) { deleteItem(id: $id) }"
IMPORT_ITEMS = """
mutation($items: [ItemInput!]!) { importItems(items: $items) { itemIds } }"""


async def test_item_writes_reach_the_tenants_item_subscribers_only(live: Live) -> None:
    admin, _ = await live.api.register("root@cat.example", "cat.example")
    user, _ = await live.api.register("user@cat.example", "cat.example")
    outsider, _ = await live.api.register("bob@dog.example", "dog.example")
    async with (
        graphql_socket(live.ws_url, user) as ws,
        graphql_socket(live.ws_url, outsider) as other,
    ):
        await ws.subscribe(ITEM_UPDATES)
        await other.subscribe(ITEM_UPDATES)
        await asyncio.sleep(0.1)  # the streams are listening once their first poll started
        (item,) = await live.items(admin, 1)
        created = (await ws.next_data())["tenantItemUpdates"]
        assert created["change"] == "CREATED" and created["itemId"] == item
        assert created["item"] == {"id": item, "title": "T0", "tenant": {"domain": "cat.example"}}
        assert created["occurredAt"]

        await live.ok(UPDATE_ITEM, {"id": item, "title": "Renamed"}, admin)
        updated = (await ws.next_data())["tenantItemUpdates"]
        assert (updated["change"], updated["item"]["title"]) == ("UPDATED", "Renamed")

        await live.ok(DELETE_ITEM, {"id": item}, admin)
        deleted = (await ws.next_data())["tenantItemUpdates"]
        assert (deleted["change"], deleted["itemId"], deleted["item"]) == ("DELETED", item, None)

        rows = [{"title": "A", "externalId": "a"}, {"title": "B", "externalId": "b"}]
        await live.ok(IMPORT_ITEMS, {"items": rows}, admin)
        rows[1]["title"] = "B2"
        await live.ok(IMPORT_ITEMS, {"items": rows[1:]}, admin)
        changes = [(await ws.next_data())["tenantItemUpdates"] for _ in range(3)]
        assert [(c["change"], c["item"]["title"]) for c in changes] == [
            ("CREATED", "A"),
            ("CREATED", "B"),
            ("UPDATED", "B2"),
        ]
        assert await other.nothing_within(0.5)


async def test_recommendation_updates_follow_the_catalogue(live: Live) -> None:
    token, _ = await live.api.register("ada@shelf.example", "shelf.example")
    items = await live.items(token, 2)
    async with graphql_socket(live.ws_url, token) as ws:
        await ws.subscribe(UPDATES, {"k": 3})
        assert _ids((await ws.next_data())["recommendationUpdates"]) == items
        created = await live.ok(CREATE_ITEM, {"input": {"title": "New"}}, token)
        new = created["createItem"]["id"]
        assert _ids((await ws.next_data())["recommendationUpdates"]) == [*items, new]
        # A change that neither adds nor removes an item of the list pushes nothing.
        await live.ok(UPDATE_ITEM, {"id": items[0], "title": "Renamed"}, token)
        assert await ws.nothing_within(0.5)
        await live.ok(DELETE_ITEM, {"id": items[1]}, token)
        assert _ids((await ws.next_data())["recommendationUpdates"]) == [items[0], new]
