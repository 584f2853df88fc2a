"""5x burst with the operator running: steady load, then 5x for 60 s, then back to steady.

Starts the app (tiny checkpoint, capacity 2) and ``wanserve-operator local`` beside it (control
interval 2 s, stable window 10 s). Measures the service time first and sets the steady rate to
~35% of what the app can serve, so the burst (5x) overloads it. Requests arrive open-loop (fixed
rate, unique prompts, realtime lane). Reports HTTP 2xx/429/5xx counts, lost jobs (accepted but
never completed or failed), how long until the degradation tier changed (from the burst's start
and from the first moment load crossed 0.8), admitted p95 latency during the burst, and how long
after the burst the tier came back to ``full``.

    .venv/bin/python bench/burst.py [--quick] [--burst-s 60] [--interval 2.0]
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from common import (
    AUTH,
    Outcome,
    count_outcomes,
    describe_counts,
    goal_line,
    metric,
    ms,
    operator_decisions,
    operator_process,
    parse_args,
    percentile,
    run_job,
    say,
    serve_app,
    stop_process,
    unique_prompt,
)

REQUEST = {"size": "256x256", "num_frames": 9, "num_inference_steps": 4}
QUICK = {"size": "128x64", "num_frames": 5, "num_inference_steps": 2}


@dataclass
class Timeline:
    """Tier and load readings over time (seconds since the start)."""

    start: float = field(default_factory=time.monotonic)
    readings: list[tuple[float, str, float]] = field(default_factory=list)

    def first(self, after: float, predicate: object) -> float | None:
        return next((t for t, tier, load in self.readings if t >= after and predicate(tier, load)), None)  # type: ignore[operator]


async def watch(client: httpx.AsyncClient, timeline: Timeline, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            tier = (await client.get("/admin/policy")).json()["tier"]["name"]
            busy = await metric(client, "wanserve_inflight_requests") + await metric(client, "wanserve_queue_depth")
            capacity = await metric(client, "wanserve_capacity_requests") or 1.0
            timeline.readings.append((time.monotonic() - timeline.start, tier, busy / capacity))
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        await asyncio.sleep(0.25)


async def offer(client: httpx.AsyncClient, rate: float, seconds: float, request: dict[str, object],
                tasks: list[asyncio.Task[Outcome]]) -> None:
    """Open-loop arrivals at ``rate`` per second for ``seconds``."""
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < seconds:
        body = {"prompt": unique_prompt("a drone shot of waves"), **request}
        tasks.append(asyncio.create_task(run_job(client, body, timeout_s=300, poll_s=0.25)))
        sent += 1
        await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))


async def service_time(client: httpx.AsyncClient, request: dict[str, object], samples: int) -> float:
    latencies = []
    for _ in range(samples):
        outcome = await run_job(client, {"prompt": unique_prompt(), **request})
        latencies.append(outcome.latency_s or 1.0)
    return sorted(latencies)[len(latencies) // 2]


async def measure(url: str, request: dict[str, object], steady_s: float, burst_s: float, recover_s: float,
                  interval: float) -> str:
    """Runs the three phases and prints what happened; returns the figure for the goal line."""
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60, limits=limits) as client:
        seconds = await service_time(client, request, 2)
        steady = 0.35 / seconds
        say(f"service time {seconds:.2f}s -> steady {steady:.2f} req/s, burst {5 * steady:.2f} req/s")
        timeline, stop = Timeline(), asyncio.Event()
        watcher = asyncio.create_task(watch(client, timeline, stop))
        steady_jobs: list[asyncio.Task[Outcome]] = []
        burst_jobs: list[asyncio.Task[Outcome]] = []
        after_jobs: list[asyncio.Task[Outcome]] = []
        await offer(client, steady, steady_s, request, steady_jobs)
        burst_start = time.monotonic() - timeline.start
        await offer(client, 5 * steady, burst_s, request, burst_jobs)
        burst_end = time.monotonic() - timeline.start
        recovering = asyncio.create_task(offer(client, steady, recover_s, request, after_jobs))
        while not recovering.done() and (not timeline.readings or timeline.readings[-1][1] != "full"):
            await asyncio.sleep(0.5)
        recovering.cancel()
        outcomes = {name: list(await asyncio.gather(*jobs))
                    for name, jobs in (("steady", steady_jobs), ("burst", burst_jobs), ("after", after_jobs))}
        stop.set()
        await watcher
    return report(outcomes, timeline, burst_start, burst_end)


def report(outcomes: dict[str, list[Outcome]], timeline: Timeline, burst_start: float, burst_end: float) -> str:
    everything = [outcome for phase in outcomes.values() for outcome in phase]
    for phase, items in outcomes.items():
        say(f"{phase:6}: {describe_counts(count_outcomes(items))}")
    counts = count_outcomes(everything)
    changed = timeline.first(burst_start, lambda tier, _: tier != "full")
    overloaded = timeline.first(burst_start, lambda _, load: load > 0.8)
    degraded = [t for t, tier, _ in timeline.readings if tier != "full"]
    recovered = None if not degraded else timeline.first(degraded[-1], lambda tier, _: tier == "full")
    tiers = sorted({tier for _, tier, _ in timeline.readings})
    admitted = [o.latency_s for o in outcomes["burst"] if o.final == "completed" and o.latency_s is not None]
    say(f"tiers seen: {', '.join(tiers)}; peak load {max((load for *_, load in timeline.readings), default=0):.2f}")
    say(f"tier changed {fmt(changed, burst_start)} after the burst started, "
        f"{fmt(changed, overloaded)} after load first exceeded 0.8")
    say(f"admitted p95 during the burst: {ms(percentile(admitted, 95)) if admitted else 'n/a'}")
    say(f"back to full {fmt(recovered, burst_end)} after the burst ended (negative: recovered during the burst)")
    lag = None if changed is None or overloaded is None else changed - overloaded
    return (f"5xx={counts.get('5xx', 0)} lost={counts['lost']} 429={counts.get('429', 0)} "
            f"tier change {'never' if lag is None else f'{lag:.1f}s'} after load>0.8")


def fmt(moment: float | None, since: float | None) -> str:
    return "never" if moment is None or since is None else f"{moment - since:.1f}s"


def main() -> None:
    options = parse_args(__doc__, burst_s=60.0, interval=2.0)
    from serve.app.args import AppArgs, LaneArgs

    interval = 1.0 if options.quick else options.interval
    request = QUICK if options.quick else REQUEST
    steady_s, burst_s, recover_s = (2.0, 6.0, 10.0) if options.quick else (30.0, options.burst_s, 180.0)
    window = 3.0 if options.quick else 10.0
    args = AppArgs(lanes=LaneArgs(capacity=2, realtime_queue=16, batch_queue=64))
    spec = {"controlIntervalSeconds": interval, "stableWindowSeconds": window,
            "rollout": {"stableVersion": args.model_version}}
    with serve_app(args) as url, tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "operator.log"
        operator = operator_process(url, interval, spec, log)
        try:
            say(f"operator: interval {interval}s, stable window {window}s; steady {steady_s:.0f}s, "
                f"burst {burst_s:.0f}s, then steady until back to full (at most {recover_s:.0f}s)")
            figure = asyncio.run(measure(url, request, steady_s, burst_s, recover_s, interval))
        finally:
            stop_process(operator)
            say("operator decisions (last 8):\n  " + "\n  ".join(operator_decisions(log)[-8:]))
    goal_line("burst", figure, "==", f"5xx 0, lost 0, tier change <= {2 * interval:.1f}s (two intervals)")


if __name__ == "__main__":
    main()
