"""Recommendation results are cached, invalidated and computed once, on every cache backend."""

from __future__ import annotations

import asyncio
import itertools
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from graph_api.result_cache import ResultCache
from storage.cache import create_cache
from storage.cache.keys import bump_model_epoch, model_epoch
from storage.errors import Unavailable
from tests.graph_api.cache_backends import BACKENDS, backend_api, backend_url, tenant_of
from tests.graph_api.conftest import Api, make_settings, running_api

__all__ = ["backend_api"]

CREATE_ITEM = "mutation($input: ItemInput!) { createItem(input: $input) { id } }"
UPDATE_ITEM = 'mutation($id: UUID!) { updateItem(id: $id, input: {title: "New"}) { id } }'
RECORD = (
    'mutation($i: UUID!) { recordInteraction(input: {itemId: $i, interactionType: "view"}) { id } }'
)
RECOMMEND = """query($o: RecommendationOptions) {
  recommendations(options: $o) { totalCount explanation { cached } items { item { id title } } }
}"""
OPTIONS = {"o": {"numRecommendations": 3, "algorithm": "hybrid"}}


async def _seed(api: Api, domain: str, items: int = 4) -> tuple[str, list[str]]:
    token, _ = await api.register(f"admin@{domain}", domain)
    ids = [
        (await api.ok(CREATE_ITEM, {"input": {"title": f"T{n}"}}, token))["createItem"]["id"]
        for n in range(items)
    ]
    return token, ids


async def _cached(api: Api, token: str) -> bool:
    data = await api.ok(RECOMMEND, OPTIONS, token)
    return data["recommendations"]["explanation"]["cached"]


async def test_results_are_cached_until_something_changes(backend_api: Api) -> None:
    api = backend_api
    token, ids = await _seed(api, f"{uuid.uuid4().hex[:8]}.example")
    assert await _cached(api, token) is False
    assert await _cached(api, token) is True
    assert len(api.recommender.requests) == 1
    # Other options are another result.
    other = await api.ok(RECOMMEND, {"o": {"numRecommendations": 2}}, token)
    assert other["recommendations"]["explanation"]["cached"] is False

    await api.ok(RECORD, {"i": ids[0]}, token)  # the user's own interaction
    assert await _cached(api, token) is False
    assert await _cached(api, token) is True

    tenant = tenant_of(api, token)
    before = await model_epoch(api.cache, tenant)
    assert await bump_model_epoch(api.cache, tenant) == before + 1  # a model was promoted
    assert await _cached(api, token) is False
    assert await _cached(api, token) is True

    await api.ok(UPDATE_ITEM, {"id": ids[1]}, token)  # an item changed
    data = await api.ok(RECOMMEND, OPTIONS, token)
    assert data["recommendations"]["explanation"]["cached"] is False
    assert "New" in {entry["item"]["title"] for entry in data["recommendations"]["items"]}
    assert len(api.recommender.requests) == 5


SIMILAR = "query($i: UUID!) { similarItems(itemId: $i, topK: 2) { score item { id title } } }"
TRENDING = "query($c: String) { trendingItems(category: $c, limit: 3) { item { id title } } }"


async def test_similar_and_trending_lists_are_cached_until_something_changes(
    backend_api: Api,
) -> None:
    api = backend_api
    token, ids = await _seed(api, f"{uuid.uuid4().hex[:8]}.example")
    recommender = api.recommender

    async def ask() -> tuple[Any, Any]:
        similar = await api.ok(SIMILAR, {"i": ids[0]}, token)
        trending = await api.ok(TRENDING, {"c": None}, token)
        return similar["similarItems"], trending["trendingItems"]

    first = await ask()
    assert await ask() == first  # the second call is served from the cache
    assert (len(recommender.similar_asked), len(recommender.trending_asked)) == (1, 1)
    await api.ok(TRENDING, {"c": "books"}, token)  # another category is another list
    await api.ok(RECORD, {"i": ids[0]}, token)  # a user's interaction: not an item change
    await ask()
    assert (len(recommender.similar_asked), len(recommender.trending_asked)) == (1, 2)

    await api.ok(UPDATE_ITEM, {"id": ids[1]}, token)  # an item changed: both recomputed
    similar, trending = await ask()
    assert (len(recommender.similar_asked), len(recommender.trending_asked)) == (2, 3)
    assert "New" in {entry["item"]["title"] for entry in [*similar, *trending]}

    await bump_model_epoch(api.cache, tenant_of(api, token))  # a new model version
    await ask()
    await ask()
    assert (len(recommender.similar_asked), len(recommender.trending_asked)) == (3, 4)


