"""The operator's routes on the app: ``/health`` (+ ``/live``, ``/ready``) and ``/metrics``.

``/metrics`` serves this process's series from the local ``prometheus_client`` registry (the
in-process app, or one replica); on a Ray cluster scrape Ray's metrics endpoint instead, which
has every replica's series. WebSocket connections are counted by an ASGI middleware, so the
gauge sees every protocol and every disconnect path.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Receive, Scope, Send

from graph_api.context import Services
from graph_api.health import (
    UNHEALTHY,
    HealthThresholds,
    database_probe,
    engines_probe,
    health_report,
    vector_store_probe,
)
from storage import meters
from storage.metrics import render_local


class WebSocketGauge:
    """Counts open WebSocket connections in ``websocket_connections``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        accepted = False

        async def counting_send(message: dict[str, Any]) -> None:
            nonlocal accepted
            if message["type"] == "websocket.accept" and not accepted:
                accepted = True
                meters.websocket_opened(+1)
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            if accepted:
                meters.websocket_opened(-1)


def probes(services: Services) -> dict[str, Any]:
    settings = services.settings
    found = {
        "database": database_probe(services.database),
        "cache": services.cache.ping,
        "vector_store": vector_store_probe(settings.qdrant_url, settings.qdrant_path),
    }
    engines = engines_probe(services.recommender)
    if engines is not None:
        found["engines"] = engines
    return found


def mount_observability(
    app: FastAPI, services: Services, thresholds: HealthThresholds | None = None
) -> None:
    limits = thresholds or HealthThresholds.from_env()
    app.add_middleware(WebSocketGauge)

    async def report() -> dict[str, Any]:
        return await health_report(probes(services), services.metrics.snapshot(), limits)

    def refused(request: Request) -> JSONResponse | None:
        """None when the caller may read operator endpoints, else the refusal to send."""
        token = services.settings.ops_token
        if token is None:
            if services.settings.env != "production":
                return None
            message = "Set RECSERVE_OPS_TOKEN to read this endpoint in production."
            return JSONResponse({"error": message}, status_code=403)
        expected = f"Bearer {token.get_secret_value()}".encode()
        given = request.headers.get("authorization", "").encode()
        if hmac.compare_digest(given, expected):
            return None
        headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse({"error": "Operator token required."}, 401, headers=headers)

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        """Liveness: the process answers; no dependency is consulted."""
        return {"status": "alive"}

    @app.get("/health", response_model=None)
    async def health(request: Request) -> dict[str, Any] | JSONResponse:
        """The full report: status, each dependency, the rules that fired, the live figures."""
        return refused(request) or await report()

    @app.get("/health/ready")
    async def ready() -> JSONResponse:
        """Readiness, open for probes: 503 only when unhealthy (a degraded replica still
        serves). The status and the rules that fired, never the figures behind them."""
        body = await report()
        public = {"status": body["status"], "rules": body.get("rules", {})}
        return JSONResponse(public, status_code=503 if body["status"] == UNHEALTHY else 200)

    @app.get("/metrics", response_model=None)
    async def metrics(request: Request) -> Response:
        return refused(request) or Response(render_local(), media_type=CONTENT_TYPE_LATEST)
