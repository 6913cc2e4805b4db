"""A promotion announced on models:{tenant} drops the combiner's cached versions at once."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from recommend.model_cache import VersionCache
from recommend.version_events import VersionEvents
from storage.cache import create_cache
from storage.cache.channels import models_channel
from storage.settings import Settings


class Pointer:
    """An in-memory model source whose current version the test moves."""

    def __init__(self) -> None:
        self.version = "v000001"

    def current_version(self, tenant_id: str, algorithm: str) -> str | None:
        return self.version

    def load(self, tenant_id: str, algorithm: str, version: str) -> None:
        raise AssertionError("not used")


@pytest.mark.services
async def test_announced_promotion_invalidates_before_the_ttl(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, env="test")
    tenant = f"events-{uuid.uuid4().hex[:8]}"
    pointer = Pointer()
    versions = VersionCache(pointer, ttl_seconds=3600)
    events = VersionEvents(settings, versions.invalidate)
    publisher = create_cache(settings)
    try:
        events.watch(tenant)
        await asyncio.wait_for(events.ready[tenant].wait(), 5)
        assert versions.get(tenant, "als") == "v000001"
        pointer.version = "v000002"
        assert versions.get(tenant, "als") == "v000001"  # cached for an hour
        await publisher.publish(models_channel(tenant), {"versions": {"als": "v000002"}})
        for _ in range(50):
            if versions.get(tenant, "als") == "v000002":
                break
            await asyncio.sleep(0.05)
        assert versions.get(tenant, "als") == "v000002"
        assert versions.get("another-tenant", "als") == "v000002"  # never cached: fresh read
    finally:
        await events.close()
        await publisher.close()


def test_without_redis_nothing_is_watched(tmp_path) -> None:
    events = VersionEvents(Settings(data_dir=tmp_path, env="test"), lambda tenant: None)
    events.watch("acme")  # no running loop needed: the in-process cache cannot cross processes
    assert not events.enabled and events.ready == {}
