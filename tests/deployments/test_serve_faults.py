"""The Serve app, two ingress replicas, through its backends' faults.

One app in the session's Serve instance on a PostgreSQL and a Redis this module starts for
itself (never the machine's shared ones). In order:

1. one service at two replicas: a purchased item never comes back from either replica's
   answers, the rate-limit window counts up whichever replica answers, and a subscription held
   by one replica hears the mutations the other serves;
2. Redis killed: recommendations are still answered (uncached), writes commit, ``/health`` says
   degraded, a live subscription ends with ``UNAVAILABLE``; Redis back: caching and new
   subscriptions work again without a restart;
3. PostgreSQL stopped: requests fail with ``UNAVAILABLE`` (never ``INTERNAL``) within the
   connect timeout; started again: the pools recover by themselves and every acknowledged write
   is stored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from benchmarks.faults import OwnPostgres, OwnRedis
from cluster import operations as ops
from deployments.app import AppArgs, DeploymentSize, compose
from storage.db import Database
from storage.settings import Settings
from tests.conftest import missing
from tests.graph_api.test_serve_e2e import wait_ready
from tests.graph_api.ws_client import graphql_socket
from training.pipeline import train_tenant_async

pytestmark = [pytest.mark.ray, pytest.mark.services, pytest.mark.slow]

APP = "faults"
DOMAIN = "faults.example"
ENGINES = ["popularity", "item_knn"]
RECOMMEND = "{ recommendations(options: {numRecommendations: 3}) { items { item { id } } " \
    "explanation { cached } } }"  # fmt: skip
RECORD = """mutation($item: UUID!, $type: String!) {
  recordInteraction(input: {itemId: $item, interactionType: $type}) { id } }"""
STATUS = "{ rateLimitStatus { used } }"
INTERACTIONS = "{ me { interactions(limit: 100) { id } } }"
ACTIVITY = "subscription { userActivity { kind itemId } }"
CREATE_ITEM = "mutation($title: String!) { createItem(input: {title: $title}) { id } }"
DOWN_ANSWER_S = 40.0  # the connect timeout (30 s) and a margin: no request may hang longer


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[OwnPostgres, OwnRedis]]:
    if not OwnPostgres.available():
        missing("PostgreSQL's initdb/pg_ctl not found", "install Debian's postgresql package")
    if not OwnRedis.available():
        missing("redis-server not found", "install Debian's redis-server package")
    postgres, redis = OwnPostgres().init(), OwnRedis()
    postgres.start()
    redis.start()
    try:
        yield postgres, redis
    finally:
        redis.remove()
        postgres.remove()


class Caller:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def ask(self, query: str, variables: dict | None = None, token: str = "") -> dict:
        response = await self.http.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def ok(self, query: str, variables: dict | None = None, token: str = "") -> Any:
        payload = await self.ask(query, variables, token)
        assert "errors" not in payload, payload
        return payload["data"]


@asynccontextmanager
async def faults_app(port: int, settings: dict[str, str]) -> AsyncIterator[Caller]:
    from ray import serve

    args = AppArgs(
        engines=ENGINES,
        engine_timeout_s=20.0,
        version_ttl_s=0.0,
        settings=settings,
        sizes={"ingress": DeploymentSize(num_replicas=2, num_cpus=0.1)},
    )
    serve.run(compose(args), name=APP, route_prefix=f"/{APP}")
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}/{APP}", timeout=DOWN_ANSWER_S + 20
        ) as http:
            await wait_ready(http)
            yield Caller(http)
    finally:
        serve.delete(APP)


async def seed(settings: Settings) -> tuple[str, list[str], list[str]]:
    """An admin token, shoppers' tokens and a trained catalogue of eight items."""
    database = Database.from_settings(settings)
    try:
        tenant, _ = await ops.ensure_tenant(database, domain=DOMAIN, tier="enterprise")
        admin = await ops.issue_token_in(
            database, settings, domain=DOMAIN, email="admin@faults.example", admin=True
        )
        shoppers = [
            (
                await ops.issue_token_in(database, settings, domain=DOMAIN, email=f"s{n}@f.example")
            ).access_token
            for n in range(4)
        ]
    finally:
        await database.dispose()
    return admin.access_token, shoppers, [str(tenant.id)]


def _ids(answer: dict) -> list[str]:
    return [entry["item"]["id"] for entry in answer["recommendations"]["items"]]


async def _health(caller: Caller) -> dict:
    return (await caller.http.get("/health")).json()


