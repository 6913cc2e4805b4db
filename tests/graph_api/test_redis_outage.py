"""Redis stopped under traffic and started again: recommendations keep being answered
(uncached), writes commit, /health says degraded, rate limits fail open (the policy in
docs/operations.md), and when Redis is back caching and limits resume without a restart. The
test starts a redis-server of its own; the machine's shared one is never touched."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.faults import OwnRedis
from tests.conftest import missing
from tests.graph_api.conftest import make_settings, running_api

pytestmark = [pytest.mark.services, pytest.mark.slow]

RECOMMEND = "{ recommendations { totalCount explanation { cached } } }"
RECORD = """
mutation($item: UUID!) {
  recordInteraction(input: {itemId: $item, interactionType: "view"}) { id }
}"""
STATUS = "{ rateLimitStatus { used } }"
INTERACTIONS = "{ me { interactions(limit: 100) { id } } }"


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    if not OwnRedis.available():
        missing("redis-server not found", "install Debian's redis-server package")
    server = OwnRedis()
    server.start()
    try:
        yield server
    finally:
        server.remove()


async def test_redis_going_away_and_coming_back(own_redis: OwnRedis, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, redis_url=own_redis.url)
    async with running_api(f"sqlite+aiosqlite:///{tmp_path}/outage.db", settings) as api:
        token, _ = await api.register("shopper@outage.example", "outage.example")
        created = await api.ok(
            'mutation { createItem(input: {title: "Lamp"}) { id } }', token=token
        )
        item = created["createItem"]["id"]
        first = await api.ok(RECOMMEND, token=token)
        again = await api.ok(RECOMMEND, token=token)
        assert again["recommendations"]["explanation"]["cached"]  # Redis caches
        before = (await api.ok(STATUS, token=token))["rateLimitStatus"]["used"]
        assert before > 0

        own_redis.stop()
        asked = len(api.recommender.requests)
        for _ in range(3):  # answered, uncached: every request reaches the recommender
            down = await api.ok(RECOMMEND, token=token)
            assert down["recommendations"]["totalCount"] == first["recommendations"]["totalCount"]
            assert not down["recommendations"]["explanation"]["cached"]
        assert len(api.recommender.requests) == asked + 3
        written = (await api.ok(RECORD, {"item": item}, token))["recordInteraction"]["id"]
        health = (await api.client.get("/health")).json()
        assert health["status"] == "degraded" and health["checks"]["cache"] == "unavailable"
        metrics = (await api.client.get("/metrics")).text
        assert 'dependency_up{dependency="cache"} 0.0' in metrics  # Prometheus sees it
        assert 'dependency_up{dependency="database"} 1.0' in metrics
        assert (await api.client.get("/health/ready")).status_code == 200  # still in service
        # fail-open: no window to count in, so nothing is refused and nothing is counted
        assert (await api.ok(STATUS, token=token))["rateLimitStatus"]["used"] == 0

        own_redis.start()
        for _ in range(50):  # the client reconnects by itself on its next command
            health = (await api.client.get("/health")).json()
            if health["checks"]["cache"] == "ok":
                break
            await asyncio.sleep(0.1)
        assert health["status"] == "ok", health
        metrics = (await api.client.get("/metrics")).text
        assert 'dependency_up{dependency="cache"} 1.0' in metrics
        await api.ok(RECOMMEND, token=token)
        back = await api.ok(RECOMMEND, token=token)
        assert back["recommendations"]["explanation"]["cached"]  # caching again
        assert (await api.ok(STATUS, token=token))["rateLimitStatus"]["used"] > 0  # counting
        mine = (await api.ok(INTERACTIONS, token=token))["me"]["interactions"]
        stored = {row["id"] for row in mine}
        assert written in stored  # the write acknowledged while Redis was down


ACTIVITY = "subscription { userActivity { kind itemId } }"


async def test_a_subscription_ends_with_unavailable_and_a_new_one_works_after(
    own_redis: OwnRedis, tmp_path: Path
) -> None:
    """Live events ride on Redis: when it goes, the stream ends with an UNAVAILABLE error (not
    a silent stall); once it is back a client's new subscription gets events again."""
    from tests.graph_api.ws_client import graphql_socket, live_server

    settings = make_settings(tmp_path, redis_url=own_redis.url)
    async with running_api(f"sqlite+aiosqlite:///{tmp_path}/live.db", settings) as api:
        token, _ = await api.register("live@outage.example", "outage.example")
        create = 'mutation { createItem(input: {title: "Lamp"}) { id } }'
        item = (await api.ok(create, token=token))["createItem"]["id"]
        async with live_server(api.app) as address:
            url = f"ws://{address}/graphql"
            async with graphql_socket(url, token) as ws:
                await ws.subscribe(ACTIVITY)
                await asyncio.sleep(0.2)
                own_redis.stop()
                message = await ws.receive(wait_s=15)
                errors = message["payload"]["errors"]
                assert errors[0]["extensions"]["code"] == "UNAVAILABLE", message
                assert (await ws.receive(wait_s=5))["type"] == "complete"  # the stream ended
            own_redis.start()
            await asyncio.sleep(0.5)
            async with graphql_socket(url, token) as ws:
                await ws.subscribe(ACTIVITY)
                await asyncio.sleep(0.2)
                await api.ok(RECORD, {"item": item}, token)
                pushed = await ws.next_data(wait_s=10)
                assert pushed["userActivity"]["itemId"] == item
