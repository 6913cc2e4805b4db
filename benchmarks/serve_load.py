"""The serving benchmark's two halves: a trained tenant to serve, and the load that measures it."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import select

from cluster import operations as ops
from graph_api.auth import Principal, TokenService
from storage.models import User
from storage.settings import Settings
from training.datasets import generate_catalogue
from training.ingest import ingest_dataset
from training.pipeline import train_tenant_async

DOMAIN = "bench-serve.example"
USERS, ITEMS, CLUSTERS, PER_USER = 500, 400, 8, 25
WARMUP_REQUESTS = 24
PHASE_TIMEOUT_S = 180.0
QUERY = """
query($k: Int!) {
  recommendations(options: {numRecommendations: $k}) {
    responseTimeMs items { score item { id title } }
  }
}"""


async def prepare_tenant(data_dir: Path, engines: list[str]) -> list[str]:
    """Ingest and train the tenant under ``data_dir``; one access token per warm user."""
    settings = Settings(data_dir=data_dir)
    catalogue = generate_catalogue(USERS, ITEMS, CLUSTERS, PER_USER, seed=42)
    database = await ops.open_database(settings)
    try:
        # Enterprise: the rate limit must not be what the benchmark measures.
        tenant, _ = await ops.ensure_tenant(database, domain=DOMAIN, tier="enterprise")
        await ingest_dataset(
            database, tenant.id, items=catalogue.items, interactions=catalogue.interactions
        )
        async with database.session() as session:
            rows = await session.execute(select(User.id).where(User.tenant_id == tenant.id))
            user_ids = sorted(rows.scalars())
    finally:
        await database.dispose()
    await train_tenant_async(settings, str(tenant.id), engines, evaluate=False)
    tokens = TokenService(settings)
    return [
        tokens.issue(Principal(tenant.id, user_id, "user", "enterprise"), "access")
        for user_id in user_ids
    ]


async def wait_ready(
    client: httpx.AsyncClient, timeout_s: float, process: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode}")
        try:
            if (await client.get("/health/ready")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.5)
    raise TimeoutError(f"server not ready in {timeout_s:.0f}s")


class Load:
    """Hands out distinct (user, k) requests: the response cache key never repeats in a run."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.issued = 0

    def next(self) -> tuple[str, int]:
        index = self.issued
        self.issued += 1
        return self.tokens[index % len(self.tokens)], 5 + (index // len(self.tokens)) % 40


async def _one(client: httpx.AsyncClient, token: str, k: int) -> tuple[float, bool]:
    started = time.perf_counter()
    try:
        response = await client.post(
            "/graphql",
            json={"query": QUERY, "variables": {"k": k}},
            headers={"Authorization": f"Bearer {token}"},
        )
        body = response.json()
        ok = response.status_code == 200 and not body.get("errors")
        ok = ok and bool(body["data"]["recommendations"]["items"])
    except (httpx.HTTPError, ValueError):
        ok = False
    return (time.perf_counter() - started) * 1000.0, ok


async def run_phase(client: httpx.AsyncClient, load: Load, clients: int, requests: int) -> dict:
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    budget = {"left": requests}

    async def worker() -> None:
        nonlocal errors
        while budget["left"] > 0 and time.monotonic() < deadline:
            budget["left"] -= 1
            elapsed, ok = await _one(client, *load.next())
            latencies.append(elapsed)
            errors += not ok

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - started
    values = np.asarray(latencies)
    return {
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "rps": len(latencies) / wall,
    }


async def measure(
    base_url: str,
    tokens: list[str],
    clients: list[int],
    requests: int,
    ready_timeout_s: float,
    process: subprocess.Popen[bytes],
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=max(clients) + 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        await wait_ready(client, ready_timeout_s, process)
        load = Load(tokens)
        # First requests load every model into the replicas (or the process): not measured.
        await run_phase(client, load, 4, WARMUP_REQUESTS)
        return {str(c): await run_phase(client, load, c, requests) for c in clients}
