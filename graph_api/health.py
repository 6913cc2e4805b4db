"""Health: each dependency probed, plus rules over the live figures ``performanceMetrics`` shows.

Status, worst first:

- ``unhealthy``: the database is unreachable, or the recent error rate is above the limit;
  readiness answers 503 so the load balancer stops sending traffic here.
- ``degraded``: another dependency (cache, vector store, an engine) is unreachable, p95 latency
  is above the limit, or the recommendation cache hit rate is below the floor. Still ready: the
  app answers (uncached, or without that engine), and operators are told.
- ``ok`` otherwise.

Rate rules apply only once the window holds ``min_requests`` samples, so one early error does not
flip a fresh replica to unhealthy.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from graph_api.request_metrics import MetricsSnapshot
from storage import meters
from storage.errors import StorageError

logger = logging.getLogger(__name__)

OK, DEGRADED, UNHEALTHY, UNAVAILABLE = "ok", "degraded", "unhealthy", "unavailable"
PROBE_TIMEOUT_S = 2.0
ESSENTIAL = ("database",)


@dataclass(frozen=True)
class HealthThresholds:
    max_p95_latency_ms: float = 1_000.0
    min_cache_hit_rate: float = 0.2
    max_error_rate: float = 0.1
    min_requests: int = 20

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> HealthThresholds:
        """``RECSERVE_HEALTH_MAX_P95_LATENCY_MS`` etc. override the defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, default in asdict(cls()).items():
            raw = env.get(f"RECSERVE_HEALTH_{name.upper()}")
            if raw is not None:
                values[name] = type(default)(raw)
        return cls(**values)


Probe = Callable[[], Awaitable[Any]]


async def check(name: str, probe: Probe) -> tuple[str, str]:
    try:
        await asyncio.wait_for(probe(), timeout=PROBE_TIMEOUT_S)
    except (StorageError, OSError, TimeoutError, httpx.HTTPError) as error:
        logger.warning("health check %s failed: %r", name, error)
        return name, UNAVAILABLE
    return name, OK


def database_probe(database: Any) -> Probe:
    async def ping() -> None:
        async with database.session(readonly=True) as session:
            await session.execute(text("SELECT 1"))

    return ping


def vector_store_probe(qdrant_url: str | None, qdrant_path: Path) -> Probe:
    """A Qdrant server answers ``/readyz``; the embedded store needs its directory writable."""

    async def ping() -> None:
        if qdrant_url:
            async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S) as client:
                (await client.get(qdrant_url.rstrip("/") + "/readyz")).raise_for_status()
            return
        if not await asyncio.to_thread(_writable, qdrant_path):
            raise OSError(f"vector store directory {qdrant_path} is not writable")

    return ping


def _writable(path: Path) -> bool:
    # The embedded store creates its directory on first use: its parent must then be writable.
    folder = path if path.exists() else path.parent
    return folder.exists() and os.access(folder, os.W_OK)


def engines_probe(recommender: Any) -> Probe | None:
    """Engines are checked through the recommender when it can say (``health()``)."""
    health = getattr(recommender, "health", None)
    if health is None:
        return None

    async def ping() -> None:
        states = await health()
        down = sorted(name for name, state in states.items() if state != OK)
        if down:
            raise OSError(f"engines not answering: {', '.join(down)}")

    return ping


def rule_findings(snapshot: MetricsSnapshot, limits: HealthThresholds) -> dict[str, str]:
    """Which rate rules fire now: {rule: status}."""
    findings: dict[str, str] = {}
    if snapshot.window_requests >= limits.min_requests:
        if snapshot.error_rate > limits.max_error_rate:
            findings["error_rate"] = UNHEALTHY
        if snapshot.p95_latency_ms > limits.max_p95_latency_ms:
            findings["p95_latency"] = DEGRADED
    lookups = snapshot.cache_hits + snapshot.cache_misses
    if lookups >= limits.min_requests and snapshot.cache_hit_rate < limits.min_cache_hit_rate:
        findings["cache_hit_rate"] = DEGRADED
    return findings


def overall(checks: dict[str, str], findings: dict[str, str]) -> str:
    if any(checks.get(name) == UNAVAILABLE for name in ESSENTIAL) or UNHEALTHY in findings.values():
        return UNHEALTHY
    if UNAVAILABLE in checks.values() or findings:
        return DEGRADED
    return OK


async def health_report(
    probes: dict[str, Probe], snapshot: MetricsSnapshot, limits: HealthThresholds
) -> dict[str, Any]:
    checks = dict(await asyncio.gather(*(check(name, p) for name, p in probes.items())))
    for name, state in checks.items():
        meters.dependency_up(name, state != UNAVAILABLE)
    findings = rule_findings(snapshot, limits)
    return {
        "status": overall(checks, findings),
        "checks": checks,
        "rules": findings,
        "metrics": {
            "window_requests": snapshot.window_requests,
            "error_rate": round(snapshot.error_rate, 4),
            "p95_latency_ms": round(snapshot.p95_latency_ms, 2),
            "cache_hit_rate": round(snapshot.cache_hit_rate, 4),
        },
    }