async def test_similar_and_trending_ttls_of_zero_turn_their_caching_off(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, cache_similar_ttl_seconds=0, cache_trending_ttl_seconds=0)
    async with running_api(f"sqlite+aiosqlite:///{tmp_path}/t.db", settings) as api:
        token, ids = await _seed(api, "ttl.example")
        for _ in range(2):
            await api.ok(SIMILAR, {"i": ids[0]}, token)
            await api.ok(TRENDING, {"c": None}, token)
        assert (len(api.recommender.similar_asked), len(api.recommender.trending_asked)) == (2, 2)


async def test_a_hit_reads_the_cache_once(backend_api: Api, monkeypatch) -> None:
    """The account check (is the caller still active), the model epoch and the result come
    back in one read: a hit costs one round trip to the cache besides the rate limit."""
    api = backend_api
    token, _ = await _seed(api, f"{uuid.uuid4().hex[:8]}.example")
    assert await _cached(api, token) is False
    reads: list[list[str]] = []
    real = api.cache._get_many_raw

    async def counted(keys: list[str]) -> list[Any]:
        reads.append(list(keys))
        return await real(keys)

    monkeypatch.setattr(api.cache, "_get_many_raw", counted)
    assert await _cached(api, token) is True
    assert len(reads) == 1, reads
    [keys] = reads
    assert any(":auth:" in key for key in keys)
    assert any("model_epoch" in key for key in keys)
    assert any(":recs:" in key for key in keys)


async def test_a_burst_of_identical_misses_computes_once(backend_api: Api) -> None:
    api = backend_api
    token, _ = await _seed(api, f"{uuid.uuid4().hex[:8]}.example")
    original = api.recommender.recommend

    async def slow(request: Any) -> Any:
        await asyncio.sleep(0.3)
        return await original(request)

    api.recommender.recommend = slow  # type: ignore[method-assign]
    replies = await asyncio.gather(*(api.ok(RECOMMEND, OPTIONS, token) for _ in range(20)))
    assert len(api.recommender.requests) == 1
    flags = [reply["recommendations"]["explanation"]["cached"] for reply in replies]
    assert flags.count(False) == 1 and flags.count(True) == 19
    assert len({str(reply["recommendations"]["items"]) for reply in replies}) == 1


@pytest.mark.parametrize("backend", BACKENDS)
async def test_replicas_share_one_computation(request: pytest.FixtureRequest, backend: str) -> None:
    """Two ResultCaches over one backend stand for two replicas: the lock makes one compute."""
    cache = create_cache(backend_url(request, backend))
    calls = itertools.count()

    async def compute() -> dict[str, int]:
        next(calls)
        await asyncio.sleep(0.3)
        return {"answer": 42}

    key = f"rec:{{{uuid.uuid4()}}}:recs:user:e0:fingerprint"
    try:
        replicas = [ResultCache(cache, ttl=30), ResultCache(cache, ttl=30)]
        got = await asyncio.gather(*(r.get_or_compute(key, compute) for r in replicas * 5))
        assert next(calls) == 1
        assert [value for value, _ in got] == [{"answer": 42}] * 10
        assert sorted(cached for _, cached in got) == [False] + [True] * 9
        await cache.delete(key)
    finally:
        await cache.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _wait_for(url: str) -> None:
    cache = create_cache(url)
    try:
        for _ in range(100):
            try:
                await cache.ping()
                return
            except Unavailable:  # not up yet
                await asyncio.sleep(0.05)
        raise AssertionError("throwaway redis-server did not start")
    finally:
        await cache.close()


def _start_redis(port: int, directory: Path) -> subprocess.Popen[bytes]:
    """A throwaway server of this test's own: the shared one on 6379 is never touched."""
    return subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        cwd=directory,
    )


async def test_requests_succeed_uncached_when_redis_dies(tmp_path: Path) -> None:
    port = _free_port()
    server = _start_redis(port, tmp_path)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        await _wait_for(url)
        settings = make_settings(tmp_path, redis_url=url)
        async with running_api(f"sqlite+aiosqlite:///{tmp_path}/api.db", settings) as api:
            token, ids = await _seed(api, "down.example", items=3)
            assert await _cached(api, token) is False
            assert await _cached(api, token) is True
            assert (await api.client.get("/health")).json()["status"] == "ok"

            server.kill()
            server.wait(timeout=10)
            started = time.perf_counter()
            assert await _cached(api, token) is False  # computed, not failed
            assert await _cached(api, token) is False  # and nothing pretends to be cached
            await api.ok(RECORD, {"i": ids[0]}, token)
            await api.ok("{ rateLimitStatus { remaining } }", token=token)
            assert time.perf_counter() - started < 10
            health = (await api.client.get("/health")).json()
            assert health["status"] == "degraded"
            assert health["checks"]["cache"] == "unavailable"
    finally:
        server.kill()
        server.wait(timeout=10)
