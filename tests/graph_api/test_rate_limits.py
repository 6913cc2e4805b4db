"""Rate limits by operation cost, per user, tenant and client IP; complexity limits; processes."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from graph_api.auth import Principal, TokenService
from graph_api.ratelimit import RateLimiter, TierLimits
from tests.graph_api.cache_backends import backend_api, client_from, random_client
from tests.graph_api.conftest import Api, make_settings, running_api

__all__ = ["backend_api"]

RECOMMEND_AND_STATUS = "{ recommendations { totalCount } rateLimitStatus { remaining used } }"
SIMILAR_AND_STATUS = """query($i: UUID!) {
  similarItems(itemId: $i) { score } rateLimitStatus { remaining }
}"""
LOGIN = """mutation($e: String!) {
  login(input: {email: $e, password: "wrong password", tenantDomain: "nowhere.example"}) {
    accessToken
  }
}"""
ABUSIVE = """{ items(limit: 100) { similarItems(topK: 100) {
  item { similarItems(topK: 100) { score } } } } }"""


def _limit(api: Api, per_user: int, per_tenant: int = 1_000, ip: int = 1_000) -> None:
    tiers = {"basic": TierLimits(per_user=per_user, per_tenant=per_tenant)}
    api.app.state.services.rate_limiter = RateLimiter(
        api.cache, window_seconds=60, tier_limits=tiers, ip_limit=ip
    )


def _error(response: httpx.Response) -> dict[str, Any]:
    return response.json()["errors"][0]


async def _admin_with_item(api: Api) -> tuple[str, str]:
    domain = f"{uuid.uuid4().hex[:8]}.example"
    token, _ = await api.register(f"admin@{domain}", domain)
    create = 'mutation { createItem(input: {title: "Lamp"}) { id } }'
    item = (await api.ok(create, token=token))["createItem"]["id"]
    return token, item


async def test_operations_are_charged_by_cost_and_refused_with_429(backend_api: Api) -> None:
    api = backend_api
    token, item = await _admin_with_item(api)
    _limit(api, per_user=13)  # createItem already spent 1
    first = await api.ok(RECOMMEND_AND_STATUS, token=token)  # 5 + 1
    assert first["rateLimitStatus"] == {"remaining": 6, "used": 7}
    second = await api.ok(SIMILAR_AND_STATUS, {"i": item}, token)  # 3 + 1
    assert second["rateLimitStatus"]["remaining"] == 2
    asked = len(api.recommender.requests)

    refused = await api.post("{ recommendations { totalCount } }", token=token)  # 5 > 2
    assert refused.status_code == 429
    error = _error(refused)
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert error["extensions"]["scope"] == "user"
    assert 1 <= error["extensions"]["retryAfter"] <= 60
    assert refused.headers["retry-after"] == str(error["extensions"]["retryAfter"])
    assert len(api.recommender.requests) == asked  # refused before execution

    # A refusal spends nothing: a 1-unit request still fits in the 2 left.
    status = await api.ok("{ rateLimitStatus { remaining used } }", token=token)
    assert status["rateLimitStatus"] == {"remaining": 1, "used": 12}


async def test_train_model_costs_ten(api: Api) -> None:
    token, _ = await _admin_with_item(api)
    _limit(api, per_user=20)
    await api.ok("mutation { trainModel { jobId } }", token=token)
    status = await api.ok("{ rateLimitStatus { used } }", token=token)
    assert status["rateLimitStatus"]["used"] == 1 + 10 + 1  # createItem, trainModel, this


async def test_the_tenant_budget_is_shared_by_its_users(backend_api: Api) -> None:
    api = backend_api
    domain = f"{uuid.uuid4().hex[:8]}.example"
    first, _ = await api.register(f"a@{domain}", domain)
    second, _ = await api.register(f"b@{domain}", domain)
    _limit(api, per_user=100, per_tenant=7)
    await api.ok("{ recommendations { totalCount } }", token=first)
    refused = await api.post("{ recommendations { totalCount } }", token=second)
    assert refused.status_code == 429
    assert _error(refused)["extensions"]["scope"] == "tenant"


async def test_unauthenticated_attempts_are_limited_per_ip(backend_api: Api) -> None:
    api = backend_api
    _limit(api, per_user=100, ip=3)
    for n in range(3):
        reply = await api.gql(LOGIN, {"e": f"guess{n}@nowhere.example"})
        assert reply["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    refused = await api.post(LOGIN, {"e": "guess4@nowhere.example"})
    assert refused.status_code == 429
    assert _error(refused)["extensions"]["scope"] == "ip"
    async with client_from(api, random_client()) as elsewhere:
        other = await elsewhere.gql(LOGIN, {"e": "guess5@nowhere.example"})
        assert other["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_abusive_queries_are_rejected_before_execution(api: Api) -> None:
    token, _ = await _admin_with_item(api)
    payload = await api.gql(ABUSIVE, token=token)
    error = payload["errors"][0]
    assert payload["data"] is None
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert error["extensions"]["complexity"] > error["extensions"]["maxComplexity"]
    status = await api.ok("{ rateLimitStatus { used } }", token=token)
    # createItem, the rejected query (the base price: refusals are not free) and this
    assert status["rateLimitStatus"]["used"] == 3
    # Within the complexity limit and the budget: 1 + 50 x 3 units (one engine call per item).
    modest = "{ items(limit: 50) { similarItems(topK: 10) { score item { id title } } } }"
    await api.ok(modest, token=token)


PROCESSES = 2
REQUESTS_PER_PROCESS = 15
LIMIT = 20


def spend_over_http(url: str, directory: str, tenant: str, user: str, start_at: float) -> int:
    """Runs in a child process: its own app replica; how many of its requests got a 200."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    return asyncio.run(_spend(url, Path(directory), uuid.UUID(tenant), uuid.UUID(user), start_at))


async def _spend(
    url: str, directory: Path, tenant: uuid.UUID, user: uuid.UUID, start_at: float
) -> int:
    tiers = {"basic": {"per_user": LIMIT, "per_tenant": 10_000}}
    settings = make_settings(directory, redis_url=url, rate_limit_tiers=tiers)
    token = TokenService(settings).issue(Principal(tenant, user, "user"), "access")
    async with running_api(f"sqlite+aiosqlite:///{directory}/api.db", settings) as api:
        await api.cache.ping()
        await asyncio.sleep(max(0.0, start_at - time.time()))
        replies = await asyncio.gather(
            *(
                api.post("{ rateLimitStatus { remaining } }", token=token)
                for _ in range(REQUESTS_PER_PROCESS)
            )
        )
    return sum(reply.status_code == 200 for reply in replies)


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    # Spawned children (forking a process with a running loop is unsafe), shared by both backends.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=PROCESSES, mp_context=context) as executor:
        yield executor


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["redis", "cluster"])
async def test_replicas_in_several_processes_never_overspend(
    request: pytest.FixtureRequest, pool: ProcessPoolExecutor, tmp_path: Path, backend: str
) -> None:
    """Two app replicas in two processes, one user: exactly LIMIT requests get through."""
    fixture = "redis_url" if backend == "redis" else "redis_cluster_url"
    url = request.getfixturevalue(fixture)
    tenant, user = str(uuid.uuid4()), str(uuid.uuid4())
    start_at = time.time() + 6.0  # a common start line, so the replicas race
    futures = [
        pool.submit(spend_over_http, url, str(tmp_path / f"p{n}"), tenant, user, start_at)
        for n in range(PROCESSES)
    ]
    admitted = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
    assert sum(admitted) == LIMIT, admitted
