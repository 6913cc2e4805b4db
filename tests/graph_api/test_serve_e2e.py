"""The client flow against the real Serve application over HTTP: ingress, combiner, engines.

Each backend gets its own app (name and route prefix) in the shared session Serve instance, so
the apps coexist with other modules' apps; the replicas learn the data dir, database and JWT
secret only through ``AppArgs.settings``. The tenant is trained in between (as ``recserve
train`` would), so the recommendations come from real, promoted models.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from cluster import operations as ops
from deployments.app import AppArgs, compose
from deployments.vector_store import NAME as VECTORS
from deployments.vector_store import RemoteVectorStore
from storage.db import Database, create_database, drop_database
from storage.settings import Settings
from tests.graph_api.conftest import REGISTER, registration_input
from tests.graph_api.test_cold_start import CATALOGUE
from tests.graph_api.test_flow import CREATE_ITEM, RECOMMEND, RECORD, SIMILAR
from training.pipeline import train_tenant_async

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ENGINES = ["popularity", "item_knn", "ease", "content"]
PASSWORD = "correct horse battery"
READY_TIMEOUT_S = 60.0


class Client:
    def __init__(self, http: httpx.AsyncClient, settings: Settings) -> None:
        self.http = http
        self.settings = settings  # the replicas' own: the operator works on their database
        self.tenants: set[str] = set()

    async def ok(self, query: str, variables: dict | None = None, token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = {"query": query, "variables": variables or {}}
        response = await self.http.post("/graphql", json=body, headers=headers)
        assert response.status_code == 200, response.text
        payload = response.json()
        assert "errors" not in payload, payload
        return payload["data"]

    async def register(self, email: str, domain: str) -> tuple[str, str]:
        """As ``tests.graph_api.conftest.Api.register``: the operator creates an unseen domain's
        tenant (open registration) and makes its first user the admin (``recserve token
        --admin``), whose token is returned; everyone signs up through ``register``."""
        database = Database.from_settings(self.settings)
        try:
            created = False
            if domain not in self.tenants:
                _, created = await ops.ensure_tenant(database, domain=domain, registration="open")
                self.tenants.add(domain)
            data = await self.ok(REGISTER, {"input": registration_input(email, domain)})
            token, user_id = data["register"]["accessToken"], data["register"]["user"]["id"]
            if created:
                issued = await ops.issue_token_in(
                    database, self.settings, domain=domain, email=email, admin=True
                )
                token = issued.access_token
            return token, user_id
        finally:
            await database.dispose()


def replica_settings(data_dir: Path, database_url: str | None) -> dict[str, str]:
    # No jwt_secret: a secret in AppArgs.settings is refused (the Serve config is public).
    # Replicas and this process share the data dir's generated development secret instead.
    values = {"env": "test", "data_dir": str(data_dir)}
    if database_url is not None:
        values["database_url"] = database_url
    return values


async def wait_ready(http: httpx.AsyncClient) -> None:
    """The route answers once the ingress replica has run its lifespan (migrations included)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if (await http.get("/health/ready")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.25)
    raise TimeoutError(f"the app at {http.base_url} was not ready in {READY_TIMEOUT_S:.0f}s")


@asynccontextmanager
async def deployed_app(
    port: int, name: str, data_dir: Path, database_url: str | None = None
) -> AsyncIterator[tuple[Client, Settings]]:
    from ray import serve

    values = replica_settings(data_dir, database_url)
    # Only AppArgs carries the settings: the test process's environment says nothing of them.
    args = AppArgs(engines=ENGINES, engine_timeout_s=20.0, version_ttl_s=0.0, settings=values)
    route = f"/{name}"
    serve.run(compose(args), name=name, route_prefix=route)
    settings = Settings(**values)
    try:
        base = f"http://127.0.0.1:{port}{route}"
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            await wait_ready(http)
            yield Client(http, settings), settings
    finally:
        serve.delete(name)


