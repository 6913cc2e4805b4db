"""A Redis Cluster with replicas loses a master under writes: its replica takes over within the
node timeout, the cache answers again without a restart, and what the master had replicated
is all there. The test starts a six-node cluster of its own; the shared one is never touched."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator

import pytest

from benchmarks.faults import OwnRedisCluster
from storage.cache import create_cache
from storage.errors import Unavailable
from tests.conftest import missing

pytestmark = [pytest.mark.services, pytest.mark.slow]

TENANT = "0b4a1c8e-5f6d-4e3a-9b2c-1d0e2f3a4b5c"
KEYS = [f"rec:{{{TENANT}}}:recs:user-{n}" for n in range(200)]


@pytest.fixture
def cluster() -> Iterator[OwnRedisCluster]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        missing("redis-server/redis-cli not found", "install Debian's redis-server package")
    own = OwnRedisCluster(node_timeout_ms=1000).start()
    try:
        yield own
    finally:
        own.remove()


async def test_a_masters_death_fails_over_and_loses_nothing_replicated(
    cluster: OwnRedisCluster,
) -> None:
    cache = create_cache(cluster.url)
    try:
        for n, key in enumerate(KEYS):
            await cache.set(key, {"n": n}, ttl=600)
        master = cluster.master_of(KEYS[0])  # every key of the tenant: one slot (hash tag)
        deadline = time.monotonic() + 10
        while not cluster.replicated(master):
            assert time.monotonic() < deadline, "the replica never caught up"
            await asyncio.sleep(0.05)

        cluster.kill(master)
        killed = time.monotonic()
        failed = 0
        while True:  # unavailable until the replica is promoted, then served again
            try:
                value = await cache.get(KEYS[0])
            except Unavailable:
                value = None
            if value is not None:
                break
            failed += 1
            assert time.monotonic() - killed < 15, "no failover within 15 s"
            await asyncio.sleep(0.1)
        recovered_s = time.monotonic() - killed
        assert recovered_s < 10  # node timeout 1 s, plus the election and the client's refresh
        assert cluster.master_of(KEYS[0]) != master
        assert [await cache.get(key) for key in KEYS] == [{"n": n} for n in range(len(KEYS))]
        await cache.set(KEYS[0], {"n": "after"}, ttl=600)  # and writes go to the new master
        assert await cache.get(KEYS[0]) == {"n": "after"}
    finally:
        await cache.close()
