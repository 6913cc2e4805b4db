"""The issue's target, in-process: a tenant that receives interactions through the API is
trained, then retrained after 1,000 more, by the app's own scheduler with no operator action,
and the new version serves without a restart. (``test_serve_scheduled_training`` is the same
flow through Ray Serve.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from cluster import operations as ops
from graph_api.app import create_app
from recommend.inprocess import InProcessService
from recommend.options import TRAIN_ENTRYPOINT, ServingOptions
from storage.cache import create_cache
from storage.db import Database, migrate
from storage.settings import Settings

ENGINES = ["popularity", "item_knn"]
DOMAIN = "shop.example"
ITEMS, USERS = 20, 6
CREATE_ITEM = "mutation($i: ItemInput!) { createItem(input: $i) { id } }"
RECORD = "mutation($i: InteractionInput!) { recordInteraction(input: $i) { id } }"
JOBS = """{ trainingJobs(limit: 10) {
  jobId status trigger reason progress metrics modelVersion error } }"""
RECOMMEND = """{ recommendations(options: {numRecommendations: 5, explain: true,
  algorithm: "item_knn"}) { explanation { modelVersion } items { item { id } } } }"""


def scheduled_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "test",
        "data_dir": data_dir,
        "jwt_secret": SecretStr("scheduled-training-secret-0123456789abcdef"),
        "scheduler_interval_seconds": 0.2,
        "retrain_after_interactions": 1000,
        "retrain_after_minutes": 0,  # only the count rule: the test decides when
        "first_train_min_interactions": 50,
        "first_train_min_users": 2,
    }
    return Settings(**(values | overrides))


@dataclass
class Shop:
    client: httpx.AsyncClient
    admin: str
    users: list[str]
    items: list[str]

    async def ok(self, query: str, variables: dict[str, Any], token: str) -> dict[str, Any]:
        body = {"query": query, "variables": variables}
        response = await self.client.post(
            "/graphql", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        payload = response.json()
        assert response.status_code == 200 and "errors" not in payload, payload
        return payload["data"]

    async def interactions(self, count: int, offset: int = 0) -> None:
        """``count`` clicks through the API, users taking turns, each over a window of 8 items
        (overlapping its neighbours'), so every user has items left to recommend."""
        for n in range(offset, offset + count):
            user = n % len(self.users)
            item = self.items[(user * 3 + (n // len(self.users)) % 8) % len(self.items)]
            body = {"i": {"itemId": item, "interactionType": "click"}}
            await self.ok(RECORD, body, self.users[user])

    async def jobs(self) -> list[dict[str, Any]]:
        return (await self.ok(JOBS, {}, self.admin))["trainingJobs"]

    async def succeeded(self, count: int, timeout_s: float = 120) -> list[dict[str, Any]]:
        """The tenant's jobs once ``count`` of them succeeded (failing on a failed one)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            jobs = await self.jobs()
            assert all(job["status"] != "failed" for job in jobs), jobs
            if sum(job["status"] == "succeeded" for job in jobs) >= count:
                return jobs
            await asyncio.sleep(0.2)
        raise AssertionError(f"fewer than {count} jobs succeeded: {await self.jobs()}")

    async def served_version(self) -> str:
        data = await self.ok(RECOMMEND, {}, self.users[0])
        return data["recommendations"]["explanation"]["modelVersion"]


@asynccontextmanager
async def shop(settings: Settings, entrypoint: str = TRAIN_ENTRYPOINT) -> AsyncIterator[Shop]:
    database = Database.from_settings(settings)
    cache = create_cache(settings)
    recommender = InProcessService(
        settings,
        ENGINES,
        database=database,
        options=ServingOptions(train_entrypoint=entrypoint),
    )
    app = create_app(recommender=recommender, settings=settings, database=database, cache=cache)
    try:
        # The operator's part, before the app (and its scheduler) starts.
        await migrate(database.url)
        await ops.ensure_tenant(database, domain=DOMAIN, tier="enterprise")
        admin = await ops.issue_token_in(
            database, settings, domain=DOMAIN, email=f"admin@{DOMAIN}", admin=True
        )
        users = [
            (
                await ops.issue_token_in(database, settings, domain=DOMAIN, email=f"u{n}@{DOMAIN}")
            ).access_token
            for n in range(USERS)
        ]
        async with app.router.lifespan_context(app):  # starts the scheduler
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                running = Shop(client, admin.access_token, users, [])
                for n in range(ITEMS):
                    made = await running.ok(
                        CREATE_ITEM,
                        {"i": {"title": f"Item {n}", "category": "ab"[n % 2]}},
                        admin.access_token,
                    )
                    running.items.append(made["createItem"]["id"])
                yield running
    finally:
        await cache.close()
        await database.dispose()


TRAIN = """mutation { trainModel(algorithms: ["popularity", "item_knn"]) {
  jobId status progress } }"""
JOB = "query($id: String!) { trainingJob(id: $id) { status progress metrics trigger } }"


async def test_train_model_returns_a_recorded_job(tmp_path: Path) -> None:
    settings = scheduled_settings(tmp_path, scheduler_enabled=False)
    async with shop(settings, "tests.deployments.fakes:fake_train") as running:
        job = (await running.ok(TRAIN, {}, running.admin))["trainModel"]
        assert job["status"] == "succeeded"  # in-process: trains before it answers
        read = (await running.ok(JOB, {"id": job["jobId"]}, running.admin))["trainingJob"]
        assert read["progress"] == {name: {"state": "succeeded"} for name in ENGINES}
        assert read["trigger"] == "api" and set(read["metrics"]) == set(ENGINES)
        assert [j["jobId"] for j in await running.jobs()] == [job["jobId"]]


@pytest.mark.slow
async def test_the_scheduler_trains_and_retrains_with_no_operator(tmp_path: Path) -> None:
    async with shop(scheduled_settings(tmp_path)) as running:
        await running.interactions(40)
        await asyncio.sleep(1.0)  # five scheduler rounds: 40 interactions are not enough
        assert await running.jobs() == []
        await running.interactions(20, offset=40)
        [first] = await running.succeeded(1)
        assert first["trigger"] == "scheduler" and first["reason"] == "never trained"
        assert set(first["progress"]) == set(ENGINES) and set(first["metrics"]) == set(ENGINES)
        version = await running.served_version()
        assert version == first["modelVersion"]

        await running.interactions(999, offset=60)
        await asyncio.sleep(1.0)
        assert len(await running.jobs()) == 1  # 999 new interactions: not yet
        assert await running.served_version() == version  # and now cached for this user
        await running.interactions(1, offset=1059)
        jobs = await running.succeeded(2)
        newest = jobs[0]
        assert newest["trigger"] == "scheduler"
        assert newest["reason"].startswith("1000 new interactions")
        assert newest["modelVersion"] != version
        # Served at once by the running app: no restart, no stale cached result.
        assert await running.served_version() == newest["modelVersion"]
