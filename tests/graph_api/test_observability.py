"""Health rules, ``/metrics`` and the WebSocket gauge on the in-process app (no Ray)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from graph_api.auth import Principal
from graph_api.errors import RateLimited
from graph_api.health import (
    DEGRADED,
    OK,
    UNHEALTHY,
    HealthThresholds,
    engines_probe,
    overall,
    rule_findings,
)
from graph_api.observability import WebSocketGauge
from graph_api.ratelimit import RateLimiter, TierLimits
from graph_api.request_metrics import MetricsRecorder
from storage.cache import InProcessCache
from storage.metrics import render_local
from tests.graph_api.conftest import Api, make_settings, running_api


def samples(text: str, name: str) -> list[dict[str, str]]:
    return [
        dict(sample.labels) | {"_value": str(sample.value)}
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def snapshot_of(latencies_ms: list[float], failed: int, hits: int, misses: int) -> Any:
    recorder = MetricsRecorder()
    for n, latency in enumerate(latencies_ms):
        recorder.record_request("query:q", latency, failed=n < failed)
    for n in range(hits + misses):
        recorder.record_cache(hit=n < hits)
    return recorder.snapshot()


LIMITS = HealthThresholds(max_p95_latency_ms=100, min_cache_hit_rate=0.5, max_error_rate=0.2)


def test_rules_fire_on_latency_hit_rate_and_errors() -> None:
    calm = snapshot_of([10.0] * 30, failed=0, hits=25, misses=5)
    assert rule_findings(calm, LIMITS) == {}
    slow = snapshot_of([10.0] * 20 + [500.0] * 10, failed=0, hits=25, misses=5)
    assert rule_findings(slow, LIMITS) == {"p95_latency": DEGRADED}
    cold = snapshot_of([10.0] * 30, failed=0, hits=5, misses=25)
    assert rule_findings(cold, LIMITS) == {"cache_hit_rate": DEGRADED}
    failing = snapshot_of([10.0] * 30, failed=10, hits=25, misses=5)
    assert rule_findings(failing, LIMITS) == {"error_rate": UNHEALTHY}
    # Too few samples: one early error does not condemn a fresh replica.
    assert rule_findings(snapshot_of([10.0] * 3, failed=3, hits=0, misses=0), LIMITS) == {}


def test_overall_status_ranks_database_above_other_dependencies() -> None:
    assert overall({"database": OK, "cache": OK}, {}) == OK
    assert overall({"database": OK, "cache": "unavailable"}, {}) == DEGRADED
    assert overall({"database": "unavailable", "cache": OK}, {}) == UNHEALTHY
    assert overall({"database": OK}, {"p95_latency": DEGRADED}) == DEGRADED


def test_thresholds_come_from_the_environment() -> None:
    env = {"RECSERVE_HEALTH_MAX_ERROR_RATE": "0.5", "RECSERVE_HEALTH_MIN_REQUESTS": "3"}
    limits = HealthThresholds.from_env(env)
    assert (limits.max_error_rate, limits.min_requests) == (0.5, 3)
    assert limits.max_p95_latency_ms == HealthThresholds().max_p95_latency_ms


async def test_engines_are_checked_through_the_recommender() -> None:
    class Partial:
        async def health(self) -> dict[str, str]:
            return {"ease": "ok", "als": "unavailable"}

    probe = engines_probe(Partial())
    assert probe is not None
    with pytest.raises(OSError, match="als"):
        await probe()
    assert engines_probe(object()) is None


async def test_metrics_route_exports_labelled_series(api: Api) -> None:
    token, _ = await api.register("metrics@m.example", "m.example")
    await api.ok("query ListItems { items { id } }", token=token)
    await api.gql("{ nope }")
    text = (await api.client.get("/metrics")).text
    listed = [
        s
        for s in samples(text, "graphql_requests_total")
        if s["operation_name"] == "ListItems" and s["status"] == "ok"
    ]
    assert listed and listed[0]["operation_type"] == "query" and listed[0]["tenant_id"]
    # The client's mistake is "rejected": "error" is kept for the server's faults.
    invalid = [s for s in samples(text, "graphql_requests_total") if s["status"] == "rejected"]
    # No token, no tenant: the label is empty rather than guessed.
    assert any(s["tenant_id"] == "" and s["operation_name"] == "anonymous" for s in invalid)
    assert samples(text, "graphql_request_duration_seconds_count")


async def test_high_error_rate_makes_the_replica_unready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECSERVE_HEALTH_MIN_REQUESTS", "3")
    settings = make_settings(tmp_path)
    async with running_api(f"sqlite+aiosqlite:///{tmp_path}/u.db", settings) as api:
        assert (await api.client.get("/health/ready")).status_code == 200
        token, _ = await api.register("ops@down.example", "down.example")
        api.recommender.fail_with = RuntimeError("engine down")  # the server's fault
        for _ in range(4):
            await api.gql("{ recommendations { totalCount } }", token=token)
        response = await api.client.get("/health/ready")
        assert response.status_code == 503
        assert response.json()["rules"] == {"error_rate": UNHEALTHY}
        assert (await api.client.get("/health/live")).status_code == 200


async def test_client_errors_never_make_the_replica_unready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invalid queries, refusals and 429s are the client's doing: a client flooding them must
    not take the replica out of service (they used to count in the error rate)."""
    monkeypatch.setenv("RECSERVE_HEALTH_MIN_REQUESTS", "3")
    settings = make_settings(tmp_path, rate_limit_ip=5)
    async with running_api(f"sqlite+aiosqlite:///{tmp_path}/c.db", settings) as api:
        await api.register("admin@c.example", "c.example")
        token, _ = await api.register("user@c.example", "c.example")  # not an admin
        for _ in range(3):
            await api.gql("{ nope }", token=token)  # GRAPHQL_VALIDATION_FAILED
            await api.gql("{ users { id } }", token=token)  # FORBIDDEN
            await api.gql("{ items(limit: 0) { id } }", token=token)  # BAD_USER_INPUT
        refused = [await api.post("{ nope }") for _ in range(8)]  # anonymous, then 429
        assert refused[-1].status_code == 429
        response = await api.client.get("/health/ready")
        assert response.status_code == 200, response.json()
        assert "error_rate" not in response.json()["rules"]


