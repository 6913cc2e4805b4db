"""The GraphQL app in-process: httpx over ASGI, a fresh SQLite file per test, a fake Recommender."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from graph_api.app import create_app
from graph_api.auth import Principal, TokenService
from storage.cache import Cache, create_cache
from storage.db import Database
from storage.settings import Settings
from tests.graph_api.fakes import CatalogueRecommender

PASSWORD = "correct horse battery"


@dataclass
class Api:
    client: httpx.AsyncClient
    app: FastAPI
    database: Database
    cache: Cache
    recommender: CatalogueRecommender
    settings: Settings

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

    async def register(self, email: str, domain: str) -> tuple[str, str]:
        """(access token, user id) of a new user; the first of a domain is its admin."""
        data = await self.ok(
            REGISTER,
            {
                "input": {
                    "email": email,
                    "username": email.split("@")[0],
                    "password": PASSWORD,
                    "tenantDomain": domain,
                }
            },
        )
        payload = data["register"]
        return payload["accessToken"], payload["user"]["id"]

    def token_for(self, tenant_id: uuid.UUID, user_id: uuid.UUID, role: str = "user") -> str:
        return TokenService(self.settings).issue(Principal(tenant_id, user_id, role), "access")


REGISTER = """
mutation($input: RegisterInput!) {
  register(input: $input) { accessToken refreshToken user { id email role } }
}"""


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
    recommender = CatalogueRecommender(database)
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
