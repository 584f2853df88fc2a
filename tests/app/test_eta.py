"""The ETA at admission: the cost model per version, the queue simulation, and the 429 past a lane's deadline.

Pure and in process, with a clock the tests move; the estimate's error on real generations of the tiny
checkpoint is measured by bench/eta_error.py (docs/quality-ladder.md states it).
"""

from __future__ import annotations

import random

import pytest

from serve.app.admission import Admission, Ticket
from serve.app.eta import CostModel, Timeline, cost_units, estimate
from serve.app.lanes import PriorityLanes
from serve.app.service_metrics import ServiceMetrics
from serve.app.telemetry import Telemetry
from serve.artifacts import ArtifactStore, MemoryBlobStore, MemoryLedger
from serve.cache import MemoryResultCache
from serve.jobs import MemoryJobStore
from serve.moderation import Moderator
from serve.params import GenerationParams
from serve.policy import ServingPolicy
from serve.refusal import Refusal
from serve.request import VideoRequest

VERSION = "stable"
PARAMS = GenerationParams(prompt="a red fox", width=256, height=128, num_frames=9, num_inference_steps=4)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_cost_grows_with_frames_pixels_steps_and_guidance():
    base = cost_units(PARAMS)
    assert cost_units(PARAMS.model_copy(update={"num_frames": 17})) == pytest.approx(base * 5 / 3)
    assert cost_units(PARAMS.model_copy(update={"width": 512})) == pytest.approx(2 * base)
    assert cost_units(PARAMS.model_copy(update={"num_inference_steps": 8})) == pytest.approx(2 * base)
    assert cost_units(PARAMS.model_copy(update={"guidance_scale": 1.0})) == pytest.approx(base / 2)


def test_the_cost_model_fits_a_line_per_version_and_knows_nothing_before_two_jobs():
    model = CostModel()
    assert model.estimate(VERSION, 1.0) is None
    model.observe(VERSION, 1.0, 3.0)
    assert model.estimate(VERSION, 1.0) is None
    model.observe(VERSION, 3.0, 7.0)  # 1 s fixed + 2 s per unit
    assert model.estimate(VERSION, 5.0) == pytest.approx(11.0)
    assert model.estimate("distilled", 5.0) is None


def test_one_cost_seen_so_far_scales_proportionally():
    model = CostModel()
    model.observe(VERSION, 2.0, 4.0)
    model.observe(VERSION, 2.0, 6.0)
    assert model.estimate(VERSION, 4.0) == pytest.approx(10.0)


def test_the_window_forgets_old_jobs():
    model = CostModel(window=2)
    for units, seconds in ((1.0, 100.0), (1.0, 2.0), (2.0, 4.0)):
        model.observe(VERSION, units, seconds)
    assert model.estimate(VERSION, 3.0) == pytest.approx(6.0)


def _timeline(clock: Clock, capacity: int = 1, batch_slots: int = 1) -> Timeline:
    timeline = Timeline(clock, lambda: capacity, lambda: batch_slots)
    timeline.model.observe(VERSION, 1.0, 10.0)
    timeline.model.observe(VERSION, 2.0, 20.0)  # 10 s per unit
    return timeline


def test_a_job_starts_when_the_running_one_ends_and_those_ahead_of_it_have_run():
    clock = Clock()
    timeline = _timeline(clock)
    assert timeline.eta("realtime", VERSION, 1.0) is not None
    timeline.hold("a", "realtime", VERSION, 1.0)
    timeline.start("a")
    timeline.hold("b", "realtime", VERSION, 2.0)
    clock.now += 4.0
    eta = timeline.eta("realtime", VERSION, 0.5)
    assert eta is not None
    assert (eta.start - clock.now, eta.finish - clock.now) == pytest.approx((6.0 + 20.0, 31.0))


def test_realtime_work_does_not_wait_behind_queued_batch_work():
    clock = Clock()
    timeline = _timeline(clock, capacity=2, batch_slots=1)
    for job in ("b1", "b2", "b3"):
        timeline.hold(job, "batch", VERSION, 1.0)
    timeline.start("b1")
    realtime = timeline.eta("realtime", VERSION, 1.0)
    batch = timeline.eta("batch", VERSION, 1.0)
    assert realtime is not None and batch is not None
    assert realtime.start == clock.now  # the slot batch work may not take
    assert batch.start - clock.now == pytest.approx(30.0)  # b1, b2, b3 one after another on one batch slot


def test_an_unknown_version_among_the_held_jobs_means_no_eta():
    clock = Clock()
    timeline = _timeline(clock)
    timeline.hold("x", "realtime", "distilled", 1.0)
    assert timeline.eta("realtime", VERSION, 1.0) is None