async def test_websocket_gauge_counts_open_connections() -> None:
    seen: list[float] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})
        seen.append(gauge_value())
        await send({"type": "websocket.close"})

    async def send(_message: Any) -> None:
        return None

    before = gauge_value()
    await WebSocketGauge(app)({"type": "websocket"}, None, send)
    assert seen == [before + 1]
    assert gauge_value() == before


def gauge_value() -> float:
    found = samples(render_local().decode(), "websocket_connections")
    return float(found[0]["_value"]) if found else 0.0


async def test_rate_limit_rejections_are_counted_per_tenant_and_scope() -> None:
    tenant = uuid.uuid4()
    principal = Principal(tenant_id=tenant, user_id=uuid.uuid4(), role="user", tier="basic")
    limiter = RateLimiter(
        InProcessCache(), tier_limits={"basic": TierLimits(per_user=1, per_tenant=10)}
    )
    await limiter.admit(principal)
    with pytest.raises(RateLimited):
        await limiter.admit(principal)
    found = samples(render_local().decode(), "rate_limit_rejections_total")
    assert [s["_value"] for s in found if s["tenant_id"] == str(tenant)] == ["1.0"]
    assert {s["scope"] for s in found if s["tenant_id"] == str(tenant)} == {"user"}


async def test_operator_endpoints_need_the_ops_token_and_probes_stay_open(tmp_path: Path) -> None:
    token = "ops-token-0123456789abcdef"
    settings = make_settings(tmp_path, ops_token=token)
    async with running_api(f"sqlite+aiosqlite:///{tmp_path}/ops.db", settings) as api:
        for path in ("/health", "/metrics"):
            assert (await api.client.get(path)).status_code == 401
            wrong = {"Authorization": "Bearer nope"}
            assert (await api.client.get(path, headers=wrong)).status_code == 401
            right = {"Authorization": f"Bearer {token}"}
            assert (await api.client.get(path, headers=right)).status_code == 200
        assert (await api.client.get("/health/live")).status_code == 200
        ready = await api.client.get("/health/ready")
        assert ready.status_code == 200 and set(ready.json()) == {"status", "rules"}
    production = make_settings(tmp_path, env="production")
    async with running_api(f"sqlite+aiosqlite:///{tmp_path}/prod.db", production) as api:
        assert (await api.client.get("/metrics")).status_code == 403
        assert (await api.client.get("/health")).status_code == 403
        assert (await api.client.get("/health/ready")).status_code == 200
