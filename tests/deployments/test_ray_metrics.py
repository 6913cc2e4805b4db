"""Real requests through Serve, then Ray's Prometheus endpoint: every series with its labels.

The replicas record through ``deployments.ray_metrics``; Ray's metrics agent exports them on the
node's metrics port as ``ray_<name>`` with the Serve deployment/replica tags added.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from storage.metrics import RAY_PREFIX
from tests.graph_api.test_serve_e2e import deployed_app, seed_flow

pytestmark = [pytest.mark.ray, pytest.mark.slow]

EXPECTED_LABELS = {
    "graphql_requests_total": {"operation_type", "operation_name", "tenant_id", "status"},
    "graphql_request_duration_seconds_count": {"operation_type"},
    "recommendation_requests_total": {"algorithm", "tenant_id", "status"},
    "recommendation_duration_seconds_count": {"algorithm"},
    "cache_misses_total": {"tenant_id"},
    "websocket_connections": set(),
    "model_version_served": {"tenant_id", "algorithm"},
    "training_runs_total": {"algorithm", "status"},
    "training_duration_seconds_count": {"algorithm", "status"},
}
SCRAPE_TIMEOUT_S = 60.0


def scrape_samples(text: str) -> dict[str, list[dict[str, str]]]:
    found: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(RAY_PREFIX):
                found.setdefault(sample.name[len(RAY_PREFIX) :], []).append(dict(sample.labels))
    return found


async def wait_for_series(
    port: int, wanted: set[str], until: Callable[[dict], bool] = lambda found: True
) -> dict[str, list[dict[str, str]]]:
    """Ray's agent exports on an interval: poll until every wanted series is there (and
    ``until`` holds: a sample recorded later, e.g. by a training task still running)."""
    deadline = time.monotonic() + SCRAPE_TIMEOUT_S
    found: dict[str, list[dict[str, str]]] = {}
    async with httpx.AsyncClient(timeout=10) as http:
        while time.monotonic() < deadline:
            response = await http.get(f"http://127.0.0.1:{port}/metrics")
            for name, samples in scrape_samples(response.text).items():
                found.setdefault(name, []).extend(samples)
            if wanted <= set(found) and until(found):
                return found
            await asyncio.sleep(1.0)
    missing = sorted(wanted - set(found))
    raise AssertionError(f"series missing from Ray's endpoint after {SCRAPE_TIMEOUT_S}s: {missing}")


def _failed_run_counted(found: dict) -> bool:
    return any(
        (s.get("algorithm"), s.get("status")) == ("popularity", "failed")
        for s in found.get("training_runs_total", [])
    )


async def open_and_close_websocket(base: str) -> None:
    url = base.rstrip("/").replace("http://", "ws://") + "/graphql"
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as socket:
        await socket.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(await socket.recv())["type"] == "connection_ack"


async def test_ray_endpoint_has_every_series_with_labels(
    serve_instance: int, ray_metrics_port: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data_dir = tmp_path_factory.mktemp("ray-metrics")
    async with deployed_app(serve_instance, "ray-metrics", data_dir) as (client, settings):
        await seed_flow(client, settings)
        token, _ = await client.register("ops@metrics.example", "metrics.example")
        job = await client.ok(
            'mutation { trainModel(algorithms: ["popularity"]) { jobId } }', token=token
        )
        assert job["trainModel"]["jobId"]
        await open_and_close_websocket(str(client.http.base_url))
        found = await wait_for_series(ray_metrics_port, set(EXPECTED_LABELS), _failed_run_counted)
    for name, labels in EXPECTED_LABELS.items():
        assert any(labels <= set(sample) for sample in found[name]), (name, found[name][:2])
    graphql = found["graphql_requests_total"]
    assert any(s["operation_type"] == "mutation" and s["status"] == "ok" for s in graphql)
    recs = found["recommendation_requests_total"]
    assert {s["algorithm"] for s in recs} == {"hybrid"}
    assert all(s["tenant_id"] for s in recs)
    # Serve's own tags tell replicas apart; no label carries a user id.
    assert all("deployment" in s for s in recs)
    assert not any("user_id" in s for samples in found.values() for s in samples)
    assert {s["algorithm"] for s in found["model_version_served"]} >= {"popularity", "item_knn"}
    # The new tenant has no interactions yet: its training run fails, and is counted as such.
    runs = found["training_runs_total"]
    assert {(s["algorithm"], s["status"]) for s in runs} >= {("popularity", "failed")}
