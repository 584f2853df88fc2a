"""The cluster actuator: publish the decided policy to the policy store that every router replica follows.

It writes only there, never the RayService (Helm owns it), and only when what the data plane acts on
changed; a drill's fault injection, set through the admin endpoint, is carried over. Beside the policy
it keeps the candidates that failed a rollout, so a re-created VideoServingPolicy does not retry them.
"""

from __future__ import annotations

import os

from redis.asyncio import Redis
from redis.exceptions import RedisError

from operators.actuators import ActuatorError, keep_faults, same_policy
from serve.policy import ServingPolicy
from serve.policy_store import PolicyStore, PolicyStoreError, PolicyVersion, StoredPolicy, UnreadablePolicy
from serve.redis_link import connection_options

#: Where the operator finds the durable Redis (the chart sets it; the password is WANSERVE_REDIS_PASSWORD).
REDIS_URL_ENV = "WANSERVE_REDIS_URL"


def store_from_env(key: str) -> PolicyStore | None:
    """The store at ``key`` in the Redis ``$WANSERVE_REDIS_URL`` names; None when it names none."""
    url = os.environ.get(REDIS_URL_ENV)
    if not url:
        return None
    client: Redis = Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0,  # type: ignore[call-overload]
                                   **connection_options(url))
    return PolicyStore(client, key)


class StoreActuator:
    """``apply(policy)`` publishes a changed policy; ``failed_candidates`` / ``remember_failed`` keep the
    rollouts' failures in the hash ``<key>:failed-candidates`` (candidate -> why)."""

    def __init__(self, store: PolicyStore, writer: str) -> None:
        self.store = store
        self.writer = writer
        self._failed_key = f"{store.key}:failed-candidates"

    async def apply(self, desired: ServingPolicy) -> PolicyVersion:
        """The version the routers follow once this returns: a new one when ``desired`` differs from
        what is stored, else the stored one."""
        try:
            current = await self._current()
            if current is not None and same_policy(current.policy, desired):
                return current.version
            policy = keep_faults(current.policy if current is not None else None, desired)
            return await self.store.publish(policy, self.writer)
        except PolicyStoreError as error:
            raise ActuatorError(str(error)) from error

    async def _current(self) -> StoredPolicy | None:
        try:
            return await self.store.read()
        except UnreadablePolicy:
            return None  # publishing a readable policy mends it

    async def failed_candidates(self) -> dict[str, str]:
        try:
            raw = await self.store.redis.hgetall(self._failed_key)
        except (RedisError, OSError) as error:
            raise ActuatorError(f"reading the failed candidates at {self._failed_key}: {error}") from error
        return {_text(name): _text(why) for name, why in raw.items()}

    async def remember_failed(self, candidate: str, why: str) -> None:
        try:
            await self.store.redis.hset(self._failed_key, candidate, why)
        except (RedisError, OSError) as error:
            raise ActuatorError(f"remembering failed candidate {candidate} at {self._failed_key}: {error}") from error


def _text(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)
