"""Per-tenant quotas by tier: items, recommendations per hour, training runs per day.

Each runs over every cache backend (the counters live in the cache); the figures are made
small by swapping the app's ``TenantQuotas`` for one with a test clock.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from cluster import operations as ops
from graph_api.quotas import TenantQuotas, TierQuotas
from graph_api.ratelimit import RateLimiter, TierLimits
from tests.graph_api.cache_backends import backend_api
from tests.graph_api.conftest import Api, make_settings

__all__ = ["backend_api"]

IMPORT = """mutation($items: [ItemInput!]!) { importItems(items: $items) { imported } }"""
CREATE = 'mutation { createItem(input: {title: "One more"}) { id } }'
COUNT = "{ items(limit: 100) { externalId } }"
RECOMMEND = "{ recommendations { totalCount } }"
TRAIN = "mutation { trainModel { jobId } }"
STATUS = "{ rateLimitStatus { quotas { name used limit remaining resetsAt } } }"
START = 1_699_999_200.0  # 2023-11-14T22:00:00Z


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def _quotas(api: Api, clock: Clock | None = None, **figures: int) -> None:
    tier = {"max_items": 100, "recommendations_per_hour": 100, "training_runs_per_day": 100}
    quotas = TierQuotas(**(tier | figures))
    api.app.state.services.quotas = TenantQuotas(
        api.cache, {"basic": quotas}, clock=clock or Clock()
    )


async def _admin(api: Api) -> str:
    domain = f"{uuid.uuid4().hex[:8]}.example"
    token, _ = await api.register(f"admin@{domain}", domain)
    return token


def _items(*external_ids: str) -> dict[str, Any]:
    return {"items": [{"externalId": e, "title": f"Item {e}"} for e in external_ids]}


def _error(payload: dict[str, Any]) -> dict[str, Any]:
    return payload["errors"][0]


async def _status(api: Api, token: str) -> dict[str, dict[str, Any]]:
    rows = (await api.ok(STATUS, token=token))["rateLimitStatus"]["quotas"]
    return {row["name"]: row for row in rows}


async def test_imports_and_creations_stop_at_the_item_quota(backend_api: Api) -> None:
    api = backend_api
    token = await _admin(api)
    _quotas(api, max_items=3)
    assert (await api.ok(IMPORT, _items("a", "b"), token))["importItems"]["imported"] == 2
    refused = await api.gql(IMPORT, _items("c", "d"), token)
    error = _error(refused)
    assert error["extensions"]["code"] == "QUOTA_EXCEEDED"
    extensions = error["extensions"]
    assert [extensions[k] for k in ("quota", "limit", "used")] == ["items", 3, 2]
    assert "Nothing was written" in error["message"]
    assert len((await api.ok(COUNT, token=token))["items"]) == 2  # not one of the two
    # Updating existing items takes no room: two updates and one new item fit exactly.
    await api.ok(IMPORT, _items("a", "b", "c"), token)
    assert _error(await api.gql(CREATE, token=token))["extensions"]["code"] == "QUOTA_EXCEEDED"
    assert (await _status(api, token))["items"] == {
        "name": "items",
        "used": 3,
        "limit": 3,
        "remaining": 0,
        "resetsAt": None,
    }
    # A deleted item frees its place.
    first = (await api.ok("{ items(limit: 1) { id } }", token=token))["items"][0]["id"]
    await api.ok("mutation($i: UUID!) { deleteItem(id: $i) }", {"i": first}, token)
    await api.ok(CREATE, token=token)


async def test_recommendations_stop_at_the_hourly_quota_until_the_hour_turns(
    backend_api: Api,
) -> None:
    api = backend_api
    token = await _admin(api)
    clock = Clock()
    _quotas(api, clock, recommendations_per_hour=2)
    await api.ok(RECOMMEND, token=token)
    clock.now += 1800
    await api.ok(RECOMMEND, token=token)
    asked = len(api.recommender.requests)
    response = await api.post(RECOMMEND, token=token)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1800"
    error = _error(response.json())
    assert error["extensions"]["code"] == "QUOTA_EXCEEDED"
    assert error["extensions"]["quota"] == "recommendations"
    assert error["extensions"]["resetAt"].startswith("2023-11-14T23:00:00")
    assert len(api.recommender.requests) == asked  # refused before anything ran
    status = await _status(api, token)
    assert (status["recommendations"]["used"], status["recommendations"]["limit"]) == (2, 2)
    assert status["recommendations"]["resetsAt"].startswith("2023-11-14T23:00:00")
    clock.now += 1800  # the next clock hour
    await api.ok(RECOMMEND, token=token)
    assert (await _status(api, token))["recommendations"]["used"] == 1


async def test_an_operation_asking_more_than_is_left_is_refused_whole(backend_api: Api) -> None:
    api = backend_api
    token = await _admin(api)
    _quotas(api, recommendations_per_hour=2)
    await api.ok(RECOMMEND, token=token)
    two = "{ a: recommendations { totalCount } b: recommendations { totalCount } }"
    response = await api.post(two, token=token)
    assert _error(response.json())["extensions"]["code"] == "QUOTA_EXCEEDED"
    assert (await _status(api, token))["recommendations"]["used"] == 1  # nothing of it counted
    await api.ok(RECOMMEND, token=token)


async def test_a_rate_limited_operation_does_not_spend_the_quota(backend_api: Api) -> None:
    api = backend_api
    token = await _admin(api)  # registering and the first admin token spend nothing here
    _quotas(api, recommendations_per_hour=10)
    tiers = {"basic": TierLimits(per_user=5, per_tenant=1_000)}
    services = api.app.state.services
    services.rate_limiter = RateLimiter(api.cache, window_seconds=60, tier_limits=tiers)
    await api.ok(RECOMMEND, token=token)  # 5 units: the user's whole window
    response = await api.post(RECOMMEND, token=token)
    assert _error(response.json())["extensions"]["code"] == "RATE_LIMITED"
    services.rate_limiter = RateLimiter(api.cache, window_seconds=60)
    assert (await _status(api, token))["recommendations"]["used"] == 1


async def test_training_runs_stop_at_the_daily_quota(backend_api: Api) -> None:
    api = backend_api
    token = await _admin(api)
    clock = Clock()
    _quotas(api, clock, training_runs_per_day=1)
    await api.ok(TRAIN, token=token)
    refused = await api.gql(TRAIN, token=token)
    error = _error(refused)
    assert error["extensions"]["code"] == "QUOTA_EXCEEDED"
    assert error["extensions"]["quota"] == "trainingRuns"
    assert len(api.recommender.trained) == 1
    status = (await _status(api, token))["trainingRuns"]
    assert (status["used"], status["limit"], status["remaining"]) == (1, 1, 0)
    assert status["resetsAt"].startswith("2023-11-15T00:00:00")  # the next UTC midnight
    clock.now += 86_400
    await api.ok(TRAIN, token=token)
    assert len(api.recommender.trained) == 2


async def test_a_training_run_that_fails_to_start_is_not_counted(backend_api: Api) -> None:
    api = backend_api
    token = await _admin(api)
    _quotas(api, training_runs_per_day=1)

    async def broken(**_: Any) -> Any:
        raise RuntimeError("no cluster")

    api.recommender.train = broken  # type: ignore[method-assign]
    assert _error(await api.gql(TRAIN, token=token))["extensions"]["code"] == "INTERNAL"
    assert (await _status(api, token))["trainingRuns"]["used"] == 0


async def test_each_tier_has_its_own_figures(api: Api) -> None:
    """The defaults: generous for every tier, larger for the larger tiers."""
    figures = {}
    for tier in ("basic", "premium", "enterprise"):
        domain = f"{tier}.example"
        await api.create_tenant(domain, tier=tier)
        issued = await ops.issue_token_in(
            api.database, api.settings, domain=domain, email=f"ops@{domain}", admin=True
        )
        status = await _status(api, issued.access_token)
        figures[tier] = [status[name]["limit"] for name in ("items", "recommendations")]
    assert figures["basic"] < figures["premium"] < figures["enterprise"]
    assert figures["basic"][0] >= 10_000


def test_a_tier_missing_a_figure_is_refused_at_startup(tmp_path: Any) -> None:
    with pytest.raises(ValidationError, match="training_runs_per_day"):
        make_settings(
            tmp_path, tenant_quotas={"basic": {"max_items": 5, "recommendations_per_hour": 5}}
        )
