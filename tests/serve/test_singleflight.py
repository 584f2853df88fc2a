"""Single flight: one execution per key in flight, its outcome shared by every caller."""

from __future__ import annotations

import asyncio

import pytest

from serve.singleflight import SingleFlight

pytestmark = pytest.mark.asyncio(loop_scope="session")


class Generation:
    """A factory that counts its calls and finishes when the test releases it."""

    def __init__(self, result: str = "video", error: Exception | None = None) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.result = result
        self.error = error

    async def __call__(self) -> str:
        self.calls += 1
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return self.result


async def test_concurrent_callers_of_one_key_share_one_execution() -> None:
    flight: SingleFlight[str] = SingleFlight()
    gen = Generation()
    callers = [asyncio.create_task(flight.run("k", gen)) for _ in range(10)]
    await asyncio.sleep(0)
    gen.release.set()
    assert await asyncio.gather(*callers) == ["video"] * 10
    assert gen.calls == 1


async def test_exception_reaches_every_caller() -> None:
    flight: SingleFlight[str] = SingleFlight()
    gen = Generation(error=RuntimeError("denoiser died"))
    callers = [asyncio.create_task(flight.run("k", gen)) for _ in range(5)]
    await asyncio.sleep(0)
    gen.release.set()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(o, RuntimeError) and str(o) == "denoiser died" for o in outcomes)
    assert gen.calls == 1


async def test_key_is_forgotten_once_done_so_the_next_call_runs_again() -> None:
    flight: SingleFlight[str] = SingleFlight()
    gen = Generation()
    gen.release.set()
    await flight.run("k", gen)
    assert "k" not in flight and len(flight) == 0
    await flight.run("k", gen)
    assert gen.calls == 2


async def test_key_is_forgotten_after_a_failure() -> None:
    flight: SingleFlight[str] = SingleFlight()
    gen = Generation(error=ValueError("bad"))
    gen.release.set()
    with pytest.raises(ValueError):
        await flight.run("k", gen)
    assert "k" not in flight


async def test_different_keys_run_separately() -> None:
    flight: SingleFlight[str] = SingleFlight()
    a, b = Generation("a"), Generation("b")
    runs = [asyncio.create_task(flight.run("a", a)), asyncio.create_task(flight.run("b", b))]
    await asyncio.sleep(0)
    a.release.set()
    b.release.set()
    assert await asyncio.gather(*runs) == ["a", "b"]
    assert (a.calls, b.calls) == (1, 1)


async def test_join_without_a_flight_returns_none() -> None:
    flight: SingleFlight[str] = SingleFlight()
    assert flight.join("k") is None


async def test_join_gives_the_result_of_the_flight_in_progress() -> None:
    flight: SingleFlight[str] = SingleFlight()
    gen = Generation()
    leader = asyncio.create_task(flight.run("k", gen))
    await asyncio.sleep(0)
    joined = flight.join("k")
    assert joined is not None
    gen.release.set()
    assert await joined == "video"
    assert await leader == "video"
    assert gen.calls == 1


async def test_cancelling_the_first_caller_does_not_cancel_the_others() -> None:
    flight: SingleFlight[str] = SingleFlight()
    gen = Generation()
    first = asyncio.create_task(flight.run("k", gen))
    second = asyncio.create_task(flight.run("k", gen))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    gen.release.set()
    assert await second == "video"
    assert first.cancelled()
    assert gen.calls == 1
