"""Single flight across router replicas: one job generates a given video, the others wait for it.

The first job to `lead` a key (the request's cache key) generates; later jobs with the same key get
the leader's job id back, `wait_gone` until the leader's flight ends, then read the leader's job
record: completed or failed, they take its outcome; still unfinished (the leader's replica died and
its lease ran out), they call `lead` again and one of them takes over. The flight is a Redis key with
the leader's job id and a lease that `holding` renews, so a dead leader's flight ends by itself.

Usage, in the code that runs a claimed job::

    leader = await flights.lead(key, job_id, lease_s)
    while leader is not None:
        await flights.wait_gone(key, leader)
        ...  # the leader's record is final: take its outcome and return
        leader = await flights.lead(key, job_id, lease_s)
    async with flights.holding(key, job_id, lease_s):
        ...  # look in the cache once more (a leader may just have finished), else generate
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from serve.redis_link import RedisLink, RedisRequestError, RedisUnavailable

log = logging.getLogger(__name__)

_UNREACHABLE = (RedisUnavailable, RedisRequestError)


class FlightRegistry(Protocol):
    """Who generates each key right now, shared by the replicas that share the registry."""

    async def lead(self, key: str, job_id: str, lease_s: float) -> str | None:
        """None if ``job_id`` leads ``key`` now (newly, or still); else the leading job's id."""
        ...

    async def renew(self, key: str, job_id: str, lease_s: float) -> bool:
        """Extend ``job_id``'s flight by ``lease_s``; False if it no longer leads ``key``."""
        ...

    async def finish(self, key: str, job_id: str) -> None:
        """End ``job_id``'s flight (after its outcome is recorded); a no-op if it no longer leads."""
        ...

    async def wait_gone(self, key: str, leader: str, poll_s: float = 0.5) -> None:
        """Return once ``key``'s flight no longer belongs to ``leader`` (finished, or its lease ran out)."""
        ...


@contextlib.asynccontextmanager
async def holding(registry: FlightRegistry, key: str, job_id: str, lease_s: float) -> AsyncIterator[None]:
    """Keep ``job_id``'s flight alive (renewed every ``lease_s / 3``) inside the block; finish it after."""
    stop = asyncio.Event()

    async def renew_until_stopped() -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=lease_s / 3)
            if stop.is_set():
                return
            if not await registry.renew(key, job_id, lease_s) and not stop.is_set():
                log.warning("job %s lost the lead of flight %s: this replica stalled past its lease", job_id, key[:12])
                return

    # Stopped by the flag too, not by cancel() alone: see `Lease.keep_alive`.
    renewer = asyncio.create_task(renew_until_stopped())
    try:
        yield
    finally:
        stop.set()
        renewer.cancel()
        await registry.finish(key, job_id)


# KEYS: flight. ARGV: job, lease ms. Returns false if the job leads now, else the leader's job id.
_LEAD_LUA = """
local leader = redis.call('GET', KEYS[1])
if not leader or leader == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return false
end
return leader
"""

_RENEW_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

_FINISH_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisFlightRegistry:
    """Flights in Redis, shared by every router replica.

    While Redis is unreachable every job leads its own flight: a video generated twice is better than
    a job that waits for a registry it cannot reach.
    """

    def __init__(self, link: RedisLink, prefix: str = "wanserve:{work}:flight") -> None:
        self._link = link
        self._prefix = prefix
        self._lead = link.client.register_script(_LEAD_LUA)
        self._renew = link.client.register_script(_RENEW_LUA)
        self._finish = link.client.register_script(_FINISH_LUA)

    def _key(self, key: str) -> str:
        return f"{self._prefix}:{key}"

    async def lead(self, key: str, job_id: str, lease_s: float) -> str | None:
        keys, args = [self._key(key)], [job_id, str(int(lease_s * 1000))]
        try:
            leader = await self._link.call("flights.lead", lambda r: self._lead(keys, args, client=r))
        except _UNREACHABLE:
            return None
        return None if leader is None else (leader.decode() if isinstance(leader, bytes) else str(leader))

    async def renew(self, key: str, job_id: str, lease_s: float) -> bool:
        keys, args = [self._key(key)], [job_id, str(int(lease_s * 1000))]
        try:
            return bool(await self._link.call("flights.renew", lambda r: self._renew(keys, args, client=r)))
        except _UNREACHABLE:
            return True  # not known to be lost; the next renewal tries again

    async def finish(self, key: str, job_id: str) -> None:
        keys, args = [self._key(key)], [job_id]
        with contextlib.suppress(*_UNREACHABLE):  # the flight then ends when its lease runs out
            await self._link.call("flights.finish", lambda r: self._finish(keys, args, client=r))

    async def wait_gone(self, key: str, leader: str, poll_s: float = 0.5) -> None:
        flight = self._key(key)
        while True:
            try:
                current = await self._link.call("flights.wait", lambda r: r.get(flight))
            except _UNREACHABLE:
                current = leader.encode()  # unknown: keep waiting (the job's own lease is at stake too)
            if current is None or current.decode() != leader:
                return
            await asyncio.sleep(poll_s)


class MemoryFlightRegistry:
    """Flights in this process (the local mode), with the same lease rules as in Redis."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._flights: dict[str, tuple[str, float]] = {}

    def _leader(self, key: str) -> str | None:
        flight = self._flights.get(key)
        if flight is None:
            return None
        if flight[1] <= self._clock():
            del self._flights[key]
            return None
        return flight[0]

    async def lead(self, key: str, job_id: str, lease_s: float) -> str | None:
        leader = self._leader(key)
        if leader is None or leader == job_id:
            self._flights[key] = (job_id, self._clock() + lease_s)
            return None
        return leader

    async def renew(self, key: str, job_id: str, lease_s: float) -> bool:
        if self._leader(key) != job_id:
            return False
        self._flights[key] = (job_id, self._clock() + lease_s)
        return True

    async def finish(self, key: str, job_id: str) -> None:
        if self._leader(key) == job_id:
            del self._flights[key]

    async def wait_gone(self, key: str, leader: str, poll_s: float = 0.5) -> None:
        while self._leader(key) == leader:
            await asyncio.sleep(poll_s)
