"""The GraphQL app over each cache backend: in-process, Redis and Redis Cluster.

Keys never clash between concurrent runs: every test registers fresh tenants (random ids in
every key), and each client gets a random client address for the per-IP window.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from graph_api.auth import TokenService
from tests.graph_api.conftest import Api, make_settings, running_api

BACKENDS = ["memory", "redis", "cluster"]


def backend_url(request: pytest.FixtureRequest, backend: str) -> str | None:
    if backend == "memory":
        return None
    if backend == "redis":
        return request.getfixturevalue("redis_url")
    return request.getfixturevalue("redis_cluster_url")


def random_client() -> tuple[str, int]:
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}", 4321


@asynccontextmanager
async def client_from(api: Api, address: tuple[str, int]) -> AsyncIterator[Api]:
    """The same app, reached from another client address."""
    transport = httpx.ASGITransport(app=api.app, client=address)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield replace(api, client=client)


@pytest.fixture(params=BACKENDS)
async def backend_api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    url = backend_url(request, request.param)
    settings = make_settings(tmp_path, redis_url=url, rate_limit_ip=1_000)
    # A client address of its own, so concurrent runs never share an IP window.
    async with (
        running_api(f"sqlite+aiosqlite:///{tmp_path}/api.db", settings) as api,
        client_from(api, random_client()) as own,
    ):
        yield own


def tenant_of(api: Api, token: str) -> uuid.UUID:
    return TokenService(api.settings).verify(token, "access").tenant_id
