"""One contract for every cache backend: in-process always, Redis and Redis Cluster when running.

Keys live under a prefix unique to this run, so concurrent runs on shared servers never clash.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest
from redis.asyncio import Redis

from storage.cache import (
    Cache,
    InProcessCache,
    RedisCache,
    RedisClusterCache,
    tenant_key,
)
from storage.cache.codec import COMPRESSED_HEADER
from storage.errors import InvalidData, Unavailable

RUN_PREFIX = f"test:cache:{uuid.uuid4().hex[:10]}"
# Our own Redis database, so a FLUSHDB elsewhere cannot wipe us and we wipe no one.
REDIS_DB = 11
COMPRESS_MIN_BYTES = 256
_counter = itertools.count()

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis", marks=pytest.mark.services),
    pytest.param("cluster", id="cluster", marks=pytest.mark.services),
]


def own_db(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{REDIS_DB}"))


def open_cache(request: pytest.FixtureRequest, backend: str) -> Cache:
    if backend == "memory":
        return InProcessCache(compress_min_bytes=COMPRESS_MIN_BYTES)
    if backend == "redis":
        url = own_db(request.getfixturevalue("redis_url"))
        return RedisCache(url, compress_min_bytes=COMPRESS_MIN_BYTES)
    url = request.getfixturevalue("redis_cluster_url")
    return RedisClusterCache(url, compress_min_bytes=COMPRESS_MIN_BYTES)


@pytest.fixture(params=BACKENDS)
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    opened = open_cache(request, request.param)
    yield opened
    await opened.delete_prefix(RUN_PREFIX)
    await opened.delete_prefix(tenant_key(tenant_of(RUN_PREFIX), "")[: -len("}:")])
    await opened.close()


def tenant_of(prefix: str) -> str:
    """A tenant id unique to the test owning ``prefix`` (tenant ids cannot hold the colons)."""
    return prefix.replace(":", "-")


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test (or concurrent run) uses; no hash tag, so keys spread."""
    return f"{RUN_PREFIX}:{next(_counter)}:"


async def test_set_get_round_trips_json_values(cache: Cache, prefix: str) -> None:
    values = {"dict": {"a": [1, 2.5, "x"]}, "list": [1, None], "str": "héllo", "int": 7}
    for name, value in values.items():
        await cache.set(prefix + name, value)
    for name, value in values.items():
        assert await cache.get(prefix + name) == value
    assert await cache.get(prefix + "missing") is None


async def test_values_expire_after_their_ttl(cache: Cache, prefix: str) -> None:
    await cache.set(prefix + "short", "v", ttl=0.3)
    await cache.set(prefix + "long", "v", ttl=30)
    assert await cache.get(prefix + "short") == "v"
    await asyncio.sleep(0.45)
    assert await cache.get(prefix + "short") is None
    assert await cache.get(prefix + "long") == "v"


async def test_ttl_must_be_positive(cache: Cache, prefix: str) -> None:
    with pytest.raises(InvalidData):
        await cache.set(prefix + "k", 1, ttl=0)


async def test_set_many_get_many_returns_only_hits(cache: Cache, prefix: str) -> None:
    items = {f"{prefix}{i}": {"i": i} for i in range(20)}
    await cache.set_many(items, ttl=30)
    found = await cache.get_many([*items, prefix + "absent"])
    assert found == items


async def test_delete_removes_keys_and_counts_existing(cache: Cache, prefix: str) -> None:
    await cache.set_many({prefix + "a": 1, prefix + "b": 2, prefix + "c": 3})
    assert await cache.delete(prefix + "a", prefix + "b", prefix + "never") == 2
    assert await cache.get_many([prefix + "a", prefix + "b", prefix + "c"]) == {prefix + "c": 3}


async def test_delete_prefix_deletes_only_that_prefix(cache: Cache, prefix: str) -> None:
    doomed = {f"{prefix}user:{i}": i for i in range(60)}
    kept = {f"{prefix}users:{i}": i for i in range(5)} | {f"{prefix}user": "exact-less"}
    await cache.set_many(doomed | kept)
    if isinstance(cache, RedisClusterCache):
        owners = {cache._client.get_node_from_key(key).name for key in doomed}
        assert len(owners) > 1, "keys should spread over several cluster nodes"
    assert await cache.delete_prefix(f"{prefix}user:") == len(doomed)
    assert await cache.get_many(doomed) == {}
    assert await cache.get_many(kept) == kept


