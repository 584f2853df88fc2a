"""Per-tenant quotas: video creations per rolling minute, concurrent jobs, video seconds per UTC day.

``QuotaKeeper`` decides; a state backend remembers. ``MemoryQuotaState`` keeps the counts in this
ingress replica (with N replicas a tenant can get up to N times its limits). ``RedisQuotaState``
shares the rate window and the daily budget between replicas through Redis and falls back to its
own in-memory copy while Redis is down (the limits then hold per replica until Redis returns).
Concurrent jobs are always counted per replica: a job lives on the replica that accepted it.
"""

from __future__ import annotations

import datetime as dt
import math
import secrets
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from serve.redis_link import RedisLink, RedisUnavailable
from serve.tenancy.keys import TenantQuotas

WINDOW_S = 60.0

Refund = Callable[[], Awaitable[None]]


async def _no_refund() -> None:
    return None


class QuotaExceeded(Exception):
    """A tenant hit ``limit``; answer 429 with ``Retry-After: retry_after``."""

    def __init__(self, tenant: str, limit: str, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.tenant, self.limit, self.message, self.retry_after = tenant, limit, message, max(1, retry_after)


class QuotaState(Protocol):
    """Where the rate window and the daily totals live."""

    async def take_request(self, tenant: str, limit: int, now: float) -> float | None:
        """Count one request; None if within ``limit`` per minute, else seconds until one frees."""

    async def add_seconds(self, tenant: str, day: str, seconds: float, budget: float) -> float | None:
        """Add ``seconds`` to the day's total; None if within ``budget``, else the total already used."""

    async def refund_seconds(self, tenant: str, day: str, seconds: float) -> None: ...


class MemoryQuotaState:
    """Quota counts in this process."""

    def __init__(self) -> None:
        self._requests: dict[str, deque[float]] = {}
        self._seconds: dict[tuple[str, str], float] = {}

    async def take_request(self, tenant: str, limit: int, now: float) -> float | None:
        window = self._requests.setdefault(tenant, deque())
        while window and window[0] <= now - WINDOW_S:
            window.popleft()
        if len(window) >= limit:
            return window[len(window) - limit] + WINDOW_S - now
        window.append(now)
        return None

    async def add_seconds(self, tenant: str, day: str, seconds: float, budget: float) -> float | None:
        # Yesterday's totals are never read again.
        for stale in [key for key in self._seconds if key[1] != day]:
            del self._seconds[stale]
        used = self._seconds.get((tenant, day), 0.0)
        if used + seconds > budget + 1e-9:
            return used
        self._seconds[(tenant, day)] = used + seconds
        return None

    async def refund_seconds(self, tenant: str, day: str, seconds: float) -> None:
        key = (tenant, day)
        if key in self._seconds:
            self._seconds[key] = max(0.0, self._seconds[key] - seconds)


# Add first, then count and roll back if over: two replicas racing can both be refused, never both
# let through past the limit.
_TAKE_REQUEST_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1] - ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(ARGV[3] * 1000) + 1000)
local count = redis.call('ZCARD', KEYS[1])
if count > tonumber(ARGV[4]) then
  redis.call('ZREM', KEYS[1], ARGV[2])
  local nth = redis.call('ZRANGE', KEYS[1], count - 1 - tonumber(ARGV[4]), count - 1 - tonumber(ARGV[4]), 'WITHSCORES')
  return tostring(nth[2] + ARGV[3] - ARGV[1])
end
return false
"""

_ADD_SECONDS_LUA = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + tonumber(ARGV[1]) > tonumber(ARGV[2]) + 1e-9 then return tostring(used) end
redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], 172800)
return false
"""


