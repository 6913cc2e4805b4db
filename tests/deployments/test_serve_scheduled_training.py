"""The issue's target through Ray Serve: a tenant that receives 1,000 interactions through the
API is retrained by the combiner's scheduler with no operator action, and the new version
serves without a restart. The same flow in-process: ``test_scheduled_training``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from cluster import operations as ops
from deployments.app import AppArgs, compose
from storage.db import Database, migrate
from storage.settings import Settings
from tests.deployments.test_scheduled_training import (
    CREATE_ITEM,
    DOMAIN,
    ENGINES,
    ITEMS,
    USERS,
    Shop,
)
from tests.graph_api.test_serve_e2e import wait_ready

pytestmark = [pytest.mark.ray, pytest.mark.slow]

APP = "scheduled-training"


@asynccontextmanager
async def served_shop(port: int, data_dir: Path) -> AsyncIterator[Shop]:
    from ray import serve

    values = {
        "env": "test",
        "data_dir": str(data_dir),
        "scheduler_interval_seconds": "0.5",
        "retrain_after_interactions": "1000",
        "retrain_after_minutes": "0",
        "first_train_min_interactions": "50",
        "first_train_min_users": "2",
    }
    settings = Settings(**values)
    # The operator's part (``recserve tenant create``, ``recserve token``) before the app runs.
    await migrate(settings.database_url)
    database = Database.from_settings(settings)
    try:
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
    finally:
        await database.dispose()
    args = AppArgs(engines=ENGINES, engine_timeout_s=20.0, version_ttl_s=0.0, settings=values)
    serve.run(compose(args), name=APP, route_prefix=f"/{APP}")
    try:
        base = f"http://127.0.0.1:{port}/{APP}"
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            await wait_ready(http)
            shop = Shop(http, admin.access_token, users, [])
            for n in range(ITEMS):
                made = await shop.ok(
                    CREATE_ITEM,
                    {"i": {"title": f"Item {n}", "category": "ab"[n % 2]}},
                    admin.access_token,
                )
                shop.items.append(made["createItem"]["id"])
            yield shop
    finally:
        serve.delete(APP)


async def test_serve_retrains_after_1000_interactions_with_no_operator(
    serve_instance: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data_dir = tmp_path_factory.mktemp("scheduled-training")
    async with served_shop(serve_instance, data_dir) as shop:
        await shop.interactions(60)
        [first] = await shop.succeeded(1, timeout_s=300)
        assert first["trigger"] == "scheduler" and first["reason"] == "never trained"
        version = await shop.served_version()
        assert version == first["modelVersion"]

        await shop.interactions(1000, offset=60)
        jobs = await shop.succeeded(2, timeout_s=300)
        newest = jobs[0]
        assert newest["trigger"] == "scheduler"
        assert newest["reason"].startswith("1000 new interactions")
        assert newest["modelVersion"] != version
        # The running app serves it: announced on models:{tenant} or after the version TTL.
        assert await shop.served_version() == newest["modelVersion"]
