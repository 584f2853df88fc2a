"""The Denoiser's step scheduler: realtime steps first, continuous batching, preemption, cancellation.

These run the real tiny Denoiser behind the scheduler; ``Recording`` only notes which requests
(by seed) each step batched, so the tests can read the schedule the scheduler chose.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from serve.app.device_arbiter import DeviceArbiter
from serve.app.messages import Cancelled
from serve.app.priority_lock import BATCH, REALTIME
from serve.app.step_scheduler import StepJob, StepScheduler, next_group
from serve.pipeline.denoiser import DenoiseRequest
from serve.pipeline.preemption import Preempted
from serve.pipeline.stages import StagePipeline, encode_request, shape_of

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


class Recording:
    """The real Denoiser; notes the seeds of every step's batch."""

    def __init__(self, denoiser):
        self._denoiser = denoiser
        self.steps: list[tuple[int, ...]] = []  # steps that ran to their end
        self.preempted: list[tuple[int, ...]] = []  # steps given up for realtime work

    def __getattr__(self, name):
        return getattr(self._denoiser, name)

    def step(self, states, yield_to=None):
        seeds = tuple(state.request.seed for state in states)
        try:
            self._denoiser.step(states, yield_to)
        except Preempted:
            self.preempted.append(seeds)
            raise
        self.steps.append(seeds)


@pytest.fixture(scope="module")
def stages(tiny_dir):
    return StagePipeline(tiny_dir)


@pytest.fixture
def denoiser(stages):
    return Recording(stages.denoiser)


@pytest.fixture
def params(small_params):
    return small_params.model_copy(update={"guidance_scale": 1.0, "num_inference_steps": 4})


@pytest.fixture
def make(stages):
    def request(params, seed):
        return DenoiseRequest(encode_request(stages.text_encoder, params), shape_of(params), seed)

    return request


def _scheduler(tmp_path=None, batch_max_size=4):
    return StepScheduler(DeviceArbiter("cpu", tmp_path), batch_max_size=batch_max_size)


def _key(params):
    return ("v1", shape_of(params).batch_key)


async def _latents(stream, progress=None):
    async for event in stream:
        if isinstance(event, tuple):
            if progress is not None:
                progress.append(event)
        else:
            return event
    raise AssertionError("the stream ended without latents")


# -- the pure choice ------------------------------------------------------------------------------


def _job(name, priority, seq, key="k"):
    return StepJob(name, priority, seq, key)


@pytest.mark.parametrize(("jobs", "expected"), [
    ([], []),
    ([_job("b1", BATCH, 0), _job("r", REALTIME, 5)], ["r"]),
    ([_job("r2", REALTIME, 3), _job("r1", REALTIME, 1)], ["r1"]),  # realtime: one at a time, first come
    ([_job("b1", BATCH, 0), _job("b2", BATCH, 1), _job("b3", BATCH, 2)], ["b1", "b2", "b3"]),
    ([_job("b1", BATCH, 0), _job("x", BATCH, 1, key="other"), _job("b2", BATCH, 2)], ["b1", "b2"]),
    ([_job(f"b{i}", BATCH, i) for i in range(6)], ["b0", "b1", "b2", "b3"]),  # batch_max_size 4
])
def test_next_group_table(jobs, expected):
    assert [job.job_id for job in next_group(jobs, batch_max_size=4)] == expected


def test_a_cancelled_job_is_never_chosen():
    first = _job("b1", BATCH, 0)
    first.cancelled = True
    assert [job.job_id for job in next_group([first, _job("b2", BATCH, 1)], 4)] == ["b2"]


# -- the scheduler on the real denoiser -------------------------------------------------------------


async def test_a_realtime_request_starts_before_the_running_batch_jobs_next_step_completes(
    denoiser, make, params, stages
):
    scheduler = _scheduler()
    long = params.model_copy(update={"num_inference_steps": 8})
    batch = scheduler.run("batch", BATCH, _key(long), denoiser, make(long, 1))
    realtime_task = None
    async for event in batch:
        if event == (2, 8):  # admitted during the batch job, after its second step
            realtime_task = asyncio.create_task(
                _latents(scheduler.run("rt", REALTIME, _key(params), denoiser, make(params, 99)))
            )
        if not isinstance(event, tuple):
            batch_latents = event
    realtime_latents = await realtime_task
    first_realtime = denoiser.steps.index((99,))
    # Steps 1 and 2 of the batch job, at most its step 3 (running when the request came), then all
    # four realtime steps in a row, then the rest of the batch job.
    assert first_realtime in (2, 3)
    assert denoiser.steps[first_realtime:first_realtime + 4] == [(99,)] * 4
    assert denoiser.steps.count((1,)) == 8
    torch.testing.assert_close(batch_latents, stages.denoiser.denoise(make(long, 1)), **TOLERANCE)
    torch.testing.assert_close(realtime_latents, stages.denoiser.denoise(make(params, 99)), **TOLERANCE)


