"""``recserve status``: the Serve app, the model versions each tenant serves, and ``/health``.

Each part is a plain function over plain data so it is tested without a cluster; the command
glues them to ``ray.serve.status()``, the artifact store and the ingress's ``/health``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from storage import repositories as repo
from storage.artifacts import ArtifactStore
from storage.db import Database
from training.algorithms import ALGORITHMS


@dataclass
class DeploymentRow:
    application: str
    deployment: str
    status: str
    replicas: dict[str, int]
    message: str = ""


@dataclass
class StatusReport:
    applications: dict[str, str] = field(default_factory=dict)
    deployments: list[DeploymentRow] = field(default_factory=list)
    versions: dict[str, dict[str, str]] = field(default_factory=dict)  # tenant -> algo -> version
    health: dict[str, Any] = field(default_factory=dict)


def _value(status: Any) -> str:
    return str(getattr(status, "value", status))


def serve_rows(serve_status: Any) -> tuple[dict[str, str], list[DeploymentRow]]:
    """Applications and their deployments from ``ray.serve.status()``'s ``ServeStatus``."""
    applications: dict[str, str] = {}
    rows: list[DeploymentRow] = []
    for app_name, app in sorted(serve_status.applications.items()):
        applications[app_name] = _value(app.status)
        for name, deployment in sorted(app.deployments.items()):
            replicas = {_value(state): int(n) for state, n in deployment.replica_states.items()}
            rows.append(
                DeploymentRow(
                    app_name, name, _value(deployment.status), replicas, deployment.message
                )
            )
    return applications, rows


async def model_versions(
    database: Database, artifacts: ArtifactStore, limit: int = 100
) -> dict[str, dict[str, str]]:
    """The promoted version of every algorithm, per tenant domain (untrained ones left out)."""
    async with database.session() as session:
        tenants = await repo.list_tenants(session=session, limit=limit)
    found: dict[str, dict[str, str]] = {}
    for tenant in tenants:
        current = {algo: artifacts.current(str(tenant.id), algo) for algo in ALGORITHMS}
        found[tenant.domain] = {algo: v for algo, v in current.items() if v is not None}
    return found


def fetch_health(
    base_url: str, timeout_s: float = 5.0, ops_token: str | None = None
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ops_token}"} if ops_token else {}
    try:
        response = httpx.get(base_url.rstrip("/") + "/health", timeout=timeout_s, headers=headers)
        return dict(response.json())
    except (httpx.HTTPError, ValueError) as error:
        return {"status": "unreachable", "error": str(error)}


def render(report: StatusReport) -> list[str]:
    """The report as text lines (the CLI prints them; tests read them)."""
    lines = ["Serve applications:"]
    for name, status in report.applications.items():
        lines.append(f"  {name}: {status}")
    if not report.applications:
        lines.append("  (none running)")
    for row in report.deployments:
        replicas = ", ".join(f"{state}={n}" for state, n in sorted(row.replicas.items())) or "-"
        note = f"  ({row.message})" if row.message else ""
        lines.append(f"    {row.deployment:<20} {row.status:<10} {replicas}{note}")
    lines.append("Model versions:")
    for tenant, versions in sorted(report.versions.items()):
        shown = " ".join(f"{algo}={v}" for algo, v in sorted(versions.items())) or "(untrained)"
        lines.append(f"  {tenant}: {shown}")
    health = report.health
    lines.append(f"Health: {health.get('status', 'unknown')}")
    for name, state in sorted((health.get("checks") or {}).items()):
        lines.append(f"  {name}: {state}")
    for rule, state in sorted((health.get("rules") or {}).items()):
        lines.append(f"  rule {rule}: {state}")
    return lines
