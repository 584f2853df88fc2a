"""The daily compute budget: what a video costs, how the budget runs out and resets, refunds that cannot go wrong."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from serve.app.args import AppArgs
from serve.local_redis import RedisProcess
from serve.params import GenerationParams
from serve.redis_link import RedisLink
from serve.tenancy import MemoryQuotaState, QuotaExceeded, QuotaKeeper, RedisQuotaState, TenantQuotas, compute_units
from serve.tenancy.quotas import QuotaState

MIDNIGHT = 1_700_006_400.0  # a UTC midnight
DAY = "2023-11-14"  # the UTC day that ends at MIDNIGHT


def _params(**fields: Any) -> GenerationParams:
    return GenerationParams(prompt="a cat", **fields)


@pytest.mark.parametrize(("fields", "units"), [
    ({}, 1.0),                                                    # the model's default video, with guidance
    ({"guidance_scale": 1.0}, 0.5),                               # no guidance: one transformer pass per step
    ({"width": 704, "height": 1280}, 1.0),                        # portrait costs what landscape does
    ({"width": 640, "height": 704}, 0.5),                         # area scales linearly
    ({"width": 320, "height": 352}, 0.125),
    ({"num_inference_steps": 25}, 0.5),                           # steps scale linearly
    ({"num_inference_steps": 100}, 2.0),
    ({"num_frames": 61}, 61 / 121),                               # frames scale linearly
    ({"fps": 60}, 1.0),                                           # fps is free: same frames, same work
    ({"width": 1280, "height": 1280, "num_frames": 121, "fps": 60, "num_inference_steps": 100,
      "guidance_scale": 20.0}, 1280 * 1280 / (1280 * 704) * 2),
])
def test_compute_units(fields, units):
    assert compute_units(_params(**fields)) == pytest.approx(units)


def test_the_big_short_video_costs_more_than_the_default_one():
    # The example: charged 2 video seconds (less than the default's 5), several times the compute.
    big = _params(width=1280, height=1280, num_frames=121, fps=60, num_inference_steps=100, guidance_scale=20.0)
    assert big.seconds < _params().seconds
    assert compute_units(big) > 3 * compute_units(_params())


def test_default_quotas_are_not_unlimited():
    quotas = AppArgs().default_quotas
    assert quotas == TenantQuotas(requests_per_minute=30, max_concurrent_jobs=8, daily_compute_units=200.0,
                                  max_storage_bytes=2 * 2**30)


@pytest.mark.parametrize("quotas", [{"daily_compute_units": 0}, {"max_storage_bytes": 0}, {"daily_video_seconds": 1}])
def test_quota_fields_refuse_nonsense_and_the_old_name(quotas):
    with pytest.raises(ValueError):
        TenantQuotas(**quotas)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
def state(request):
    if request.param == "memory":
        return MemoryQuotaState()
    return RedisQuotaState(RedisLink(request.getfixturevalue("redis_url")))


def _keeper(state: QuotaState, clock: Callable[[], float], budget: float | None = 10.0) -> QuotaKeeper:
    return QuotaKeeper(state, lambda _tenant: TenantQuotas(daily_compute_units=budget), clock=clock)


async def test_the_budget_runs_out_with_a_message_naming_used_budget_asked_and_reset(state):
    keeper = _keeper(state, Clock(MIDNIGHT - 100))
    await keeper.charge_compute("a", 6.0)
    with pytest.raises(QuotaExceeded) as refused:
        await keeper.charge_compute("a", 4.5)
    error = refused.value
    assert error.limit == "daily_compute_units" and error.retry_after == 100
    assert "6 of 10 compute units used today" in error.message
    assert "asks for 4.5" in error.message
    assert "resets at 00:00 UTC, in 100s" in error.message
    await keeper.charge_compute("a", 4.0)  # exactly up to the budget is fine
    await keeper.charge_compute("b", 10.0)  # another tenant's budget


async def test_the_budget_resets_at_utc_midnight(state):
    clock = Clock(MIDNIGHT - 100)
    keeper = _keeper(state, clock)
    await keeper.charge_compute("a", 10.0)
    with pytest.raises(QuotaExceeded):
        await keeper.charge_compute("a", 0.1)
    clock.now = MIDNIGHT
    await keeper.charge_compute("a", 10.0)


async def test_a_refund_gives_the_units_back_once(state):
    keeper = _keeper(state, Clock(MIDNIGHT - 100))
    refund = await keeper.charge_compute("a", 6.0)
    await keeper.charge_compute("a", 4.0)
    await refund()
    await refund()  # a second call refunds nothing
    await keeper.charge_compute("a", 6.0)
    with pytest.raises(QuotaExceeded):
        await keeper.charge_compute("a", 0.1)


async def test_no_budget_means_no_charge(state):
    keeper = _keeper(state, Clock(MIDNIGHT - 100), budget=None)
    refund = await keeper.charge_compute("a", 1e6)
    await refund()


async def test_a_refund_after_midnight_goes_to_the_day_it_was_charged(state):
    clock = Clock(MIDNIGHT - 100)
    keeper = _keeper(state, clock)
    refund = await keeper.charge_compute("a", 10.0)
    clock.now = MIDNIGHT + 10
    await keeper.charge_compute("a", 10.0)
    await refund()  # yesterday's units: today's total stays full
    with pytest.raises(QuotaExceeded):
        await keeper.charge_compute("a", 0.1)


# -- the memory state's refund -------------------------------------------------------------------


async def test_memory_refund_clamps_at_zero_and_creates_nothing():
    state = MemoryQuotaState()
    await state.add_units("a", DAY, 2.0, budget=10.0)
    state.refund_units("a", DAY, 5.0)
    refused = await state.add_units("a", DAY, 10.5, budget=10.0)
    assert not callable(refused) and refused.used == 0.0
    state.refund_units("b", DAY, 5.0)  # never charged: nothing to take back, no negative total
    refused = await state.add_units("b", DAY, 10.5, budget=10.0)
    assert not callable(refused) and refused.used == 0.0


# -- the Redis state's refund (a Lua script, against a real redis-server) ------------------------


@pytest.fixture
def redis_state(redis_url):
    return RedisQuotaState(RedisLink(redis_url))


async def test_redis_refund_after_the_key_expired_creates_nothing(redis_state, redis_server):
    refund = await redis_state.add_units("a", DAY, 3.0, budget=10.0)
    key = redis_state.units_key("a", DAY)
    with redis_server.client() as client:
        assert client.pexpire(key, 1)
    await asyncio.sleep(0.05)
    assert callable(refund)
    await refund()
    with redis_server.client() as client:
        assert not client.exists(key)


async def test_redis_refund_clamps_at_zero_and_keeps_the_ttl(redis_state, redis_server):
    refund = await redis_state.add_units("a", DAY, 3.0, budget=10.0)
    key = redis_state.units_key("a", DAY)
    with redis_server.client() as client:
        ttl_before = client.ttl(key)
        client.set(key, "1", keepttl=True)  # the total dropped below this charge (e.g. an operator's fix)
    assert callable(refund)
    await refund()
    with redis_server.client() as client:
        assert float(client.get(key)) == 0.0
        assert 0 < client.ttl(key) <= ttl_before


async def test_redis_refund_gives_a_key_without_expiry_one(redis_state, redis_server):
    refund = await redis_state.add_units("a", DAY, 3.0, budget=10.0)
    key = redis_state.units_key("a", DAY)
    with redis_server.client() as client:
        client.persist(key)
    assert callable(refund)
    await refund()
    with redis_server.client() as client:
        assert float(client.get(key)) == 0.0
        assert client.ttl(key) > 86_400


@pytest.fixture
def persistent_redis(redis_server, tmp_path):
    # Data kept over a restart (an append-only file), as a production Redis keeps it.
    server = RedisProcess(redis_server.binary, tmp_path, persistent=True)
    server.start()
    yield server
    server.stop()


async def test_a_charge_taken_during_an_outage_is_never_refunded_from_redis(persistent_redis):
    keeper = _keeper(RedisQuotaState(RedisLink(persistent_redis.url, cooldown_s=0.1)), time.time)
    await keeper.charge_compute("a", 4.0)  # counted in Redis
    with persistent_redis.down():
        refund_in_memory = await keeper.charge_compute("a", 5.0)
    await asyncio.sleep(0.15)  # past the breaker's cooldown
    await refund_in_memory()
    with pytest.raises(QuotaExceeded) as refused:
        await keeper.charge_compute("a", 6.5)
    assert "4 of 10" in refused.value.message
