"""The GraphQL app in-process: httpx over ASGI, a fresh SQLite file per test, a fake Recommender."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from cluster import operations as ops
from graph_api.app import create_app
from graph_api.auth import Principal, TokenService
from storage.cache import Cache, create_cache
from storage.db import Database
from storage.settings import Settings
from tests.graph_api.fakes import CatalogueService

PASSWORD = "correct horse battery"


@dataclass
class Api:
    client: httpx.AsyncClient
    app: FastAPI
    database: Database
    cache: Cache
    recommender: CatalogueService
    settings: Settings
    # Domains whose tenant this harness created (as an operator would).
    tenants: set[str] = field(default_factory=set)

    async def post(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = {"query": query, "variables": variables or {}}
        return await self.client.post("/graphql", json=body, headers=headers)

    async def gql(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        response = await self.post(query, variables, token)
        assert response.status_code == 200, response.text
        return response.json()

    async def ok(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        payload = await self.gql(query, variables, token)
        assert "errors" not in payload, payload
        return payload["data"]

    async def create_tenant(
        self, domain: str, registration: str = "open", tier: str = "basic"
    ) -> uuid.UUID:
        """The tenant of ``domain``, made the operator's way (``recserve tenant create``)."""
        tenant, _ = await ops.ensure_tenant(
            self.database, domain=domain, registration=registration, tier=tier
        )
        self.tenants.add(domain)
        return tenant.id

    async def register(self, email: str, domain: str) -> tuple[str, str]:
        """(access token, user id) of a user who signs up with ``register``.

        Registering never creates a tenant: a domain this harness has not seen is first created
        by the operator with open registration, and its first user is then made its admin the
        operator's way (``recserve token --admin``), whose token is returned.
        """
        created = False
        if domain not in self.tenants:
            _, created = await ops.ensure_tenant(self.database, domain=domain, registration="open")
            self.tenants.add(domain)
        data = await self.ok(REGISTER, {"input": registration_input(email, domain)})
        token, user_id = data["register"]["accessToken"], data["register"]["user"]["id"]
        if created:
            issued = await ops.issue_token_in(
                self.database, self.settings, domain=domain, email=email, admin=True
            )
            token = issued.access_token
        return token, user_id

    def token_for(self, tenant_id: uuid.UUID, user_id: uuid.UUID, role: str = "user") -> str:
        return TokenService(self.settings).issue(Principal(tenant_id, user_id, role), "access")


REGISTER = """
mutation($input: RegisterInput!) {
  register(input: $input) { accessToken refreshToken user { id email role } }
}"""


def registration_input(email: str, domain: str, **extra: Any) -> dict[str, Any]:
    return {
        "email": email,
        "username": email.split("@")[0],
        "password": PASSWORD,
        "tenantDomain": domain,
        **extra,
    }


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "test",
        "data_dir": data_dir,
        "jwt_secret": SecretStr("graph-api-test-secret-0123456789abcdef"),
    }
    return Settings(**(values | overrides))


@asynccontextmanager
async def running_api(database_url: str, settings: Settings) -> AsyncIterator[Api]:
    database = Database(database_url)
    cache = create_cache(settings)
    recommender = CatalogueService(database)
    app = create_app(recommender=recommender, settings=settings, database=database, cache=cache)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield Api(client, app, database, cache, recommender, settings)
    finally:
        await cache.close()
        await database.dispose()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def api(tmp_path: Path, settings: Settings) -> AsyncIterator[Api]:
    async with running_api(f"sqlite+aiosqlite:///{tmp_path}/api.db", settings) as running:
        yield running