async def test_delete_prefix_of_a_tenant_and_glob_characters(cache: Cache, prefix: str) -> None:
    tenant = tenant_of(prefix)
    await cache.set_many({tenant_key(tenant, "u", i): i for i in range(10)})
    await cache.set(tenant_key(tenant + "x", "u", 1), "other tenant")
    await cache.set(prefix + "a*b", 1)
    await cache.set(prefix + "aXb", 2)
    assert await cache.delete_prefix(tenant_key(tenant, "")) == 10
    assert await cache.get(tenant_key(tenant + "x", "u", 1)) == "other tenant"
    assert await cache.delete_prefix(prefix + "a*") == 1
    assert await cache.get(prefix + "aXb") == 2


async def test_incr_counts_and_sets_ttl_once(cache: Cache, prefix: str) -> None:
    assert await cache.incr(prefix + "n") == 1
    assert await cache.incr(prefix + "n", 5) == 6
    assert await cache.get(prefix + "n") == 6
    assert await cache.incr(prefix + "t", ttl=0.3) == 1
    await asyncio.sleep(0.15)
    assert await cache.incr(prefix + "t", ttl=0.3) == 2  # must not push the expiry forward
    await asyncio.sleep(0.25)
    assert await cache.get(prefix + "t") is None
    await cache.set(prefix + "s", "text")
    with pytest.raises(InvalidData):
        await cache.incr(prefix + "s")


