"""The ledger of references, memory and Redis alike: who holds which key, until when, and who deletes it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from serve.artifacts import ArtifactLedger, ArtifactRef, MemoryLedger, RedisLedger
from serve.redis_link import RedisLink

on_session_loop = pytest.mark.asyncio(loop_scope="session")

KEY = ArtifactRef.of("t/acme", b"video one", "video/mp4").key
OTHER = ArtifactRef.of("t/acme", b"video two", "video/mp4").key
DOOM_TTL = 60.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest_asyncio.fixture(params=["memory", "redis"], loop_scope="session")
async def ledger(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[ArtifactLedger]:
    if request.param == "memory":
        yield MemoryLedger(clock=clock, doom_ttl_s=DOOM_TTL)
        return
    link = RedisLink(request.getfixturevalue("redis_url"))
    yield RedisLedger(link, clock=clock, doom_ttl_s=DOOM_TTL)
    await link.aclose()


def later(clock: FakeClock, seconds: float = 3600) -> float:
    return clock.now + seconds


@on_session_loop
async def test_detach_is_true_only_for_the_last_live_reference(ledger: ArtifactLedger, clock: FakeClock) -> None:
    assert await ledger.attach(KEY, "job-1", "acme", 10, later(clock))
    assert await ledger.attach(KEY, "job-2", "globex", 10, later(clock))
    assert await ledger.detach(KEY, "job-1") is False
    assert await ledger.detach(KEY, "job-1") is False  # twice is nothing
    assert await ledger.detach(KEY, "job-2") is True
    assert await ledger.references(KEY) == []


@on_session_loop
async def test_detach_with_only_expired_references_left_is_the_last(ledger: ArtifactLedger, clock: FakeClock) -> None:
    await ledger.attach(KEY, "job-1", "acme", 10, later(clock, 60))
    await ledger.attach(KEY, "job-2", "acme", 10, later(clock, 60))
    clock.now += 120
    assert await ledger.detach(KEY, "job-2") is True


@on_session_loop
async def test_detach_of_an_unknown_job_or_key_is_false(ledger: ArtifactLedger, clock: FakeClock) -> None:
    await ledger.attach(KEY, "job-1", "acme", 10, later(clock))
    assert await ledger.detach(KEY, "job-9") is False
    assert await ledger.detach(OTHER, "job-1") is False
    assert [ref.job_id for ref in await ledger.references(KEY)] == ["job-1"]


@on_session_loop
async def test_a_doomed_key_refuses_references_until_its_blob_is_forgotten(
    ledger: ArtifactLedger, clock: FakeClock
) -> None:
    await ledger.attach(KEY, "job-1", "acme", 10, later(clock))
    assert await ledger.detach(KEY, "job-1")
    assert await ledger.attach(KEY, "job-2", "acme", 10, later(clock)) is False
    assert await ledger.references(KEY) == [] and await ledger.usage("acme") == 0
    await ledger.forget(KEY)
    assert await ledger.attach(KEY, "job-2", "acme", 10, later(clock)) is True


@on_session_loop
async def test_a_doom_mark_whose_deleter_died_lapses_and_sweep_hands_the_key_out_again(
    ledger: ArtifactLedger, clock: FakeClock
) -> None:
    await ledger.attach(KEY, "job-1", "acme", 10, later(clock))
    assert await ledger.detach(KEY, "job-1")
    assert await ledger.sweep(clock.now) == []  # its deleter is still at work
    clock.now += DOOM_TTL + 1
    assert await ledger.sweep(clock.now) == [KEY]
    assert await ledger.attach(KEY, "job-2", "acme", 10, later(clock)) is False  # marked again for this sweeper


@on_session_loop
async def test_reattaching_a_job_replaces_its_reference(ledger: ArtifactLedger, clock: FakeClock) -> None:
    await ledger.attach(KEY, "job-1", "acme", 10, later(clock, 60))
    await ledger.attach(KEY, "job-1", "acme", 10, later(clock, 600))
    assert await ledger.usage("acme") == 10
    clock.now += 120
    assert await ledger.usage("acme") == 10
    assert [ref.expires_at for ref in await ledger.references(KEY)] == [pytest.approx(clock.now - 120 + 600)]


@on_session_loop
async def test_usage_sums_a_tenants_live_references_across_keys(ledger: ArtifactLedger, clock: FakeClock) -> None:
    await ledger.attach(KEY, "job-1", "acme", 100, later(clock, 60))
    await ledger.attach(KEY, "job-2", "acme", 100, later(clock, 600))
    await ledger.attach(OTHER, "job-2", "acme", 7, later(clock, 600))
    await ledger.attach(OTHER, "job-3", "globex", 7, later(clock, 600))
    assert await ledger.usage("acme") == 207 and await ledger.usage("globex") == 7
    clock.now += 61
    assert await ledger.usage("acme") == 107
    await ledger.detach(OTHER, "job-2")
    assert await ledger.usage("acme") == 100
    clock.now += 600
    assert await ledger.usage("acme") == 0 and await ledger.usage("globex") == 0


@on_session_loop
async def test_sweep_takes_only_keys_whose_every_reference_expired(ledger: ArtifactLedger, clock: FakeClock) -> None:
    await ledger.attach(KEY, "job-1", "acme", 10, later(clock, 60))
    await ledger.attach(OTHER, "job-2", "acme", 10, later(clock, 60))
    await ledger.attach(OTHER, "job-3", "acme", 10, later(clock, 600))
    clock.now += 61
    assert await ledger.sweep(clock.now) == [KEY]
    assert await ledger.sweep(clock.now) == []
    assert [ref.job_id for ref in await ledger.references(OTHER)] == ["job-3"]


@on_session_loop
async def test_a_reference_that_already_expired_is_refused(ledger: ArtifactLedger, clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="future"):
        await ledger.attach(KEY, "job-1", "acme", 10, clock.now)


@on_session_loop
async def test_of_two_jobs_detaching_at_once_exactly_one_deletes(ledger: ArtifactLedger, clock: FakeClock) -> None:
    for job in range(20):
        await ledger.attach(KEY, f"job-{job}", "acme", 10, later(clock))
    results = await asyncio.gather(*(ledger.detach(KEY, f"job-{job}") for job in range(20)))
    assert results.count(True) == 1
    assert await ledger.usage("acme") == 0


@on_session_loop
async def test_a_postponed_delete_lets_jobs_attach_at_once_and_sweep_retries_it(
    ledger: ArtifactLedger, clock: FakeClock
) -> None:
    await ledger.attach(KEY, "job-1", "acme", 10, later(clock))
    await ledger.attach(OTHER, "job-1", "acme", 10, later(clock))
    assert await ledger.detach(KEY, "job-1") and await ledger.detach(OTHER, "job-1")
    await ledger.postpone(KEY)  # their deletes failed
    await ledger.postpone(OTHER)
    assert await ledger.attach(OTHER, "job-2", "acme", 10, later(clock)) is True  # in use again: keep it
    assert await ledger.sweep(clock.now) == [KEY]
    assert await ledger.sweep(clock.now) == []
    assert await ledger.attach(KEY, "job-3", "acme", 10, later(clock)) is False  # the sweeper is deleting it