def test_a_finished_job_feeds_the_cost_model_with_its_duration():
    clock = Clock()
    timeline = Timeline(clock, lambda: 1, lambda: 1)
    for job, units, seconds in (("a", 1.0, 5.0), ("b", 2.0, 9.0)):
        timeline.hold(job, "realtime", VERSION, units)
        timeline.start(job)
        clock.now += seconds
        timeline.finish(job, ok=True)
    assert timeline.model.estimate(VERSION, 3.0) == pytest.approx(13.0)
    assert timeline.eta("realtime", VERSION, 1.0) is not None


def test_the_simulation_orders_waiting_jobs_realtime_first():
    from serve.app.eta import HeldJob

    held = [(HeldJob("batch", VERSION, 1.0, 0), 10.0), (HeldJob("realtime", VERSION, 1.0, 1), 5.0)]
    eta = estimate(held, "batch", 1.0, 0.0, capacity=1, batch_slots=1)
    assert (eta.start, eta.finish) == (15.0, 16.0)


class _Intake:
    async def enqueue(self, ticket: Ticket, tenant_limit: int | None) -> None:
        return None


def _admission(timeline: Timeline, deadline: float) -> Admission:
    policy = ServingPolicy(weights={VERSION: 100.0})
    return Admission(
        versions=[VERSION], store=MemoryJobStore(), cache=MemoryResultCache(),
        artifacts=ArtifactStore(MemoryBlobStore(), MemoryLedger()),
        lanes=PriorityLanes(capacity=1, queue_limits={"realtime": 16, "batch": 16}), moderator=Moderator(),
        quotas=None, metrics=ServiceMetrics(Telemetry(), [VERSION], lambda: policy), policy=lambda: policy,
        in_flight=lambda _key: False, rng=random.Random(0), max_frame_area=1280 * 704, work=_Intake(),
        timeline=timeline, start_deadlines={"realtime": deadline, "batch": None},
    )


async def test_the_job_shows_its_estimated_start_and_finish():
    clock = Clock()
    timeline = _timeline(clock)
    ticket = await _admission(timeline, deadline=60.0).admit(VideoRequest(PARAMS), "team-a")
    eta = ticket.job.eta
    assert eta is not None
    seconds = 10.0 * cost_units(PARAMS)
    expected = (clock.now, clock.now + seconds)
    assert (eta.estimated_start_at, eta.estimated_finish_at) == pytest.approx(expected, abs=0.01)
    assert ticket.job.public().eta == eta


async def test_a_request_that_cannot_start_within_its_lanes_deadline_gets_429_with_an_honest_retry_after():
    clock = Clock()
    timeline = _timeline(clock)
    timeline.hold("long", "realtime", VERSION, 10.0)  # 100 s of work ahead
    timeline.start("long")
    clock.now += 5.0
    admission = _admission(timeline, deadline=60.0)
    with pytest.raises(Refusal) as refused:
        await admission.admit(VideoRequest(PARAMS), "team-a")
    error = refused.value
    assert (error.status, error.code) == (429, "start_deadline_exceeded")
    assert error.headers == {"Retry-After": "35"}  # 95 s left, 60 s allowed
    assert "95s" in error.message and "60s" in error.message
    batch = await admission.admit(VideoRequest(PARAMS, priority="batch"), "team-a")  # no batch deadline
    assert batch.job.eta is not None and batch.job.eta.estimated_start_at == pytest.approx(clock.now + 95.0)


def test_an_admitted_job_counts_until_another_replica_must_have_claimed_it():
    clock = Clock()
    timeline = _timeline(clock)
    timeline.admit("queued-here", "realtime", VERSION, 3.0)
    eta = timeline.eta("realtime", VERSION, 1.0)
    assert eta is not None and eta.start - clock.now == pytest.approx(30.0)
    clock.now += timeline.unclaimed_ttl_s + 1
    eta = timeline.eta("realtime", VERSION, 1.0)
    assert eta is not None and eta.start == clock.now
    timeline.admit("claimed", "realtime", VERSION, 3.0)
    timeline.hold("claimed", "realtime", VERSION, 3.0)
    clock.now += timeline.unclaimed_ttl_s + 1
    eta = timeline.eta("realtime", VERSION, 1.0)
    assert eta is not None and eta.start - clock.now == pytest.approx(30.0)


async def test_a_burst_of_admissions_queues_each_eta_behind_the_ones_before():
    clock = Clock()
    admission = _admission(_timeline(clock), deadline=60.0)
    starts = []
    for index in range(3):
        params = PARAMS.model_copy(update={"seed": index})
        ticket = await admission.admit(VideoRequest(params), "team-a")
        assert ticket.job.eta is not None
        starts.append(ticket.job.eta.estimated_start_at - clock.now)
    step = 10.0 * cost_units(PARAMS)
    assert starts == pytest.approx([0.0, step, 2 * step], abs=0.02)
