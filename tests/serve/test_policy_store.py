"""The policy store against a real redis-server: versions, followers converging, outages, restarts."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from serve.policy import DegradationTier, ServingPolicy
from serve.policy_store import PolicyFollower, PolicyStore, PolicyStoreError, PolicyVersion

pytestmark = pytest.mark.asyncio(loop_scope="session")

KEY = "wanserve:test:policy"
STABLE = ServingPolicy(weights={"v1": 100.0})
CANARY = ServingPolicy(weights={"v1": 95.0, "v2": 5.0}, reason="canary at 5%")
DEGRADED = ServingPolicy(weights={"v1": 100.0}, tier=DegradationTier(name="reduced", level=1, max_steps=10))


def _store(url: str) -> PolicyStore:
    return PolicyStore(Redis.from_url(url), KEY)


class Replica:
    """What a router replica does with the policies its follower hands it."""

    def __init__(self) -> None:
        self.applied: list[ServingPolicy] = []

    def apply(self, policy: ServingPolicy) -> None:
        self.applied.append(policy)


async def test_an_empty_store_has_no_policy_and_version_zero(redis_url: str) -> None:
    store = _store(redis_url)
    assert await store.read() is None
    assert (await store.version()).number == 0


async def test_each_publish_gets_the_next_version_and_is_read_back(redis_url: str) -> None:
    store = _store(redis_url)
    first = await store.publish(STABLE, writer="operator")
    second = await store.publish(CANARY, writer="operator")
    assert (first.number, second.number) == (1, 2)
    assert first.epoch == second.epoch != ""
    stored = await store.read()
    assert stored is not None
    assert (stored.version, stored.policy, stored.writer) == (second, CANARY, "operator")


async def test_every_follower_converges_on_the_newest_version_in_one_poll(redis_url: str) -> None:
    store = _store(redis_url)
    replicas = [Replica() for _ in range(3)]
    followers = [PolicyFollower(_store(redis_url), replica.apply) for replica in replicas]
    await store.publish(STABLE, writer="operator")
    await store.publish(CANARY, writer="operator")
    for follower in followers:
        assert await follower.poll() is True
    assert [replica.applied for replica in replicas] == [[CANARY]] * 3


async def test_a_follower_applies_a_version_once(redis_url: str) -> None:
    store = _store(redis_url)
    replica = Replica()
    follower = PolicyFollower(store, replica.apply)
    await store.publish(CANARY, writer="operator")
    assert await follower.poll() is True
    assert await follower.poll() is False
    await store.publish(DEGRADED, writer="operator")
    assert await follower.poll() is True
    assert replica.applied == [CANARY, DEGRADED]


async def test_a_store_that_lost_its_data_is_followed_from_its_new_epoch(redis_url: str) -> None:
    store = _store(redis_url)
    replica = Replica()
    follower = PolicyFollower(store, replica.apply)
    for policy in (STABLE, CANARY, DEGRADED):
        await store.publish(policy, writer="operator")
    await follower.poll()
    await store.redis.delete(KEY)  # Redis restarted without persistence
    assert await follower.poll() is False, "an empty store keeps the replica's policy"
    restarted = await store.publish(STABLE, writer="operator")
    assert restarted.number == 1 and restarted.epoch != follower.seen.epoch
    assert await follower.poll() is True
    assert replica.applied[-1] == STABLE


async def test_an_unreachable_store_keeps_the_current_policy(redis_server, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    store = _store(redis_url)
    replica = Replica()
    follower = PolicyFollower(store, replica.apply)
    await store.publish(CANARY, writer="operator")
    await follower.poll()
    with redis_server.down():
        assert await follower.poll() is False
        with pytest.raises(PolicyStoreError, match="policy store"):
            await store.publish(STABLE, writer="operator")
    assert replica.applied == [CANARY]
    await store.publish(DEGRADED, writer="operator")
    assert await follower.poll() is True
    assert replica.applied == [CANARY, DEGRADED]


async def test_an_unreadable_policy_is_skipped_until_a_good_one_arrives(redis_url: str) -> None:
    store = _store(redis_url)
    replica = Replica()
    follower = PolicyFollower(store, replica.apply)
    await store.publish(CANARY, writer="operator")
    await follower.poll()
    await store.redis.hset(KEY, mapping={"policy": '{"weights": {"v1": 900}}', "version": 7})
    assert await follower.poll() is False
    with pytest.raises(PolicyStoreError, match="unreadable"):
        await store.read()
    await store.publish(STABLE, writer="admin")
    assert await follower.poll() is True
    assert replica.applied == [CANARY, STABLE]
    assert follower.seen == PolicyVersion(follower.seen.epoch, 8)
