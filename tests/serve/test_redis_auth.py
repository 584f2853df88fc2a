"""Redis as the chart runs it: with a password, and full under noeviction (issue 19, points 1, 4, 10).

Each test starts its own real redis-server (``--requirepass``, ``--maxmemory``) next to the session's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve.artifacts import ArtifactRef
from serve.cache import CachedResult, ResultCache
from serve.jobs import JobBacklogFull, RedisJobStore
from serve.local_redis import RedisProcess, find_redis_server
from serve.redis_link import PASSWORD_ENV, RedisLink, RedisRequestError, RedisUnavailable, connection_options
from tests.serve.test_jobs import make_job

PASSWORD = "a-long-redis-password"


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    binary = find_redis_server()
    assert binary is not None, "redis-server is needed (make services)"
    server = RedisProcess(binary, tmp_path, password=PASSWORD)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def full_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    binary = find_redis_server()
    assert binary is not None, "redis-server is needed (make services)"
    server = RedisProcess(binary, tmp_path, extra_args=("--maxmemory", "2mb", "--maxmemory-policy", "noeviction"))
    server.start()
    yield server
    server.stop()


def test_the_password_comes_from_the_environment_unless_the_url_has_one():
    env = {PASSWORD_ENV: "from-env"}
    assert connection_options("redis://redis:6379/0", env) == {"password": "from-env"}
    assert connection_options("redis://:in-url@redis:6379/0", env) == {}
    assert connection_options("redis://redis:6379/0", {}) == {}
    tls = connection_options("rediss://redis:6379/0", {"WANSERVE_REDIS_TLS_CA_FILE": "/ca.pem"})
    assert tls == {"ssl_ca_certs": "/ca.pem"}


@pytest.mark.asyncio(loop_scope="session")
async def test_jobs_reach_a_password_protected_redis_with_the_environment_password(locked_redis, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    store = RedisJobStore(locked_redis.url, ttl_seconds=600)
    job = await store.create(make_job())
    assert store.pending == 0  # written to Redis, not held in memory
    with locked_redis.client() as client:
        assert client.exists(f"wanserve:job:{job.id}") == 1
    await store.aclose()


@pytest.mark.asyncio(loop_scope="session")
async def test_without_the_password_redis_is_an_outage_that_names_the_cause(locked_redis, monkeypatch, caplog):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    link = RedisLink(locked_redis.url)
    with caplog.at_level(logging.WARNING, logger="serve.redis_link"), pytest.raises(RedisUnavailable):
        await link.call("ping", lambda r: r.ping())
    assert "check the password" in caplog.text
    assert PASSWORD not in caplog.text
    await link.aclose()


@pytest.mark.asyncio(loop_scope="session")
async def test_a_wrong_type_answer_is_a_request_error_and_leaves_redis_in_service(redis_url):
    link = RedisLink(redis_url)
    await link.call("set", lambda r: r.set("plain", "x"))
    with pytest.raises(RedisRequestError):
        await link.call("hgetall", lambda r: r.hgetall("plain"))
    assert link.healthy
    assert await link.call("get", lambda r: r.get("plain")) == b"x"  # no breaker between
    await link.aclose()


@pytest.mark.asyncio(loop_scope="session")
async def test_a_full_noeviction_redis_refuses_writes_without_tripping_the_breaker(full_redis):
    link = RedisLink(full_redis.url)
    with pytest.raises(RedisRequestError, match="maxmemory"):
        for index in range(100):
            await link.call("fill", lambda r, i=index: r.set(f"filler:{i}", b"x" * 100_000))
    assert link.healthy
    assert await link.call("get", lambda r: r.get("filler:0")) is not None
    await link.aclose()


@pytest.mark.asyncio(loop_scope="session")
async def test_the_cache_misses_on_a_full_redis_instead_of_failing(full_redis):
    cache = ResultCache(full_redis.url)
    with full_redis.client() as client:
        for index in range(100):
            try:
                client.set(f"filler:{index}", b"x" * 100_000)
            except Exception:
                break
    result = CachedResult(video=ArtifactRef.of("shared", b"mp4" * 50_000, "video/mp4"),
                          thumbnail=ArtifactRef.of("shared", b"png", "image/png"))
    await cache.put("k" * 64, result, ttl=60)  # refused by Redis (or taken): never raised
    assert await cache.get("k" * 64) in (None, result)
    await cache.aclose()


@pytest.mark.asyncio(loop_scope="session")
async def test_jobs_held_in_memory_during_an_outage_are_capped(redis_server, redis_url):
    store = RedisJobStore(RedisLink(redis_url, cooldown_s=0.05), ttl_seconds=600, max_pending_jobs=3)
    with redis_server.down():
        for _ in range(3):
            await store.create(make_job())
        with pytest.raises(JobBacklogFull, match="retry in"):
            await store.create(make_job())
    assert store.pending == 3
    await asyncio.sleep(0.1)  # the breaker's cooldown
    await store.create(make_job())  # Redis is back: the backlog is flushed and new jobs are taken
    assert store.pending == 0
    await store.aclose()
