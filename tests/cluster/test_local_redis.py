"""The Redis `recserve serve` starts when none is configured: the replicas of the Serve app
share it as they would share a production one, and it goes when the app goes."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cluster import local_redis
from cluster.cli import app
from cluster.local_redis import LocalRedis, LocalRedisError, shared_cache_url
from storage.cache import create_cache
from storage.cache.channels import events_channel

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None and os.environ.get("CI") != "true",
    reason="needs redis-server (Debian's redis-server package)",
)


async def _shared(url: str) -> None:
    """Two caches on one URL, as two ingress replicas: one's write and invalidation is the
    other's, and an event one publishes reaches the other's subscriber."""
    first, second = create_cache(url), create_cache(url)
    try:
        key = "rec:{tenant}:recs:user"
        await first.set(key, {"items": [1, 2]})
        assert await second.get(key) == {"items": [1, 2]}
        await second.delete(key)
        assert await first.get(key) is None
        async with await second.subscribe(events_channel("tenant")) as subscription:
            await first.publish(events_channel("tenant"), {"kind": "purchase"})
            async with asyncio.timeout(5):
                async for _channel, event in subscription:
                    assert event == {"kind": "purchase"}
                    break
    finally:
        await first.close()
        await second.close()


def test_the_local_redis_is_shared_and_leaves_nothing_behind() -> None:
    with shared_cache_url(None) as url:
        assert url.startswith("unix://")
        socket = Path(url.removeprefix("unix://"))
        assert socket.exists()
        asyncio.run(_shared(url))
    assert not socket.parent.exists()


def test_a_configured_url_starts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("a local Redis was started although one is configured")

    monkeypatch.setattr(local_redis.LocalRedis, "start", refuse)
    with shared_cache_url("redis://cache.example:6379/0") as url:
        assert url == "redis://cache.example:6379/0"


def test_a_server_that_dies_at_once_is_reported(tmp_path: Path) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    server = LocalRedis(binary=str(fake))
    with pytest.raises(LocalRedisError, match="redis-server did not start"):
        server.start()
    assert not server.folder.exists()


def test_without_redis_server_the_cli_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_redis.shutil, "which", lambda _name: None)
    monkeypatch.delenv("RECSERVE_REDIS_URL", raising=False)
    monkeypatch.setenv("RECSERVE_DATA_DIR", str(tmp_path))
    from storage.settings import get_settings

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["serve"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1, result.output
    assert "apt install redis-server" in result.output and "RECSERVE_REDIS_URL" in result.output
    assert "Traceback" not in result.output
