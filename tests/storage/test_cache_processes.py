"""Separate processes share one rate limit: together they must never overspend it."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import pytest

from storage.cache import create_cache
from tests.storage.test_cache_contract import own_db

PROCESSES = 4
ATTEMPTS_PER_PROCESS = 20
LIMIT = 30


def spend_window(url: str, key: str, start_at: float) -> int:
    """Runs in a child process: how many of its attempts the shared window admitted."""
    return asyncio.run(_spend(url, key, start_at))


async def _spend(url: str, key: str, start_at: float) -> int:
    cache = create_cache(url)
    try:
        await cache.ping()  # connect first, so the processes race on the window, not on startup
        await asyncio.sleep(max(0.0, start_at - time.time()))
        verdicts = await asyncio.gather(
            *(cache.sliding_window(key, LIMIT, 60.0) for _ in range(ATTEMPTS_PER_PROCESS))
        )
        return sum(verdict.allowed for verdict in verdicts)
    finally:
        await cache.close()


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    # Spawned (not forked) children: forking a process with a running event loop is unsafe.
    # One pool for both backends halves the start-up cost on a busy machine.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=PROCESSES, mp_context=context) as executor:
        yield executor


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["redis", "cluster"])
async def test_processes_cannot_overspend_a_sliding_window(
    request: pytest.FixtureRequest, pool: ProcessPoolExecutor, backend: str
) -> None:
    if backend == "redis":
        url = own_db(request.getfixturevalue("redis_url"))
    else:
        url = request.getfixturevalue("redis_cluster_url")
    key = f"test:cache-procs:{uuid.uuid4().hex}"
    # A common start line, far enough ahead to absorb the children's start-up, makes them race.
    start_at = time.time() + 4.0
    loop = asyncio.get_running_loop()
    runs = [loop.run_in_executor(pool, spend_window, url, key, start_at) for _ in range(PROCESSES)]
    admitted = await asyncio.gather(*runs)
    cache = create_cache(url)
    try:
        after = await cache.sliding_window(key, LIMIT, 60.0)
        await cache.delete(key)
    finally:
        await cache.close()
    assert sum(admitted) == LIMIT, admitted
    assert not after.allowed and after.count == LIMIT
