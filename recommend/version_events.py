"""Promotions announced on the cache's pub/sub reach the combiner at once.

Training, ``recserve models promote`` and ``rollback`` publish on ``models:{tenant}``. The
combiner listens on the channel of every tenant it has served and drops that tenant's cached
versions when a message arrives, so the next request resolves the new version instead of waiting
for the version cache to expire. The in-process cache cannot carry messages between processes,
so without a Redis URL nothing is watched and the short version TTL alone applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from storage.cache import Cache, create_cache
from storage.cache.channels import models_channel
from storage.settings import Settings

logger = logging.getLogger("ray.serve")
RETRY_SECONDS = 1.0


class VersionEvents:
    """One listener task per tenant seen, up to ``max_tenants`` (the TTL covers the rest)."""

    def __init__(
        self,
        settings: Settings,
        on_change: Callable[[str], None],
        *,
        max_tenants: int = 256,
    ) -> None:
        self._cache: Cache | None = create_cache(settings) if settings.redis_url else None
        self._on_change = on_change
        self._max_tenants = max_tenants
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.ready: dict[str, asyncio.Event] = {}

    @property
    def enabled(self) -> bool:
        return self._cache is not None

    def watch(self, tenant_id: str) -> None:
        """Start listening for the tenant (idempotent); needs a running event loop."""
        if self._cache is None or tenant_id in self._tasks:
            return
        if len(self._tasks) >= self._max_tenants:
            return
        self.ready[tenant_id] = asyncio.Event()
        self._tasks[tenant_id] = asyncio.get_running_loop().create_task(self._listen(tenant_id))

    async def _listen(self, tenant_id: str) -> None:
        assert self._cache is not None
        while True:
            try:
                subscription = await self._cache.subscribe(models_channel(tenant_id))
                async with subscription:
                    self.ready[tenant_id].set()
                    async for _channel, _message in subscription:
                        self._on_change(tenant_id)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # Redis restarts must not end the listener for good
                logger.warning("version events for %s: %s; retrying", tenant_id, error)
                await asyncio.sleep(RETRY_SECONDS)

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._cache is not None:
            await self._cache.close()