async def seed_flow(client: Client, settings: Settings) -> None:
    ada_token, _ = await client.register("ada@e2e.example", "e2e.example")
    item_ids = []
    for n in range(5):
        item = {"title": f"Book {n}", "category": "books" if n % 2 else "films"}
        data = await client.ok(CREATE_ITEM, {"input": item}, ada_token)
        item_ids.append(data["createItem"]["id"])
    for item_id, kind in zip(item_ids[:3], ["view", "click", "purchase"], strict=True):
        data = await client.ok(
            RECORD, {"input": {"itemId": item_id, "interactionType": kind}}, ada_token
        )
        assert data["recordInteraction"]["item"]["id"] == item_id
    # A second shopper links item 0 to items 3 and 4, so collaborative engines have something
    # to say to Ada beyond what she already saw.
    bo_token, _ = await client.register("bo@e2e.example", "e2e.example")
    for item_id in (item_ids[0], item_ids[3], item_ids[4]):
        await client.ok(
            RECORD, {"input": {"itemId": item_id, "interactionType": "purchase"}}, bo_token
        )

    me = await client.ok("{ me { tenant { id } } }", token=ada_token)
    trained = await train_tenant_async(settings, me["me"]["tenant"]["id"], ENGINES, evaluate=False)
    assert set(trained.versions) == set(ENGINES)

    data = await client.ok(
        RECOMMEND, {"options": {"numRecommendations": 5, "explain": True}}, ada_token
    )
    result = data["recommendations"]
    assert result["totalCount"] == len(result["items"]) > 0
    assert all(entry["score"] > 0 for entry in result["items"])
    assert result["responseTimeMs"] > 0
    assert result["explanation"]["enginesFailed"] == []
    # Three interactions: part way from the cold blend (popularity, content) to the warm one.
    assert {"popularity", "ease"} <= set(result["explanation"]["enginesUsed"])
    # What Ada already interacted with is never recommended back to her.
    assert {entry["item"]["id"] for entry in result["items"]} <= set(item_ids[3:])

    data = await client.ok(SIMILAR, {"id": item_ids[0]}, ada_token)
    similar = data["similarItems"]
    assert similar and all(entry["score"] > 0 for entry in similar)
    assert item_ids[0] not in {entry["item"]["id"] for entry in similar}
    assert {entry["item"]["id"] for entry in similar} <= set(item_ids)


TRAIN = 'mutation { trainModel(algorithms: ["popularity", "content"]) { jobId } }'
JOB = "query($id: String!) { trainingJob(id: $id) { status error } }"


async def new_items_flow(client: Client, app_name: str) -> None:
    """Embedded defaults (no Qdrant server): a cold tenant's new items are similar and
    recommendable at once, and a training run started through the API writes the catalogue's
    vectors into the one store the app's ``vectors`` replica holds."""
    from ray import serve

    token, _ = await client.register("cy@cold.example", "cold.example")
    ids = []
    for title, category, description in CATALOGUE:
        item = {"title": title, "category": category, "description": description}
        ids.append((await client.ok(CREATE_ITEM, {"input": item}, token))["createItem"]["id"])
    for item_id in ids[:3]:  # three running shoes
        await client.ok(RECORD, {"input": {"itemId": item_id, "interactionType": "view"}}, token)
    listed = await client.ok(RECOMMEND, {"options": {"numRecommendations": 5}}, token)
    assert listed["recommendations"]["items"], listed
    # Content neighbours before any training: the hashed vectors every item write stored.
    similar = (await client.ok(SIMILAR, {"id": ids[0]}, token))["similarItems"]
    assert {e["item"]["id"] for e in similar[:2]} <= {ids[1], ids[2], ids[6]}, similar

    item = {"title": "Red running shoe", "category": "shoes", "description": CATALOGUE[0][2]}
    created = (await client.ok(CREATE_ITEM, {"input": item}, token))["createItem"]["id"]
    similar = (await client.ok(SIMILAR, {"id": ids[0]}, token))["similarItems"]
    assert similar[0]["item"]["id"] == created, similar  # the same product, listed again

    job_id = (await client.ok(TRAIN, None, token))["trainModel"]["jobId"]
    deadline = time.monotonic() + 180
    job = {"status": "queued"}
    while job["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        job = (await client.ok(JOB, {"id": job_id}, token))["trainingJob"]
    assert job["status"] == "succeeded", job
    me = await client.ok("{ me { tenant { id } } }", token=token)
    store = RemoteVectorStore(serve.get_deployment_handle(VECTORS, app_name=app_name))
    assert await store.count("items_content", me["me"]["tenant"]["id"]) == len(ids) + 1


async def test_flow_through_serve_on_sqlite(
    serve_instance: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data_dir = tmp_path_factory.mktemp("serve-e2e-sqlite")
    async with deployed_app(serve_instance, "e2e-sqlite", data_dir) as (client, settings):
        await seed_flow(client, settings)
        await new_items_flow(client, "e2e-sqlite")


@pytest.mark.services
async def test_flow_through_serve_on_postgres(
    serve_instance: int, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    url = postgres_url.rsplit("/", 1)[0] + f"/recserve_e2e_{uuid.uuid4().hex[:10]}"
    await create_database(url)
    data_dir = tmp_path_factory.mktemp("serve-e2e-postgres")
    try:
        async with deployed_app(serve_instance, "e2e-postgres", data_dir, url) as (
            client,
            settings,
        ):
            await seed_flow(client, settings)
    finally:
        await drop_database(url)
