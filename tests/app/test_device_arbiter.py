"""DeviceArbiter: batch work on a device waits while realtime work is in flight on it, in this
process or in another process on this host."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from serve.app.device_arbiter import DeviceArbiter
from serve.app.priority_lock import BATCH, REALTIME

HOLD_IN_ANOTHER_PROCESS = """
import sys, time
from pathlib import Path
from serve.app.device_arbiter import DeviceArbiter
with DeviceArbiter("cpu", Path(sys.argv[1])).realtime_in_flight():
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _other_process(root, seconds):
    proc = subprocess.Popen([sys.executable, "-c", HOLD_IN_ANOTHER_PROCESS, str(root), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
    return proc


def test_realtime_work_in_this_process_pauses_batch_work(tmp_path):
    arbiter = DeviceArbiter("cpu", tmp_path)
    assert arbiter.batch_may_run()
    with arbiter.realtime_in_flight():
        assert not arbiter.batch_may_run()
    assert arbiter.batch_may_run()


def test_without_marks_the_arbiter_still_pauses_batch_work_in_its_process():
    arbiter = DeviceArbiter("cpu", None)
    with arbiter.realtime_in_flight():
        assert not arbiter.batch_may_run()
    assert arbiter.batch_may_run()


def test_realtime_work_in_another_process_pauses_batch_work_here(tmp_path):
    arbiter = DeviceArbiter("cpu", tmp_path)
    proc = _other_process(tmp_path, 30)
    try:
        assert not arbiter.batch_may_run()
    finally:
        proc.kill()
        proc.wait()


def test_another_device_does_not_pause_batch_work(tmp_path):
    with DeviceArbiter("cuda-GPU-aaaa", tmp_path).realtime_in_flight():
        assert DeviceArbiter("cuda-GPU-bbbb", tmp_path).batch_may_run()
        assert not DeviceArbiter("cuda-GPU-aaaa", tmp_path).batch_may_run()


def test_a_mark_left_by_a_dead_process_is_cleared(tmp_path):
    arbiter = DeviceArbiter("cpu", tmp_path)
    proc = _other_process(tmp_path, 30)
    proc.kill()  # killed inside the block: its mark stays behind
    proc.wait()
    assert list((tmp_path / "wanserve-device-cpu-local").iterdir())
    assert arbiter.batch_may_run()
    assert not list((tmp_path / "wanserve-device-cpu-local").iterdir())


async def test_a_batch_turn_starts_when_realtime_work_elsewhere_ends(tmp_path):
    arbiter = DeviceArbiter("cpu", tmp_path)
    proc = _other_process(tmp_path, 0.5)
    started = time.monotonic()
    async with arbiter.turn(BATCH):
        waited = time.monotonic() - started
    proc.wait()
    assert waited >= 0.3


async def test_a_realtime_turn_does_not_wait_for_realtime_work_elsewhere(tmp_path):
    arbiter = DeviceArbiter("cpu", tmp_path)
    with DeviceArbiter("cpu", tmp_path).realtime_in_flight():
        async with asyncio.timeout(1):
            async with arbiter.turn(REALTIME):
                pass


async def test_waiting_batch_work_wakes_when_told(tmp_path):
    arbiter, wake = DeviceArbiter("cpu", tmp_path), asyncio.Event()
    with arbiter.realtime_in_flight():
        waiting = asyncio.create_task(arbiter.batch_clear(wake))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        wake.set()
        assert await asyncio.wait_for(waiting, 1) is False
    assert await arbiter.batch_clear(wake) is True


@pytest.mark.parametrize("key", ["cpu", "cuda-GPU-12ab/../x"])
def test_marks_live_in_one_folder_per_device(tmp_path, key):
    with DeviceArbiter(key, tmp_path).realtime_in_flight():
        (folder,) = tmp_path.iterdir()
        assert folder.name.startswith("wanserve-device-") and "/" not in folder.name[16:]


async def test_a_request_handed_to_the_next_stage_stays_marked_for_the_handoff(tmp_path):
    arbiter, elsewhere = DeviceArbiter("cpu", tmp_path), DeviceArbiter("cpu", tmp_path)
    with arbiter.realtime_in_flight(handoff_s=0.2):
        pass
    assert not arbiter.batch_may_run() and not elsewhere.batch_may_run()
    await asyncio.sleep(0.3)
    assert arbiter.batch_may_run() and elsewhere.batch_may_run()


async def test_batch_chunks_queued_for_the_lock_wait_again_when_realtime_work_starts_elsewhere(tmp_path):
    """Batch chunks that passed the check and queued for the lock behind another chunk do not run
    while a realtime request that arrived meanwhile in another stage is in flight."""
    arbiter, elsewhere = DeviceArbiter("cpu", tmp_path), DeviceArbiter("cpu", tmp_path)
    ran: list[str] = []
    holding, release = asyncio.Event(), asyncio.Event()

    async def chunk(name: str) -> None:
        async with arbiter.turn(BATCH):
            ran.append(name)
            if name == "first":
                holding.set()
                await release.wait()

    first = asyncio.create_task(chunk("first"))
    await holding.wait()
    queued = [asyncio.create_task(chunk(name)) for name in ("second", "third")]
    await asyncio.sleep(0.05)  # both passed the check and wait for the lock
    with elsewhere.realtime_in_flight():
        release.set()
        await asyncio.sleep(0.3)
        assert ran == ["first"]
    await asyncio.wait_for(asyncio.gather(first, *queued), 5)
    assert ran == ["first", "second", "third"]


async def test_a_running_batch_unit_should_yield_to_realtime_work_waiting_for_the_lock_or_in_flight(tmp_path):
    arbiter = DeviceArbiter("cpu", tmp_path)
    assert not arbiter.batch_should_yield()
    async with arbiter.lock.hold(BATCH):  # a batch unit holds the device
        waiter = asyncio.create_task(_hold_briefly(arbiter, REALTIME))
        await asyncio.sleep(0.05)
        assert arbiter.batch_should_yield()  # a realtime turn waits for the lock
    await waiter
    assert not arbiter.batch_should_yield()
    with DeviceArbiter("cpu", tmp_path).realtime_in_flight():  # realtime work in another stage
        assert arbiter.batch_should_yield()


async def _hold_briefly(arbiter, priority):
    async with arbiter.lock.hold(priority):
        pass