async def test_sliding_window_enforces_limit_and_retry_after(cache: Cache, prefix: str) -> None:
    key = prefix + "rl"
    results = [await cache.sliding_window(key, limit=3, window_seconds=0.6) for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert [r.remaining for r in results] == [2, 1, 0, 0]
    assert [r.count for r in results[:3]] == [1, 2, 3]
    denied = results[3]
    assert 0.3 < denied.retry_after_seconds <= 0.6
    await asyncio.sleep(denied.retry_after_seconds + 0.05)
    assert (await cache.sliding_window(key, limit=3, window_seconds=0.6)).allowed


async def test_sliding_window_slides_instead_of_resetting(cache: Cache, prefix: str) -> None:
    key = prefix + "slide"
    for _ in range(2):
        assert (await cache.sliding_window(key, 3, 0.8)).allowed
    await asyncio.sleep(0.4)
    assert (await cache.sliding_window(key, 3, 0.8)).allowed
    assert not (await cache.sliding_window(key, 3, 0.8)).allowed
    await asyncio.sleep(0.5)  # the first two left the window, the third is still in it
    late = [await cache.sliding_window(key, 3, 0.8) for _ in range(3)]
    assert [r.allowed for r in late] == [True, True, False]
    assert late[-1].count == 3


async def test_values_and_windows_do_not_mix(cache: Cache, prefix: str) -> None:
    await cache.sliding_window(prefix + "w", 5, 5.0)
    await cache.set(prefix + "v", "value")
    assert await cache.get(prefix + "w") is None
    with pytest.raises(InvalidData):
        await cache.incr(prefix + "w")
    with pytest.raises(InvalidData):
        await cache.sliding_window(prefix + "v", 5, 5.0)


async def test_sliding_window_cost(cache: Cache, prefix: str) -> None:
    key = prefix + "cost"
    assert (await cache.sliding_window(key, 5, 5.0, cost=3)).remaining == 2
    assert not (await cache.sliding_window(key, 5, 5.0, cost=3)).allowed
    assert (await cache.sliding_window(key, 5, 5.0, cost=2)).allowed


async def test_concurrent_sliding_window_allows_exactly_the_limit(
    cache: Cache, prefix: str
) -> None:
    calls = [cache.sliding_window(prefix + "burst", 20, 30.0) for _ in range(50)]
    results = await asyncio.gather(*calls)
    assert sum(r.allowed for r in results) == 20
    assert sorted(r.remaining for r in results if r.allowed) == list(range(20))


async def test_bursts_beyond_the_connection_pool_wait_instead_of_failing(
    cache: Cache, prefix: str
) -> None:
    await cache.set(prefix + "hot", "v")
    hits = await asyncio.gather(*(cache.get(prefix + "hot") for _ in range(400)))
    assert hits == ["v"] * 400


async def test_pipeline_runs_all_operations(cache: Cache, prefix: str) -> None:
    tenant = tenant_of(prefix)
    user, other = tenant_key(tenant, "u1"), tenant_key(tenant, "u2")
    await cache.set(other, "old")
    results = await (
        cache.pipeline()
        .set(user, {"recs": [1, 2]}, ttl=30)
        .incr(tenant_key(tenant, "version"), 2)
        .delete(other, tenant_key(tenant, "never"))
        .set(prefix + "elsewhere", 1)  # another slot on a cluster
        .execute()
    )
    assert results == [True, 2, True, False, True]
    assert await cache.get(user) == {"recs": [1, 2]}
    assert await cache.get(other) is None
    async with cache.pipeline() as pipe:
        pipe.incr(tenant_key(tenant, "version"))
    assert await cache.get(tenant_key(tenant, "version")) == 3


async def test_pubsub_round_trip_and_close(cache: Cache, prefix: str) -> None:
    subscription = await cache.subscribe(prefix + "a", prefix + "b")
    async with subscription:
        assert await cache.publish(prefix + "a", {"n": 1}) >= 1
        await cache.publish(prefix + "b", [2])
        await cache.publish(prefix + "unheard", 3)
        assert await subscription.get(wait_seconds=2) == (prefix + "a", {"n": 1})
        assert await subscription.get(wait_seconds=2) == (prefix + "b", [2])
        assert await subscription.get(wait_seconds=0.2) is None
    assert [item async for item in subscription] == []


async def test_iteration_ends_when_closed_from_another_task(cache: Cache, prefix: str) -> None:
    subscription = await cache.subscribe(prefix + "c")

    async def collect() -> list[tuple[str, object]]:
        return [item async for item in subscription]

    reader = asyncio.create_task(collect())
    await cache.publish(prefix + "c", "one")
    await asyncio.sleep(0.3)
    await subscription.aclose()
    assert await asyncio.wait_for(reader, timeout=3) == [(prefix + "c", "one")]


async def test_large_values_are_compressed_and_round_trip(cache: Cache, prefix: str) -> None:
    value = {"items": [{"id": i, "title": f"item {i % 7}"} for i in range(500)]}
    await cache.set(prefix + "big", value)
    await cache.set(prefix + "small", {"id": 1})
    (stored_big,) = await cache._get_many_raw([prefix + "big"])
    (stored_small,) = await cache._get_many_raw([prefix + "small"])
    assert stored_big is not None and stored_big[:1] == COMPRESSED_HEADER
    assert len(stored_big) < len(orjson.dumps(value)) / 3
    assert stored_small == b'{"id":1}'
    assert await cache.get(prefix + "big") == value


@pytest.mark.services
async def test_cluster_publish_on_one_node_reaches_subscriber_on_another(
    redis_cluster_url: str, prefix: str
) -> None:
    cache = RedisClusterCache(redis_cluster_url)
    subscription = await cache.subscribe(prefix + "events")
    listening = subscription._pubsub.connection  # type: ignore[attr-defined]
    others = [n for n in cache._client.get_primaries() if n.port != listening.port]
    assert others, "the cluster needs more than one primary"
    for node in others:
        publisher = Redis(host=node.host, port=node.port)
        await publisher.publish(prefix + "events", orjson.dumps({"from": node.port}))
        await publisher.aclose()
    received = [await subscription.get(wait_seconds=2) for _ in others]
    assert received == [(prefix + "events", {"from": node.port}) for node in others]
    await subscription.aclose()
    await cache.close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda port: RedisCache(f"redis://127.0.0.1:{port}/0"), id="redis"),
        pytest.param(
            lambda port: RedisClusterCache(f"redis+cluster://127.0.0.1:{port}"), id="cluster"
        ),
    ],
)
async def test_dead_server_raises_unavailable_quickly(make: Callable[[int], Cache]) -> None:
    cache = make(closed_port())
    started = time.perf_counter()
    for operation in (cache.get("k"), cache.set("k", 1), cache.sliding_window("k", 1, 1.0)):
        with pytest.raises(Unavailable):
            await operation
    with pytest.raises(Unavailable):
        await cache.ping()
    assert time.perf_counter() - started < 3.0
    await cache.close()
