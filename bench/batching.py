"""Batching: batch-lane throughput with batching against batch size 1, at the same offered load.

Two copies of the app run side by side in one Serve instance: ``/`` runs up to 4 same-shape
batch-lane requests in each Denoiser step (they join and leave at step boundaries); ``/single`` has
``batch_max_size`` 1. Each round
submits the same number of batch requests (unique prompts, one shape) to one copy at once and
times until all completed; rounds alternate between the copies and the figure is the median
throughput ratio. On a CPU the transformer is already compute-bound at batch 1, so expect little;
on a GPU the goal is >= 1.5x.

    .venv/bin/python bench/batching.py [--quick] [--rounds 3] [--jobs 16]
"""

from __future__ import annotations

import asyncio
import time

import httpx
from common import (
    AUTH,
    CHEAP,
    bench_checkpoint,
    deploy_beside,
    did_not_complete,
    failure_summary,
    goal_line,
    median,
    metric,
    parse_args,
    run_job,
    say,
    serve_app,
    unique_prompt,
)

FULL = {"size": "128x128", "num_frames": 9, "num_inference_steps": 8}


async def throughput(client: httpx.AsyncClient, request: dict[str, object], jobs: int) -> float:
    """Completed videos per second for ``jobs`` batch-lane requests submitted at once."""
    started = time.perf_counter()
    bodies = [{"prompt": unique_prompt("a cat on a piano"), "priority": "batch", **request} for _ in range(jobs)]
    outcomes = await asyncio.gather(*(run_job(client, body, poll_s=0.1) for body in bodies))
    completed = sum(1 for outcome in outcomes if not did_not_complete(outcome))
    return completed / (time.perf_counter() - started)


async def denoiser_steps(client: httpx.AsyncClient) -> float:
    # The metrics board is shared by both copies; only one copy works at a time, so deltas are per round.
    await asyncio.sleep(0.5)  # reports are fire-and-forget
    return await metric(client, "wanserve_denoiser_steps_total")


async def measure(urls: dict[str, str], request: dict[str, object], rounds: int, jobs: int) -> None:
    rates: dict[str, list[float]] = {mode: [] for mode in urls}
    clients = {mode: httpx.AsyncClient(base_url=url, headers=AUTH, timeout=600) for mode, url in urls.items()}
    try:
        for client in clients.values():
            await throughput(client, request, 2)  # warm-up
        for number in range(rounds):
            for mode in list(clients) if number % 2 == 0 else list(clients)[::-1]:
                steps = await denoiser_steps(clients[mode])
                rates[mode].append(await throughput(clients[mode], request, jobs))
                steps = await denoiser_steps(clients[mode]) - steps
                say(f"round {number + 1} {mode:7}: {rates[mode][-1]:.2f} videos/s ({steps:.0f} transformer steps)")
    finally:
        for client in clients.values():
            await client.aclose()
    for mode, values in rates.items():
        say(f"{mode:7} (median of rounds): {median(values):.2f} videos/s")
    say(failure_summary())
    ratio = f"{median(rates['batched']) / median(rates['single']):.2f}x" if "single" in rates else "not run"
    goal_line("batching", f"throughput batched/size-1 {ratio} on CPU", ">=", "1.5x on a GPU")


def main() -> None:
    options = parse_args(__doc__, rounds=3, jobs=16)
    from serve.app.args import AppArgs, LaneArgs

    request = CHEAP if options.quick else FULL
    rounds, jobs = (1, 4) if options.quick else (options.rounds, options.jobs)
    checkpoint = str(bench_checkpoint())
    lanes = LaneArgs(capacity=2, batch_queue=64, batch_max_size=4, batch_wait_s=0.2)
    say(f"request {request}; {jobs} batch jobs per round, {rounds} rounds; capacity 2")
    with serve_app(AppArgs(model_dir=checkpoint, lanes=lanes)) as url:
        urls = {"batched": url}
        if not options.quick:  # the smoke run skips the size-1 copy: deploying it costs ~15 s
            single = AppArgs(model_dir=checkpoint, lanes=lanes.model_copy(update={"batch_max_size": 1}))
            urls["single"] = deploy_beside(single, "single", "/single", url)
        asyncio.run(measure(urls, request, rounds, jobs))


if __name__ == "__main__":
    main()