class RedisQuotaState:
    """Quota counts in Redis, shared by every ingress replica; in memory while Redis is down."""

    def __init__(self, link: RedisLink, prefix: str = "wanserve:quota") -> None:
        self._link = link
        self._prefix = prefix
        self._fallback = MemoryQuotaState()
        self._take = link.client.register_script(_TAKE_REQUEST_LUA)
        self._add = link.client.register_script(_ADD_SECONDS_LUA)

    async def take_request(self, tenant: str, limit: int, now: float) -> float | None:
        key, member = f"{self._prefix}:rpm:{tenant}", f"{now:.6f}:{secrets.token_hex(4)}"
        try:
            result = await self._link.call(
                "quota", lambda _: self._take(keys=[key], args=[now, member, WINDOW_S, limit])
            )
        except RedisUnavailable:
            return await self._fallback.take_request(tenant, limit, now)
        return None if result is None else float(result)

    async def add_seconds(self, tenant: str, day: str, seconds: float, budget: float) -> float | None:
        key = f"{self._prefix}:seconds:{tenant}:{day}"
        try:
            result = await self._link.call("quota", lambda _: self._add(keys=[key], args=[seconds, budget]))
        except RedisUnavailable:
            return await self._fallback.add_seconds(tenant, day, seconds, budget)
        return None if result is None else float(result)

    async def refund_seconds(self, tenant: str, day: str, seconds: float) -> None:
        key = f"{self._prefix}:seconds:{tenant}:{day}"
        try:
            await self._link.call("quota", lambda client: client.incrbyfloat(key, -seconds))
        except RedisUnavailable:
            await self._fallback.refund_seconds(tenant, day, seconds)


def _utc_day(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d")


def seconds_to_utc_midnight(now: float) -> int:
    today = dt.datetime.fromtimestamp(now, dt.UTC)
    midnight = (today + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return math.ceil(midnight.timestamp() - now)


class QuotaKeeper:
    """Applies each tenant's ``TenantQuotas``; raises ``QuotaExceeded`` naming the limit."""

    def __init__(
        self,
        state: QuotaState,
        quotas_of: Callable[[str], TenantQuotas],
        *,
        concurrency_retry_after_s: int = 5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self._quotas_of = quotas_of
        self._retry_concurrent = concurrency_retry_after_s
        self._clock = clock
        self._running: Counter[str] = Counter()

    async def take_request(self, tenant: str) -> None:
        """Count one video creation against ``requests_per_minute``."""
        limit = self._quotas_of(tenant).requests_per_minute
        if limit is None:
            return
        wait = await self.state.take_request(tenant, limit, self._clock())
        if wait is not None:
            raise QuotaExceeded(tenant, "requests_per_minute",
                                f"tenant {tenant!r} reached its requests_per_minute quota ({limit} new videos per "
                                f"rolling minute); retry in {math.ceil(wait)}s", math.ceil(wait))

    async def charge_seconds(self, tenant: str, seconds: float) -> Refund:
        """Charge ``seconds`` to today's ``daily_video_seconds``; returns the refund (for a refused job)."""
        budget = self._quotas_of(tenant).daily_video_seconds
        if budget is None:
            return _no_refund
        now = self._clock()
        day = _utc_day(now)
        used = await self.state.add_seconds(tenant, day, seconds, budget)
        if used is not None:
            wait = seconds_to_utc_midnight(now)
            raise QuotaExceeded(tenant, "daily_video_seconds",
                                f"tenant {tenant!r} reached its daily_video_seconds quota: {used:.2f} of {budget:g} "
                                f"video seconds used today (UTC) and this video asks for {seconds:.2f}; the budget "
                                f"resets at 00:00 UTC, in {wait}s", wait)

        async def refund() -> None:
            await self.state.refund_seconds(tenant, day, seconds)

        return refund

    def start_job(self, tenant: str) -> None:
        """Count a job that will queue or generate against ``max_concurrent_jobs``."""
        limit = self._quotas_of(tenant).max_concurrent_jobs
        if limit is not None and self._running[tenant] >= limit:
            raise QuotaExceeded(tenant, "max_concurrent_jobs",
                                f"tenant {tenant!r} reached its max_concurrent_jobs quota: {self._running[tenant]} "
                                f"videos queued or generating (limit {limit}); retry when one completes",
                                self._retry_concurrent)
        self._running[tenant] += 1

    def finish_job(self, tenant: str) -> None:
        self._running[tenant] -= 1
        if self._running[tenant] <= 0:
            del self._running[tenant]

    def running(self, tenant: str) -> int:
        return self._running[tenant]
