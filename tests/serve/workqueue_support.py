"""Router replicas for the work-queue tests: several consumers of one queue, on real Redis or in memory."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from serve.redis_link import RedisLink
from serve.workqueue import (
    FlightRegistry,
    MemoryFlightRegistry,
    MemoryWorkQueue,
    RedisFlightRegistry,
    RedisWorkQueue,
    WorkQueue,
)

# Short leases keep the tests fast; the rules are the same at 30 s.
LEASE_S = 0.3
POLL_S = 0.02

on_session_loop = pytest.mark.asyncio(loop_scope="session")


class Replicas:
    """``queue(name)`` is one more router replica on the shared queue: its own link, its own consumer name."""

    def __init__(self, backend: str, redis_url: str | None) -> None:
        self.backend = backend
        self.redis_url = redis_url
        self._links: list[RedisLink] = []
        self._memory: MemoryWorkQueue | None = None
        self._memory_flights = MemoryFlightRegistry()

    def queue(self, name: str, **options: Any) -> WorkQueue:
        options = {"lease_s": LEASE_S, "poll_s": POLL_S, **options}
        if self.backend == "memory":
            if self._memory is None:
                self._memory = MemoryWorkQueue(name, **options)
                return self._memory
            return self._memory.replica(name)
        assert self.redis_url is not None
        link = RedisLink(self.redis_url, cooldown_s=0.05)
        self._links.append(link)
        return RedisWorkQueue(link, name, **options)

    def flights(self) -> FlightRegistry:
        """One more replica's view of the flights."""
        if self.backend == "memory":
            return self._memory_flights
        assert self.redis_url is not None
        link = RedisLink(self.redis_url, cooldown_s=0.05)
        self._links.append(link)
        return RedisFlightRegistry(link)

    async def aclose(self) -> None:
        for link in self._links:
            await link.aclose()


@pytest_asyncio.fixture(name="replicas", params=["redis", "memory"], loop_scope="session")
async def replicas_fixture(request: pytest.FixtureRequest) -> AsyncIterator[Replicas]:
    """Import it (as ``replicas_fixture``) into a test module to use ``replicas``."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    made = Replicas(request.param, url)
    yield made
    await made.aclose()


async def eventually(check: Callable[[], Any], timeout_s: float = 5.0) -> None:
    """Wait until ``check()`` (sync or async) is truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
