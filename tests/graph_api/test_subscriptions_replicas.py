"""Two app instances ("replicas") sharing one database and one Redis / Redis Cluster.

The subscriber's socket is on one replica, the interaction is recorded on the other: the push
can only arrive through the cache's pub/sub. Runs with ``RECSERVE_TEST_REDIS_URL`` /
``RECSERVE_TEST_REDIS_CLUSTER`` (skips without them, fails under CI).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.graph_api.conftest import make_settings, running_api
from tests.graph_api.test_subscriptions_ws import ACTIVITY, ITEM_UPDATES, UPDATES, Live
from tests.graph_api.ws_client import GraphQLSocket, graphql_socket, live_server

pytestmark = pytest.mark.services


@pytest.fixture(params=["redis", "cluster"])
def shared_redis(request: pytest.FixtureRequest) -> str:
    name = "redis_url" if request.param == "redis" else "redis_cluster_url"
    return str(request.getfixturevalue(name))


async def _replica(stack: AsyncExitStack, database_url: str, data_dir: Path, redis: str) -> Live:
    settings = make_settings(data_dir, redis_url=redis)
    api = await stack.enter_async_context(running_api(database_url, settings))
    address = await stack.enter_async_context(live_server(api.app))
    http = await stack.enter_async_context(httpx.AsyncClient(base_url=f"http://{address}"))
    return Live(api, http, f"ws://{address}/graphql")


@pytest.fixture
async def replicas(tmp_path: Path, shared_redis: str) -> AsyncIterator[tuple[Live, Live]]:
    database_url = f"sqlite+aiosqlite:///{tmp_path}/shared.db"
    async with AsyncExitStack() as stack:
        first = await _replica(stack, database_url, tmp_path, shared_redis)
        second = await _replica(stack, database_url, tmp_path, shared_redis)
        yield first, second


async def test_push_crosses_replicas_and_stays_in_its_tenant(replicas: tuple[Live, Live]) -> None:
    here, there = replicas
    token, _ = await here.api.register("ada@replica-a.example", "replica-a.example")
    other, _ = await here.api.register("bob@replica-b.example", "replica-b.example")
    items = await here.items(token, 3)
    async with (
        graphql_socket(here.ws_url, token) as ws,
        graphql_socket(here.ws_url, other) as outsider,
    ):
        await ws.subscribe(UPDATES, {"k": 2})
        await outsider.subscribe(ACTIVITY)
        await outsider.subscribe("subscription { tenantEvents(onlyMine: false) }")
        first = (await ws.next_data())["recommendationUpdates"]
        assert [entry["item"]["id"] for entry in first] == items[:2]
        await there.record(token, items[0])
        pushed = (await ws.next_data())["recommendationUpdates"]
        assert [entry["item"]["id"] for entry in pushed] == items[1:3]
        assert await outsider.nothing_within(0.5)


async def test_item_updates_cross_replicas(replicas: tuple[Live, Live]) -> None:
    here, there = replicas
    token, _ = await here.api.register("ada@items-a.example", "items-a.example")
    items = await here.items(token, 1)
    async with graphql_socket(here.ws_url, token) as ws:
        await ws.subscribe(ITEM_UPDATES)
        await ws.subscribe(UPDATES, {"k": 3})
        assert [entry["item"]["id"] for entry in await _next(ws, "recommendationUpdates")] == items
        await asyncio.sleep(0.1)  # both streams are listening once their first poll started
        new = (await there.items(token, 1))[0]
        created = await _next(ws, "tenantItemUpdates")
        assert (created["change"], created["itemId"]) == ("CREATED", new)
        pushed = await _next(ws, "recommendationUpdates")
        assert [entry["item"]["id"] for entry in pushed] == [*items, new]


async def _next(ws: GraphQLSocket, field: str) -> Any:
    """The next payload of ``field`` (the socket carries two streams)."""
    while True:
        data = await ws.next_data()
        if field in data:
            return data[field]
