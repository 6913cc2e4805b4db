"""Backend selection, URL parsing and value encoding: no server needed."""

from __future__ import annotations

import numpy as np
import pytest

from storage.cache import InProcessCache, RedisCache, RedisClusterCache, create_cache
from storage.cache.cluster_cache import hash_tag_of, parse_cluster_url
from storage.cache.codec import COMPRESSED_HEADER, decode, encode
from storage.errors import InvalidData
from storage.settings import Settings


def test_no_redis_url_means_in_process_cache_with_settings_applied() -> None:
    settings = Settings(redis_url=None, cache_default_ttl_seconds=42, cache_compress_min_bytes=9)
    cache = create_cache(settings)
    assert isinstance(cache, InProcessCache)
    assert cache.default_ttl == 42.0
    assert cache.compress_min_bytes == 9


@pytest.mark.parametrize(
    ("url", "backend"),
    [
        ("redis://127.0.0.1:6379/3", RedisCache),
        ("rediss://user:pw@cache.example:6380/0", RedisCache),
        ("redis+cluster://10.0.0.1:7000,10.0.0.2:7000", RedisClusterCache),
    ],
)
def test_url_scheme_picks_the_backend(url: str, backend: type) -> None:
    # Clients connect lazily, so no server is needed to build them.
    assert isinstance(create_cache(Settings(redis_url=url)), backend)
    assert isinstance(create_cache(url), backend)


def test_unknown_scheme_is_rejected() -> None:
    with pytest.raises(InvalidData):
        create_cache("memcached://127.0.0.1:11211")


def test_cluster_url_parsing() -> None:
    nodes, options = parse_cluster_url(
        "rediss+cluster://app:s%40cret@a.example:7000,b.example:7001?socket_timeout=0.5"
    )
    assert nodes == [("a.example", 7000), ("b.example", 7001)]
    assert options == {
        "ssl": True,
        "username": "app",
        "password": "s@cret",
        "socket_timeout": 0.5,
    }
    with pytest.raises(InvalidData):
        parse_cluster_url("redis+cluster://a.example")


def test_hash_tag_of_a_prefix() -> None:
    assert hash_tag_of("rec:{acme}:user:") == "acme"
    assert hash_tag_of("rec:{acme") is None  # the tag is not closed yet: keys may differ
    assert hash_tag_of("rec:{}:x") is None  # an empty tag hashes the whole key
    assert hash_tag_of("rec:") is None


def test_codec_round_trips_and_marks_compression() -> None:
    value = {"scores": np.arange(3, dtype=np.float32), "ids": list(range(2000))}
    packed = encode(value, compress_min_bytes=100)
    assert packed[:1] == COMPRESSED_HEADER
    assert decode(packed) == {"scores": [0.0, 1.0, 2.0], "ids": list(range(2000))}
    assert encode([1, 2], compress_min_bytes=100) == b"[1,2]"
    assert decode(b"17") == 17  # what INCRBY leaves behind


def test_codec_rejects_what_it_cannot_handle() -> None:
    with pytest.raises(InvalidData):
        encode(object(), compress_min_bytes=100)
    with pytest.raises(InvalidData):
        decode(COMPRESSED_HEADER + b"not zlib")
