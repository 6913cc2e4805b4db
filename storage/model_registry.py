"""The model registry: versioned artifacts with their training metadata, promote and rollback.

Built on ``storage.artifacts.ArtifactStore`` (which makes versions atomic with a COMPLETE
marker). Every promotion or rollback is announced on the cache channel ``models:{tenant}``
(after the tenant's model epoch moves, so results cached for the old versions are never read
again) and serving replicas that listen drop their cached version at once; the others see the
new pointer when their short version cache expires. It lives in ``storage`` so that the CLI
(``recserve models``) and the API (``modelVersions``, ``promoteModel``, ``rollbackModel``) share
it without the API importing training code.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from storage.artifacts import ArtifactStore, create_artifact_store
from storage.cache import Cache, create_cache
from storage.cache.channels import models_channel
from storage.cache.keys import bump_model_epoch
from storage.settings import Settings


def version_label(versions: dict[str, str]) -> str | None:
    """One version when every engine agrees (one training run), else ``engine=version`` pairs."""
    distinct = sorted(set(versions.values()))
    if not distinct:
        return None
    if len(distinct) == 1:
        return distinct[0]
    return ",".join(f"{name}={versions[name]}" for name in sorted(versions))


@dataclass(frozen=True)
class ModelVersion:
    algorithm: str
    version: str
    current: bool
    created_at: str | None
    metrics: dict[str, float]
    duration_seconds: float | None
    counts: dict[str, int]
    # how the memory plan fitted it (training.fit_budget): "fit", "fit: <the sizes it chose>" or
    # "scaled: <what it gave up>"
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
    if not isinstance(limits, dict):
        return "fit"
    action, note = limits.get("action", "fit"), limits.get("note") or ""
    return f"{action}: {note}" if note else str(action)


def trained_algorithms(store: ArtifactStore, tenant_id: str, known: list[str]) -> list[str]:
    """The algorithms among ``known`` that have at least one complete version for the tenant."""
    return [name for name in known if store.list_versions(tenant_id, name)]


async def announce(
    settings: Settings, tenant_id: str, versions: dict[str, str], cache: Cache | None = None
) -> None:
    """Tell every listening replica which versions are current now (on ``cache``, or on a
    cache opened for this message)."""
    own = cache is None
    cache = create_cache(settings) if cache is None else cache
    try:
        # The epoch first: results cached for the old versions are never read again.
        await bump_model_epoch(cache, tenant_id)
        message = {"tenant_id": tenant_id, "versions": versions}
        await cache.publish(models_channel(tenant_id), message)
    finally:
        if own:
            await cache.close()


async def promote(
    settings: Settings,
    tenant_id: str,
    algorithm: str,
    version: str,
    *,
    cache: Cache | None = None,
) -> str:
    """Serve ``version`` from the next request on; NotFound for missing or half-written ones."""
    store = create_artifact_store(settings)
    await asyncio.to_thread(store.promote, tenant_id, algorithm, version)
    await announce(settings, tenant_id, {algorithm: version}, cache)
    return version


async def rollback(
    settings: Settings, tenant_id: str, algorithm: str, *, cache: Cache | None = None
) -> str:
    """Serve the previously promoted version again; returns it."""
    store = create_artifact_store(settings)
    version = await asyncio.to_thread(store.rollback, tenant_id, algorithm)
    await announce(settings, tenant_id, {algorithm: version}, cache)
    return version