async def test_batch_requests_join_a_running_batch_and_leave_it_when_done(denoiser, make, params, stages):
    scheduler = _scheduler(batch_max_size=3)
    longer = params.model_copy(update={"num_inference_steps": 6})
    late = {name: make(longer, seed) for name, seed in (("b", 2), ("c", 3), ("d", 4))}
    first = scheduler.run("a", BATCH, _key(params), denoiser, make(params, 1))
    progress: list[tuple[int, int]] = []
    await first.__anext__()  # a's first step, alone
    others = [
        asyncio.create_task(_latents(scheduler.run(name, BATCH, _key(longer), denoiser, request)))
        for name, request in late.items()
    ]
    latents_a = await _latents(first, progress)
    results = await asyncio.gather(*others)
    assert denoiser.steps[0] == (1,)
    joined = next(index for index, step in enumerate(denoiser.steps) if 2 in step)
    # b and c joined a at the boundary after the step that was running (d waits: size 3) ...
    assert joined <= 2 and denoiser.steps[joined] == (1, 2, 3)
    assert max(len(step) for step in denoiser.steps) == 3
    # ... and once a was done and left, d took its place.
    assert sum(step.count(1) for step in denoiser.steps) == 4
    assert (2, 3, 4) in denoiser.steps
    assert progress == [(2, 4), (3, 4), (4, 4)]
    torch.testing.assert_close(latents_a, stages.denoiser.denoise(make(params, 1)), **TOLERANCE)
    for latents, seed in zip(results, (2, 3, 4), strict=True):
        torch.testing.assert_close(latents, stages.denoiser.denoise(make(longer, seed)), **TOLERANCE)


async def test_requests_of_other_shapes_wait_for_the_running_batch(denoiser, make, params):
    scheduler = _scheduler()
    other = params.model_copy(update={"num_frames": 5})
    runs = [
        asyncio.create_task(_latents(scheduler.run("a", BATCH, _key(params), denoiser, make(params, 1)))),
        asyncio.create_task(_latents(scheduler.run("x", BATCH, _key(other), denoiser, make(other, 2)))),
        asyncio.create_task(_latents(scheduler.run("b", BATCH, _key(params), denoiser, make(params, 3)))),
    ]
    await asyncio.gather(*runs)
    assert denoiser.steps == [(1, 3)] * 4 + [(2,)] * 4


async def test_a_cancelled_batch_member_leaves_and_the_others_go_on(denoiser, make, params, stages):
    scheduler = _scheduler()
    doomed = scheduler.run("doomed", BATCH, _key(params), denoiser, make(params, 1))
    keeper = asyncio.create_task(_latents(scheduler.run("keeper", BATCH, _key(params), denoiser, make(params, 2))))
    assert await doomed.__anext__() == (1, 4)
    assert scheduler.cancel("doomed") is True
    with pytest.raises(Cancelled, match="doomed"):
        async for _ in doomed:
            pass
    latents = await keeper
    assert scheduler.jobs == 0
    assert sum(step.count(1) for step in denoiser.steps) <= 2  # at most the step running at the cancel
    assert denoiser.steps[-1] == (2,)
    torch.testing.assert_close(latents, stages.denoiser.denoise(make(params, 2)), **TOLERANCE)


async def test_a_job_cancelled_before_it_arrives_is_refused(denoiser, make, params):
    scheduler = _scheduler()
    assert scheduler.cancel("early") is False
    with pytest.raises(Cancelled):
        await _latents(scheduler.run("early", BATCH, _key(params), denoiser, make(params, 1)))
    assert denoiser.steps == []


async def test_a_caller_that_stops_listening_frees_the_place(denoiser, make, params):
    scheduler = _scheduler()
    stream = scheduler.run("gone", BATCH, _key(params), denoiser, make(params, 1))
    await stream.__anext__()
    await stream.aclose()
    for _ in range(200):
        if scheduler.jobs == 0:
            break
        await asyncio.sleep(0.01)
    assert scheduler.jobs == 0
    assert len(denoiser.steps) <= 2


