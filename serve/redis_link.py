"""A Redis connection that may be down: short timeouts, a circuit breaker, one log line per outage.

The job store and the result cache both treat Redis as helpful but optional: when it is unreachable
they fall back (in-process copy, cache miss) instead of failing the request. `RedisLink` is the one
place that decides whether Redis is worth trying right now, so a dead Redis costs at most one short
timeout every `cooldown_s` instead of one per request, and the outage is logged once, not per call.

Authentication and TLS: the password comes from the URL (``redis://:PASSWORD@host``) or, when the
URL carries none, from ``WANSERVE_REDIS_PASSWORD`` (the chart's Secret); a ``rediss://`` URL turns
TLS on, verified against ``WANSERVE_REDIS_TLS_CA_FILE`` when set. A Redis that refuses us (wrong
or missing password) is an outage like any other, and logged as such with the reason.

A Redis that answers with an error about *this* command (``WRONGTYPE`` for a key a crafted id
points at, ``OOM`` from a full ``noeviction`` Redis) is not an outage: it raises
``RedisRequestError`` to the caller and leaves the breaker closed, so one bad request cannot make
every other request fall back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, ConnectionError, RedisError, ResponseError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Hook called with the operation's name each time an operation could not use Redis (it failed, or
#: the breaker skipped it). Wire it to a counter such as `wanserve_redis_errors_total{op}`.
ErrorHook = Callable[[str], None]


PASSWORD_ENV = "WANSERVE_REDIS_PASSWORD"
TLS_CA_ENV = "WANSERVE_REDIS_TLS_CA_FILE"


class RedisUnavailable(Exception):
    """Redis could not serve this operation; the caller should fall back, not fail the request."""


class RedisRequestError(Exception):
    """Redis refused this one command (wrong key type, out of memory): a request error, not an outage."""


def connection_options(url: str, environ: dict[str, str] | None = None) -> dict[str, object]:
    """Password and TLS options for ``url``: the URL's own password wins over the environment's."""
    env = os.environ if environ is None else environ
    options: dict[str, object] = {}
    password = env.get(PASSWORD_ENV)
    if password and "@" not in url.split("://", 1)[-1].split("/", 1)[0]:
        options["password"] = password
    if url.startswith("rediss://") and env.get(TLS_CA_ENV):
        options["ssl_ca_certs"] = env[TLS_CA_ENV]
    return options


class RedisLink:
    """One async Redis client plus the breaker state shared by everything that uses it.

    `call(op, fn)` runs `fn(client)`; any Redis or socket error, or an open breaker, raises
    `RedisUnavailable`. After a failure the breaker stays open for `cooldown_s`; the next call after
    that tries Redis again, and a success closes it (redis-py reconnects on its own).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 0.5,
        cooldown_s: float = 2.0,
        on_error: ErrorHook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.cooldown_s = cooldown_s
        self._on_error = on_error
        self._clock = clock
        self._open_until = 0.0
        self._down = False
        # One immediate retry on a connection error covers a pooled connection that Redis closed
        # while restarting. No retry on timeouts, and not redis-py's default of 3 retries with
        # backoff: a hung Redis would then stall each request for seconds, exactly when we want to
        # give up fast and fall back.
        self.client: Redis = Redis.from_url(  # type: ignore[call-overload]
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1, supported_errors=(ConnectionError,)),
            **connection_options(url),
        )

    @property
    def healthy(self) -> bool:
        """False from the first failure of an outage until the first success after it."""
        return not self._down

    async def call(self, op: str, fn: Callable[[Redis], Awaitable[T]]) -> T:
        """Run `fn` against Redis, or raise `RedisUnavailable` (never a Redis error)."""
        if self._clock() < self._open_until:
            self._report(op)
            raise RedisUnavailable(f"{op}: Redis at {self._safe_url()} is down, retrying shortly")
        try:
            result = await fn(self.client)
        except ResponseError as exc:
            if not _is_outage(exc):
                log.info("Redis refused %s: %s", op, exc)
                raise RedisRequestError(f"{op}: {exc}") from exc
            self._fail(op, exc)
            raise RedisUnavailable(f"{op}: {type(exc).__name__}: {exc}") from exc
        except (RedisError, OSError) as exc:  # OSError covers socket and builtin TimeoutError
            self._fail(op, exc)
            raise RedisUnavailable(f"{op}: {type(exc).__name__}: {exc}") from exc
        if self._down:
            self._down = False
            log.warning("Redis at %s reachable again", self._safe_url())
        return result

    async def aclose(self) -> None:
        """Close the connection pool; errors while closing a dead connection are irrelevant."""
        with contextlib.suppress(RedisError, OSError):
            await self.client.connection_pool.disconnect()

    def _fail(self, op: str, exc: BaseException) -> None:
        self._open_until = self._clock() + self.cooldown_s
        if not self._down:
            self._down = True
            hint = ""
            if isinstance(exc, AuthenticationError) or "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
                hint = f" (check the password: the URL's, or ${PASSWORD_ENV})"
            log.warning(
                "Redis at %s unavailable (%s: %s)%s; falling back until it returns",
                self._safe_url(),
                type(exc).__name__,
                exc,
                hint,
            )
        self._report(op)

    def _report(self, op: str) -> None:
        if self._on_error is not None:
            self._on_error(op)

    def _safe_url(self) -> str:
        # Never log a password that may be embedded in the URL.
        pool_kwargs = self.client.connection_pool.connection_kwargs
        return f"{pool_kwargs.get('host', '?')}:{pool_kwargs.get('port', '?')}/{pool_kwargs.get('db', 0)}"


# Errors Redis answers for every command while it cannot serve any: authentication, loading a
# dump, a replica that lost its master, a script stuck in a loop ("BUSY ", not BUSYGROUP, which is
# about one command). Anything else concerns one command.
_OUTAGE_PREFIXES = ("NOAUTH", "WRONGPASS", "LOADING", "MASTERDOWN", "BUSY ", "READONLY", "NOPERM")


def _is_outage(error: ResponseError) -> bool:
    return isinstance(error, AuthenticationError) or str(error).startswith(_OUTAGE_PREFIXES)
