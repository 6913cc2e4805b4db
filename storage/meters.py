"""Typed recording calls over ``storage.metrics``: what each layer says happened.

Callers never build label dicts or name series; a new label is added here and in ``SPECS``.
"""

from __future__ import annotations

import re
import threading

from storage.metrics import SPECS, backend

_websockets = 0
_websocket_lock = threading.Lock()
_VERSION_NUMBER = re.compile(r"(\d+)$")
# Anything outside this shape is folded into "other" so a client cannot grow the label space.
_OPERATION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _label(value: object) -> str:
    return "" if value is None else str(value)


def operation_label(name: str | None) -> str:
    if not name:
        return "anonymous"
    return name if _OPERATION_NAME.match(name) else "other"


def graphql_request(
    operation_type: str, operation_name: str | None, tenant_id: object, status: str, seconds: float
) -> None:
    labels = {
        "operation_type": operation_type,
        "operation_name": operation_label(operation_name),
        "tenant_id": _label(tenant_id),
        "status": status,
    }
    backend().inc(SPECS["graphql_requests"], labels, 1.0)
    backend().observe(
        SPECS["graphql_request_duration_seconds"], {"operation_type": operation_type}, seconds
    )


def recommendation(algorithm: str, tenant_id: object, status: str, seconds: float) -> None:
    labels = {"algorithm": algorithm, "tenant_id": _label(tenant_id), "status": status}
    backend().inc(SPECS["recommendation_requests"], labels, 1.0)
    backend().observe(SPECS["recommendation_duration_seconds"], {"algorithm": algorithm}, seconds)


def cache_lookup(tenant_id: object, hit: bool) -> None:
    spec = SPECS["cache_hits" if hit else "cache_misses"]
    backend().inc(spec, {"tenant_id": _label(tenant_id)}, 1.0)


def rate_limited(tenant_id: object, scope: str) -> None:
    labels = {"tenant_id": _label(tenant_id), "scope": scope}
    backend().inc(SPECS["rate_limit_rejections"], labels, 1.0)


def websocket_opened(delta: int = 1) -> int:
    """Moves this process's open-connection count (``-1`` on close); returns the new count."""
    global _websockets
    with _websocket_lock:
        _websockets = max(0, _websockets + delta)
        current = _websockets
    backend().set(SPECS["websocket_connections"], {}, float(current))
    return current


def engine_failure(engine: str, reason: str) -> None:
    backend().inc(SPECS["engine_failures"], {"engine": engine, "reason": reason}, 1.0)


def training_run(algorithm: str, status: str, seconds: float) -> None:
    labels = {"algorithm": algorithm, "status": status}
    backend().inc(SPECS["training_runs"], labels, 1.0)
    backend().observe(SPECS["training_duration_seconds"], labels, seconds)


def model_bytes(tenant_id: object, algorithm: str, size: int) -> None:
    """What the models of one tenant and algorithm take in this replica (0: none loaded)."""
    labels = {"tenant_id": _label(tenant_id), "algorithm": algorithm}
    backend().set(SPECS["model_bytes"], labels, float(size))


def dependency_up(dependency: str, up: bool) -> None:
    """What the last health check of this replica found of ``dependency``."""
    backend().set(SPECS["dependency_up"], {"dependency": dependency}, 1.0 if up else 0.0)


def model_version_served(tenant_id: object, algorithm: str, version: str) -> None:
    """The gauge's value is the version's number (``v0007`` -> 7): a rollback shows as a drop."""
    match = _VERSION_NUMBER.search(version)
    number = float(match.group(1)) if match else 0.0
    labels = {"tenant_id": _label(tenant_id), "algorithm": algorithm}
    backend().set(SPECS["model_version_served"], labels, number)


def impressions(tenant_id: object, variant: str | None, count: int = 1) -> None:
    labels = {"tenant_id": _label(tenant_id), "variant": _label(variant)}
    backend().inc(SPECS["recommendation_impressions"], labels, float(count))


def attributed(tenant_id: object, variant: str | None, *, click: bool, conversion: bool) -> None:
    labels = {"tenant_id": _label(tenant_id), "variant": _label(variant)}
    if click:
        backend().inc(SPECS["recommendation_clicks"], labels, 1.0)
    if conversion:
        backend().inc(SPECS["recommendation_conversions"], labels, 1.0)


def feedback_dropped(kind: str, count: int = 1) -> None:
    backend().inc(SPECS["feedback_dropped"], {"kind": kind}, float(count))