async def test_a_bad_request_fails_alone(denoiser, make, params, stages):
    scheduler = _scheduler()
    bad = make(params, 1)
    bad = DenoiseRequest(bad.embeddings, bad.shape, 1, image_latents=torch.zeros((1, 48, 1, 4, 4)))
    failing = asyncio.create_task(_latents(scheduler.run("bad", BATCH, _key(params), denoiser, bad)))
    good = asyncio.create_task(_latents(scheduler.run("good", BATCH, _key(params), denoiser, make(params, 2))))
    with pytest.raises(ValueError, match="encode the image at the request's width x height"):
        await failing
    torch.testing.assert_close(await good, stages.denoiser.denoise(make(params, 2)), **TOLERANCE)


async def test_batch_steps_wait_while_realtime_work_is_in_flight_elsewhere_on_the_device(
    denoiser, make, params, tmp_path
):
    scheduler = _scheduler(tmp_path)
    decoder_side = DeviceArbiter("cpu", tmp_path)  # another stage on the same device
    with decoder_side.realtime_in_flight():
        batch = asyncio.create_task(_latents(scheduler.run("b", BATCH, _key(params), denoiser, make(params, 1))))
        await asyncio.sleep(0.3)
        assert denoiser.steps == []
        # A realtime request that arrives here meanwhile runs at once: it is the work in flight.
        await _latents(scheduler.run("r", REALTIME, _key(params), denoiser, make(params, 2)))
        assert denoiser.steps == [(2,)] * 4
    await batch
    assert denoiser.steps[4:] == [(1,)] * 4


async def test_a_batch_step_waiting_for_the_lock_waits_again_for_realtime_work_elsewhere(
    denoiser, make, params, tmp_path
):
    scheduler = _scheduler(tmp_path)
    holder_done = asyncio.Event()

    async def hold_the_lock() -> None:  # another user of this process's device (a co-located stage)
        async with scheduler.device.lock.hold(BATCH):
            await holder_done.wait()

    holder = asyncio.create_task(hold_the_lock())
    await asyncio.sleep(0.01)
    batch = asyncio.create_task(_latents(scheduler.run("b", BATCH, _key(params), denoiser, make(params, 1))))
    await asyncio.sleep(0.1)  # the batch step passed the check and waits for the lock
    with DeviceArbiter("cpu", tmp_path).realtime_in_flight():
        holder_done.set()
        await asyncio.sleep(0.3)
        assert denoiser.steps == []
    await holder
    await asyncio.wait_for(batch, 60)
    assert denoiser.steps == [(1,)] * 4


async def test_a_realtime_request_preempts_the_running_batch_step_between_two_blocks(denoiser, make, params, stages):
    """The batch step running when a realtime request arrives gives the device up before its next
    transformer block; it runs again after the realtime request, and both videos are exact."""
    import threading

    scheduler = _scheduler()
    preemptions = []
    scheduler.on_preempt = lambda: preemptions.append(1)
    inside_step, go_on = threading.Event(), threading.Event()

    def pause_in_first_block(module, args):  # holds the batch step inside its first block
        if not go_on.is_set():
            inside_step.set()
            go_on.wait(30)

    hook = stages.denoiser.transformer.blocks[0].register_forward_pre_hook(pause_in_first_block)
    try:
        batch = asyncio.create_task(_latents(scheduler.run("b", BATCH, _key(params), denoiser, make(params, 1))))
        assert await asyncio.to_thread(inside_step.wait, 30)
        realtime = asyncio.create_task(_latents(scheduler.run("r", REALTIME, _key(params), denoiser, make(params, 2))))
        await asyncio.sleep(0.05)  # the realtime request waits here now
        go_on.set()
        realtime_latents, batch_latents = await asyncio.wait_for(asyncio.gather(realtime, batch), 60)
    finally:
        hook.remove()
    assert denoiser.preempted == [(1,)] and scheduler.preempted == 1 and preemptions == [1]
    assert denoiser.steps == [(2,)] * 4 + [(1,)] * 4  # the realtime request first, then the batch job's 4
    torch.testing.assert_close(realtime_latents, stages.denoiser.denoise(make(params, 2)), rtol=0, atol=0)
    torch.testing.assert_close(batch_latents, stages.denoiser.denoise(make(params, 1)), rtol=0, atol=0)
