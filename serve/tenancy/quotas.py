"""Per-tenant quotas: video creations per rolling minute, concurrent jobs, compute units per UTC day.

``QuotaKeeper`` decides; a state backend remembers. ``MemoryQuotaState`` keeps the counts in this
ingress replica (with N replicas a tenant can get up to N times its limits). ``RedisQuotaState``
shares the rate window and the daily compute budget between replicas through Redis and falls back to its
own in-memory copy while Redis is down (the limits then hold per replica until Redis returns).
Concurrent jobs are counted by the work queue (serve/workqueue), cluster-wide with Redis: a tenant's
unfinished jobs are its queue entries; ``QuotaKeeper`` only says the limit and words the refusal.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from serve.redis_link import RedisLink, RedisRequestError, RedisUnavailable
from serve.tenancy.keys import TenantQuotas

WINDOW_S = 60.0

Refund = Callable[[], Awaitable[None]]


async def _no_refund() -> None:
    return None


def _once(refund: Refund) -> Refund:
    """``refund`` that does its work on the first call only: a caller's double refund costs nothing."""
    pending = [refund]

    async def once() -> None:
        if pending:
            await pending.pop()()

    return once


class QuotaExceeded(Exception):
    """A tenant hit ``limit``; answer 429 with ``Retry-After: retry_after``."""

    def __init__(self, tenant: str, limit: str, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.tenant, self.limit, self.message, self.retry_after = tenant, limit, message, max(1, retry_after)


@dataclass(frozen=True)
class OverBudget:
    """A charge refused: the day's budget would be passed. ``used`` is what the day had used already."""

    used: float


class QuotaState(Protocol):
    """Where the rate window and the daily totals live."""

    async def take_request(self, tenant: str, limit: int, now: float) -> float | None:
        """Count one request; None if within ``limit`` per minute, else seconds until one frees."""

    async def add_units(self, tenant: str, day: str, units: float, budget: float) -> Refund | OverBudget:
        """Add ``units`` to the day's total if within ``budget``; the refund undoes it where it was added."""


class MemoryQuotaState:
    """Quota counts in this process."""

    def __init__(self) -> None:
        self._requests: dict[str, deque[float]] = {}
        self._units: dict[tuple[str, str], float] = {}

    async def take_request(self, tenant: str, limit: int, now: float) -> float | None:
        window = self._requests.setdefault(tenant, deque())
        while window and window[0] <= now - WINDOW_S:
            window.popleft()
        if len(window) >= limit:
            return window[len(window) - limit] + WINDOW_S - now
        window.append(now)
        return None

    async def add_units(self, tenant: str, day: str, units: float, budget: float) -> Refund | OverBudget:
        # Yesterday's totals are never read again.
        for stale in [key for key in self._units if key[1] != day]:
            del self._units[stale]
        used = self._units.get((tenant, day), 0.0)
        if used + units > budget + _EPSILON:
            return OverBudget(used)
        self._units[(tenant, day)] = used + units

        async def refund() -> None:
            self.refund_units(tenant, day, units)

        return refund

    def refund_units(self, tenant: str, day: str, units: float) -> None:
        """Take ``units`` back, never below zero; a total already dropped (a past day) stays dropped."""
        key = (tenant, day)
        if key in self._units:
            self._units[key] = max(0.0, self._units[key] - units)


_EPSILON = 1e-9
# The daily total outlives its day by one more, so a replica whose clock lags still finds it.
_DAY_KEY_TTL_S = 2 * 86_400

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

# ARGV: units, budget, ttl seconds.
_ADD_UNITS_LUA = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + tonumber(ARGV[1]) > tonumber(ARGV[2]) + 1e-9 then return tostring(used) end
redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return false
"""

# A refund never creates the key (it expired: the day is over), never leaves it below zero, and
# never leaves it without an expiry (SET ... KEEPTTL keeps it; a key that had none gets one).
# ARGV: units, ttl seconds.
_REFUND_UNITS_LUA = """
local used = redis.call('GET', KEYS[1])
if not used then return false end
local left = tonumber(used) - tonumber(ARGV[1])
if left < 1e-9 then left = 0 end
redis.call('SET', KEYS[1], string.format('%.17g', left), 'KEEPTTL')
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return false
"""


class RedisQuotaState:
    """Quota counts in Redis, shared by every ingress replica; in memory while Redis is down.

    A refund goes back where its charge went: a charge taken in memory during an outage is refunded
    in memory, so it can never lower the shared total for units that total never counted. A refund
    Redis cannot take is dropped: the tenant is overcharged for the rest of the day, never undercharged.
    """

    def __init__(self, link: RedisLink, prefix: str = "wanserve:quota") -> None:
        self._link = link
        self._prefix = prefix
        self._fallback = MemoryQuotaState()
        self._take = link.client.register_script(_TAKE_REQUEST_LUA)
        self._add = link.client.register_script(_ADD_UNITS_LUA)
        self._refund = link.client.register_script(_REFUND_UNITS_LUA)

    def units_key(self, tenant: str, day: str) -> str:
        return f"{self._prefix}:units:{tenant}:{day}"

    async def take_request(self, tenant: str, limit: int, now: float) -> float | None:
        key, member = f"{self._prefix}:rpm:{tenant}", f"{now:.6f}:{secrets.token_hex(4)}"
        try:
            result = await self._link.call(
                "quota", lambda _: self._take(keys=[key], args=[now, member, WINDOW_S, limit])
            )
        except (RedisUnavailable, RedisRequestError):
            return await self._fallback.take_request(tenant, limit, now)
        return None if result is None else float(result)

    async def add_units(self, tenant: str, day: str, units: float, budget: float) -> Refund | OverBudget:
        key = self.units_key(tenant, day)
        try:
            result = await self._link.call(
                "quota", lambda _: self._add(keys=[key], args=[units, budget, _DAY_KEY_TTL_S])
            )
        except (RedisUnavailable, RedisRequestError):
            return await self._fallback.add_units(tenant, day, units, budget)
        if result is not None:
            return OverBudget(float(result))

        async def refund() -> None:
            # Overcharged, never undercharged: see the class.
            with contextlib.suppress(RedisUnavailable, RedisRequestError):
                await self._link.call("quota", lambda _: self._refund(keys=[key], args=[units, _DAY_KEY_TTL_S]))

        return refund


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

    def quotas_of(self, tenant: str) -> TenantQuotas:
        """The limits that apply to ``tenant`` now."""
        return self._quotas_of(tenant)

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

    async def charge_compute(self, tenant: str, units: float) -> Refund:
        """Charge ``units`` (``serve.tenancy.cost.compute_units``) to today's ``daily_compute_units``.

        Returns the refund for a job refused or failed later; calling it more than once refunds once.
        """
        budget = self._quotas_of(tenant).daily_compute_units
        if budget is None:
            return _no_refund
        now = self._clock()
        charged = await self.state.add_units(tenant, _utc_day(now), units, budget)
        if isinstance(charged, OverBudget):
            wait = seconds_to_utc_midnight(now)
            raise QuotaExceeded(tenant, "daily_compute_units",
                                f"tenant {tenant!r} reached its daily_compute_units quota: {charged.used:.4g} of "
                                f"{budget:g} compute units used today (UTC) and this video asks for {units:.4g} "
                                f"(1 unit = one 1280x704, 121-frame, 50-step video with guidance); the budget "
                                f"resets at 00:00 UTC, in {wait}s", wait)
        return _once(charged)

    def max_concurrent_jobs(self, tenant: str) -> int | None:
        """How many of ``tenant``'s jobs may be queued or generating at once (None: no limit)."""
        return self._quotas_of(tenant).max_concurrent_jobs

    def concurrency_exceeded(self, tenant: str, unfinished: int, limit: int) -> QuotaExceeded:
        """The refusal for a job over ``max_concurrent_jobs`` (the work queue counted ``unfinished``)."""
        return QuotaExceeded(tenant, "max_concurrent_jobs",
                             f"tenant {tenant!r} reached its max_concurrent_jobs quota: {unfinished} videos queued "
                             f"or generating (limit {limit}); retry when one completes", self._retry_concurrent)
