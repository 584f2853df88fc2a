"""Priority isolation: realtime p95 with the batch lane saturated, against realtime p95 when idle.

Two copies of the app run side by side in one Serve instance: ``/`` with priority lanes and
``/fifo`` with lanes disabled (plain FIFO), same capacity. Each phase sends realtime requests one
after another (unique prompts, so no cache) and takes their p95 from POST to completed; in the
loaded phase a flood keeps batch requests of the same size outstanding. Phases alternate between
the two apps; the figures are medians over rounds. The batch lane's throughput in the loaded phase
(batch videos completed per second, from the flood's start to its last completion) is printed too:
isolating realtime work must not be paid for with batch throughput.

    .venv/bin/python bench/priority.py [--quick] [--rounds 3] [--samples 8] [--backlog 12]
"""

from __future__ import annotations

import asyncio
import time

import httpx
from common import (
    AUTH,
    CHEAP,
    Outcome,
    bench_checkpoint,
    deploy_beside,
    did_not_complete,
    failure_summary,
    goal_line,
    median,
    ms,
    parse_args,
    percentile,
    run_job,
    say,
    serve_app,
    unique_prompt,
)

FULL = {"size": "128x128", "num_frames": 9, "num_inference_steps": 4}


async def realtime_p95(client: httpx.AsyncClient, request: dict[str, object], samples: int) -> float:
    latencies = []
    for _ in range(samples):
        outcome = await run_job(client, {"prompt": unique_prompt(), "priority": "realtime", **request},
                                follow="events")
        if not did_not_complete(outcome) and outcome.latency_s is not None:
            latencies.append(outcome.latency_s)
    return percentile(latencies, 95)


def settle(task: asyncio.Task[Outcome], pending: set[asyncio.Task[Outcome]], finished: list[Outcome]) -> None:
    pending.discard(task)
    if not task.cancelled() and task.exception() is None:
        finished.append(task.result())


async def with_batch_flood(
    client: httpx.AsyncClient, request: dict[str, object], backlog: int, samples: int
) -> tuple[float, list[Outcome], float]:
    """Realtime p95 while ``backlog`` batch requests stay outstanding; the flood's outcomes; its
    throughput in completed batch videos per second."""
    started = time.monotonic()
    stop = asyncio.Event()
    pending: set[asyncio.Task[Outcome]] = set()
    finished: list[Outcome] = []

    async def flood() -> None:
        while not stop.is_set():
            if len(pending) < backlog:
                body = {"prompt": unique_prompt("a drone shot of waves"), "priority": "batch", **request}
                task = asyncio.create_task(run_job(client, body, follow="events"))
                pending.add(task)
                task.add_done_callback(lambda done: settle(done, pending, finished))
            else:
                await asyncio.sleep(0.01)

    flooding = asyncio.create_task(flood())
    await asyncio.sleep(1.0)  # let the backlog build
    p95 = await realtime_p95(client, request, samples)
    stop.set()
    await flooding
    await asyncio.gather(*list(pending))
    completed = [outcome for outcome in finished if outcome.final == "completed" and outcome.latency_s is not None]
    last = max((outcome.started + (outcome.latency_s or 0.0) for outcome in completed), default=started)
    return p95, finished, len(completed) / max(last - started, 1e-9)


async def measure(urls: dict[str, str], request: dict[str, object], rounds: int, samples: int, backlog: int) -> None:
    figures: dict[tuple[str, str], list[float]] = {}
    clients = {mode: httpx.AsyncClient(base_url=url, headers=AUTH, timeout=600) for mode, url in urls.items()}
    try:
        for client in clients.values():
            await realtime_p95(client, request, 1)  # warm-up
        for number in range(rounds):
            modes = list(clients) if number % 2 == 0 else list(clients)[::-1]
            for mode in modes:
                client = clients[mode]
                idle = await realtime_p95(client, request, samples)
                started = time.monotonic()
                loaded, flood, throughput = await with_batch_flood(client, request, backlog, samples)
                rejected = sum(1 for outcome in flood if outcome.status == 429)
                figures.setdefault((mode, "idle"), []).append(idle)
                figures.setdefault((mode, "loaded"), []).append(loaded)
                figures.setdefault((mode, "batch/s"), []).append(throughput)
                say(f"round {number + 1} {mode:5}: realtime p95 idle {ms(idle)}, with batch saturated {ms(loaded)} "
                    f"(ratio {loaded / idle:.2f}; {len(flood)} batch jobs, {rejected} got 429, "
                    f"batch {throughput:.2f} videos/s, {time.monotonic() - started:.0f}s)")
    finally:
        for client in clients.values():
            await client.aclose()
    ratios = {}
    for mode in clients:
        idle, loaded = median(figures[(mode, "idle")]), median(figures[(mode, "loaded")])
        ratios[mode] = loaded / idle
        say(f"{mode:5} (median of rounds): realtime p95 idle {ms(idle)}, loaded {ms(loaded)}, "
            f"ratio {ratios[mode]:.2f}, batch throughput loaded {median(figures[(mode, 'batch/s')]):.2f} videos/s")
    say(failure_summary())
    fifo = f"{ratios['fifo']:.2f}" if "fifo" in ratios else "not run"
    figure = f"realtime p95 loaded/idle {ratios['lanes']:.2f} with lanes, {fifo} FIFO"
    goal_line("priority", figure, "<=", "1.25 with lanes")


def main() -> None:
    options = parse_args(__doc__, rounds=3, samples=8, backlog=12)
    from serve.app.args import AppArgs, LaneArgs

    request = CHEAP if options.quick else FULL
    rounds, samples, backlog = (1, 2, 3) if options.quick else (options.rounds, options.samples, options.backlog)
    checkpoint = str(bench_checkpoint())
    lanes = LaneArgs(capacity=2, realtime_queue=16, batch_queue=64, batch_max_size=4, batch_wait_s=0.1)
    say(f"request {request}; capacity 2; {rounds} rounds, {samples} realtime samples/phase, batch backlog {backlog}")
    with serve_app(AppArgs(model_dir=checkpoint, lanes=lanes)) as url:
        urls = {"lanes": url}
        if not options.quick:  # the smoke run skips the FIFO copy: deploying it costs ~15 s
            fifo_args = AppArgs(model_dir=checkpoint, lanes=lanes.model_copy(update={"enabled": False}))
            urls["fifo"] = deploy_beside(fifo_args, "fifo", "/fifo", url)
        asyncio.run(measure(urls, request, rounds, samples, backlog))


if __name__ == "__main__":
    main()
