"""Where the serving policy lives on a cluster: one Redis hash that every router replica follows.

The operator writes the policy with ``PolicyStore.publish``: one Lua call bumps the hash's version and
stores the policy beside it, so a version always names one policy and only ever grows. Each router
replica runs a ``PolicyFollower``: it reads the version every ``poll_s`` seconds and loads the policy
when the version moved, so every replica serves the newest policy within one poll (a second), well
inside one control interval. The hash also carries an epoch, drawn when it is created: a Redis that
lost its data (a restart without persistence) starts a new epoch, and the followers take its
versions although they count from 1 again. Helm never writes here, so a ``helm upgrade`` neither conflicts with the
operator's policy nor reverts it; the RayService carries only the topology.

Locally without Redis there is no store: the admin endpoint (``PUT /admin/policy``) sets the policy of
the one router replica. With Redis the admin endpoint publishes here too, so a drill reaches every
replica the same way the operator does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from serve.policy import ServingPolicy

log = logging.getLogger(__name__)

#: How often a router replica looks for a newer policy.
POLL_SECONDS = 1.0

# KEYS[1] the policy hash; ARGV: policy JSON, time written, writer, an epoch for a new hash.
# Returns the epoch and the new version.
_PUBLISH = """
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[4])
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'policy', ARGV[1], 'written_at', ARGV[2], 'writer', ARGV[3])
return {redis.call('HGET', KEYS[1], 'epoch'), version}
"""


class PolicyStoreError(RuntimeError):
    """The store could not be read or written; the message says why (Redis down, refused, unreadable)."""


class UnreadablePolicy(PolicyStoreError):
    """The stored policy does not parse (written by something else): publishing a new one mends it."""


@dataclass(frozen=True, order=True)
class PolicyVersion:
    """Where the store stands: its epoch (new when Redis lost the hash) and the version within it."""

    epoch: str = ""
    number: int = 0


@dataclass(frozen=True)
class StoredPolicy:
    """One published policy and its version."""

    version: PolicyVersion
    policy: ServingPolicy
    written_at: float
    writer: str


class PolicyStore:
    """The policy hash at ``key`` in the durable Redis: ``version``, ``policy`` (JSON), ``written_at``, ``writer``."""

    def __init__(self, redis: Redis, key: str) -> None:
        self.redis = redis
        self.key = key

    async def version(self) -> PolicyVersion:
        """The newest version; ``PolicyVersion()`` when nothing was published."""
        epoch, number = await self._call(self.redis.hmget(self.key, ["epoch", "version"]))
        return PolicyVersion(_text(epoch), int(number or 0))

    async def read(self) -> StoredPolicy | None:
        """The newest policy, or None when nothing was published."""
        epoch, number, policy, written_at, writer = await self._call(
            self.redis.hmget(self.key, ["epoch", "version", "policy", "written_at", "writer"])
        )
        if number is None or policy is None:
            return None
        version = PolicyVersion(_text(epoch), int(number))
        try:
            parsed = ServingPolicy.model_validate_json(policy)
        except ValidationError as error:
            raise UnreadablePolicy(f"policy version {version.number} at {self.key} is unreadable: {error}") from None
        return StoredPolicy(version, parsed, float(written_at or 0), _text(writer))

    async def publish(self, policy: ServingPolicy, writer: str) -> PolicyVersion:
        """Store ``policy`` as the next version; returns that version."""
        payload = policy.model_dump_json()
        epoch, number = await self._call(self.redis.eval(
            _PUBLISH, 1, self.key, payload, str(time.time()), writer, secrets.token_hex(8)))
        return PolicyVersion(_text(epoch), int(number))

    async def _call(self, pending: Any) -> Any:
        try:
            return await pending
        except (RedisError, OSError) as error:
            raise PolicyStoreError(f"policy store {self.key}: {type(error).__name__}: {error}") from error


def _text(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw or "")


class PolicyFollower:
    """Keeps one router replica on the store's newest policy: ``apply(policy)`` on every new version.

    A store that cannot be read, or a policy that cannot be parsed, keeps the policy the replica has
    (logged once, until the store answers again).
    """

    def __init__(
        self, store: PolicyStore, apply: Callable[[ServingPolicy], None], poll_s: float = POLL_SECONDS
    ) -> None:
        self.store = store
        self.apply = apply
        self.poll_s = poll_s
        self.seen = PolicyVersion()
        self._outage = False
        self._task: asyncio.Task[None] | None = None

    async def poll(self) -> bool:
        """Apply the newest policy if it is newer than the last one seen; True when it applied one."""
        try:
            if not self._newer(await self.store.version()):
                self._recovered()
                return False
            stored = await self.store.read()
        except PolicyStoreError as error:
            if not self._outage:
                log.warning("cannot read the policy store (%s): keeping policy version %d", error, self.seen.number)
            self._outage = True
            return False
        self._recovered()
        if stored is None or not self._newer(stored.version):
            return False
        self.seen = stored.version
        self.apply(stored.policy)
        log.info("serving policy version %d (by %s): %s", stored.version.number, stored.writer,
                 stored.policy.reason or "-")
        return True

    def _newer(self, version: PolicyVersion) -> bool:
        # Another epoch is a store that started over: its versions count again from 1.
        if version.number == 0:
            return False
        return version.epoch != self.seen.epoch or version.number > self.seen.number

    def _recovered(self) -> None:
        if self._outage:
            log.warning("policy store readable again at version %d", self.seen.number)
        self._outage = False

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await self.poll()
            await asyncio.sleep(self.poll_s)

    def start(self) -> None:
        """Run in the background of the running event loop (the replica's)."""
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