async def test_serve_app_through_backend_faults(
    serve_instance: int,
    backends: tuple[OwnPostgres, OwnRedis],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    postgres, redis = backends
    data_dir = tmp_path_factory.mktemp("serve-faults")
    values = {"env": "test", "data_dir": str(data_dir), "database_url": postgres.url,
              "redis_url": redis.url}  # fmt: skip
    settings = Settings(**values)
    await ops.open_database(settings)  # migrated before the replicas start
    admin, shoppers, (tenant,) = await seed(settings)
    async with faults_app(serve_instance, values) as api:
        items = [
            (await api.ok(CREATE_ITEM, {"title": f"Film {n}"}, admin))["createItem"]["id"]
            for n in range(8)
        ]
        for n, token in enumerate(shoppers[1:]):
            for item in items[n : n + 5]:
                await api.ok(RECORD, {"item": item, "type": "view"}, token)
        await train_tenant_async(settings, tenant, ENGINES, evaluate=False)
        shopper = shoppers[0]
        await api.ok(RECORD, {"item": items[0], "type": "view"}, shopper)
        acknowledged: list[str] = []

        # 1. One service at two ingress replicas.
        for _ in range(6):  # both replicas answer (and cache) the list
            listed = _ids(await api.ok(RECOMMEND, token=shopper))
        top = listed[0]
        bought = await api.ok(RECORD, {"item": top, "type": "purchase"}, shopper)
        acknowledged.append(bought["recordInteraction"]["id"])
        for _ in range(12):
            assert top not in _ids(await api.ok(RECOMMEND, token=shopper))
        used = [(await api.ok(STATUS, token=shopper))["rateLimitStatus"]["used"] for _ in range(8)]
        assert used == sorted(used) and len(set(used)) == len(used), used  # one window
        url = f"ws://127.0.0.1:{serve_instance}/{APP}/graphql"
        async with graphql_socket(url, shopper) as ws:
            await ws.subscribe(ACTIVITY)
            await asyncio.sleep(0.5)
            for item in items[1:5]:  # served by either replica; heard by the socket's
                done = await api.ok(RECORD, {"item": item, "type": "view"}, shopper)
                acknowledged.append(done["recordInteraction"]["id"])
                pushed = await ws.next_data(wait_s=10)
                assert pushed["userActivity"]["itemId"] == item

            # 2. Redis killed, then started again.
            redis.stop()
            message = await ws.receive(wait_s=20)
            assert message["payload"]["errors"][0]["extensions"]["code"] == "UNAVAILABLE"
        for _ in range(6):
            answer = await api.ok(RECOMMEND, token=shopper)
            assert _ids(answer) and not answer["recommendations"]["explanation"]["cached"]
        for item in items[5:7]:
            done = await api.ok(RECORD, {"item": item, "type": "view"}, shopper)
            acknowledged.append(done["recordInteraction"]["id"])
        health = [await _health(api) for _ in range(4)]
        assert all(h["status"] == "degraded" for h in health), health
        assert all(h["checks"]["cache"] == "unavailable" for h in health), health
        redis.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            health = [await _health(api) for _ in range(4)]
            if all(h["status"] == "ok" for h in health):
                break
            await asyncio.sleep(0.25)
        assert all(h["status"] == "ok" for h in health), health
        for _ in range(4):
            answer = await api.ok(RECOMMEND, token=shopper)
        assert answer["recommendations"]["explanation"]["cached"]  # cached again
        async with graphql_socket(url, shopper) as ws:
            await ws.subscribe(ACTIVITY)
            await asyncio.sleep(0.5)
            done = await api.ok(RECORD, {"item": items[7], "type": "view"}, shopper)
            acknowledged.append(done["recordInteraction"]["id"])
            assert (await ws.next_data(wait_s=10))["userActivity"]["itemId"] == items[7]

        # 3. PostgreSQL stopped, then started again.
        await asyncio.to_thread(postgres.stop)
        codes = set()
        for query, variables in ((RECORD, {"item": items[2], "type": "view"}), (INTERACTIONS, {})):
            began = time.monotonic()
            payload = await api.ask(query, variables, shopper)
            assert time.monotonic() - began < DOWN_ANSWER_S
            codes |= {error["extensions"]["code"] for error in payload.get("errors", [])}
            assert payload.get("errors"), payload
        assert codes == {"UNAVAILABLE"}, payload
        await asyncio.to_thread(postgres.start)
        deadline = time.monotonic() + 30
        while True:
            payload = await api.ask(RECORD, {"item": items[3], "type": "view"}, shopper)
            if "errors" not in payload:
                acknowledged.append(payload["data"]["recordInteraction"]["id"])
                break
            assert payload["errors"][0]["extensions"]["code"] == "UNAVAILABLE", payload
            assert time.monotonic() < deadline, "the pools did not recover"
            await asyncio.sleep(0.5)
        stored = {
            row["id"] for row in (await api.ok(INTERACTIONS, token=shopper))["me"]["interactions"]
        }
        assert set(acknowledged) <= stored
