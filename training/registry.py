"""The model registry: versioned artifacts with their training metadata, promote and rollback.

Built on ``storage.artifacts.ArtifactStore`` (which makes versions atomic with a COMPLETE
marker). Every promotion or rollback is announced on the cache channel ``models:{tenant}`` so
serving replicas that listen drop their cached version at once; the others see the new pointer
when their short version cache expires.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from storage.artifacts import ArtifactStore, create_artifact_store
from storage.cache import create_cache
from storage.cache.keys import bump_model_epoch
from storage.settings import Settings

PACKAGE = "recserve"
_REPO_ROOT = Path(__file__).resolve().parent.parent


def models_channel(tenant_id: str) -> str:
    return f"models:{tenant_id}"


@lru_cache(maxsize=1)
def code_version() -> dict[str, str | None]:
    """The installed package version and, inside a git checkout, the commit it runs from."""
    try:
        package = importlib_metadata.version(PACKAGE)
    except importlib_metadata.PackageNotFoundError:
        package = None
    try:
        found = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=_REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        commit = (found.stdout.strip() or None) if found.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):  # no git binary, or not a checkout
        commit = None
    return {"package": package, "git_commit": commit}


@dataclass(frozen=True)
class ModelVersion:
    algorithm: str
    version: str
    current: bool
    created_at: str | None
    metrics: dict[str, float]
    duration_seconds: float | None
    counts: dict[str, int]
    # how the memory plan fitted it (training.limits): "fit", or "scaled: <what it gave up>"
    fit: str = "fit"


def list_models(store: ArtifactStore, tenant_id: str, algorithms: list[str]) -> list[ModelVersion]:
    """Every complete version of each algorithm, oldest first, with its stored metadata."""
    rows: list[ModelVersion] = []
    for algorithm in algorithms:
        current = store.current(tenant_id, algorithm)
        for version in store.list_versions(tenant_id, algorithm):
            meta = store.metadata(tenant_id, algorithm, version)
            rows.append(_row(algorithm, version, version == current, meta))
    return rows


def _row(algorithm: str, version: str, current: bool, meta: dict[str, Any]) -> ModelVersion:
    return ModelVersion(
        algorithm=algorithm,
        version=version,
        current=current,
        created_at=meta.get("created_at"),
        # a tuned blend has no holdout metrics of its own: its weights say what it is
        metrics=dict(meta.get("metrics") or meta.get("weights") or {}),
        duration_seconds=meta.get("duration_seconds"),
        counts=dict(meta.get("counts") or {}),
        fit=_fit_text(meta.get("limits")),
    )


def _fit_text(limits: Any) -> str:
    if not isinstance(limits, dict) or limits.get("action", "fit") == "fit":
        return "fit"
    return f"{limits.get('action')}: {limits.get('note', '')}".strip()


def trained_algorithms(store: ArtifactStore, tenant_id: str, known: list[str]) -> list[str]:
    """The algorithms among ``known`` that have at least one complete version for the tenant."""
    return [name for name in known if store.list_versions(tenant_id, name)]


async def announce(settings: Settings, tenant_id: str, versions: dict[str, str]) -> None:
    """Tell every listening replica which versions are current now."""
    cache = create_cache(settings)
    try:
        # The epoch first: results cached for the old versions are never read again.
        await bump_model_epoch(cache, tenant_id)
        message = {"tenant_id": tenant_id, "versions": versions}
        await cache.publish(models_channel(tenant_id), message)
    finally:
        await cache.close()


async def promote(settings: Settings, tenant_id: str, algorithm: str, version: str) -> str:
    """Serve ``version`` from the next request on; NotFound for missing or half-written ones."""
    store = create_artifact_store(settings)
    store.promote(tenant_id, algorithm, version)
    await announce(settings, tenant_id, {algorithm: version})
    return version


async def rollback(settings: Settings, tenant_id: str, algorithm: str) -> str:
    """Serve the previously promoted version again; returns it."""
    store = create_artifact_store(settings)
    version = store.rollback(tenant_id, algorithm)
    await announce(settings, tenant_id, {algorithm: version})
    return version
