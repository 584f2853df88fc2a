"""Cache hits over HTTP: p50/p99 latency and throughput at concurrency 8, against a floor.

The floor is a trivial Ray Serve deployment (FastAPI ingress, like ours) answering a constant video
object on the same path shape (``POST /floor/v1/videos``) in the same Serve instance, so the ratio
is what the cache path (moderation, routing, cache key, Redis GET, job record, content copy) adds
to Serve's own HTTP cost. A second floor route reads the JSON body it is sent, as the create route
must (in Serve a replica fetches a request's body from the proxy with an actor call); its ratio is
printed too, the goal line stays against the first floor. Real Redis (a redis-server subprocess).
Rounds alternate the order of the three; figures are medians over rounds.

    .venv/bin/python bench/cache_hits.py [--quick] [--rounds 5] [--requests 400]
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from common import (
    AUTH,
    CHEAP,
    BenchRedis,
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
)

CONCURRENCY = 8
BODY = {"prompt": "a cat playing piano on a stage under warm lights", "seed": 7, **CHEAP}
VIDEO = {"id": "video_floor", "object": "video", "model": "floor", "status": "completed", "progress": 100,
         "created_at": 0, "size": "64x64", "seconds": "0.04"}


def deploy_floor() -> None:
    from fastapi import FastAPI
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    floor = FastAPI()

    async def create_reading_the_body(request: Request) -> JSONResponse:
        # Reading a body is a call back from the replica to Serve's proxy: Serve's cost, not the cache's.
        await request.json()
        return JSONResponse(VIDEO)

    # A plain Starlette route: it needs no annotations resolved in the replica.
    floor.add_route("/body/v1/videos", create_reading_the_body, methods=["POST"])

    @serve.deployment(name="Floor", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
    @serve.ingress(floor)
    class Floor:
        @floor.post("/v1/videos")
        async def create(self) -> dict[str, Any]:
            return VIDEO

    serve.run(Floor.bind(), name="floor", route_prefix="/floor", blocking=False)  # type: ignore[attr-defined]


async def one_round(client: httpx.AsyncClient, path: str, requests: int) -> tuple[list[float], float]:
    """Latencies of ``requests`` POSTs sent by CONCURRENCY workers, and requests per second."""
    latencies: list[float] = []
    remaining = iter(range(requests))

    async def worker() -> None:
        for _ in remaining:
            started = time.perf_counter()
            response = await client.post(path, json=BODY)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200 or (path == "/v1/videos" and not response.json().get("cache_hit")):
                raise RuntimeError(f"{path} answered {response.status_code}: {response.text[:200]}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return latencies, requests / (time.perf_counter() - started)


async def measure(url: str, rounds: int, requests: int) -> None:
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60, limits=limits) as client:
        for _ in range(3):  # the generation that fills the cache; retried if it failed
            if not did_not_complete(await run_job(client, BODY)):
                break
        say(failure_summary())
        await one_round(client, "/floor/v1/videos", requests // 4)
        await one_round(client, "/v1/videos", requests // 4)
        p50s: dict[str, list[float]] = {"hit": [], "floor": [], "floor+body": []}
        p99s: dict[str, list[float]] = {"hit": [], "floor": [], "floor+body": []}
        rates: dict[str, list[float]] = {"hit": [], "floor": [], "floor+body": []}
        for number in range(rounds):
            order = [("hit", "/v1/videos"), ("floor", "/floor/v1/videos"), ("floor+body", "/floor/body/v1/videos")]
            for kind, path in order[number % 3:] + order[:number % 3]:
                latencies, rate = await one_round(client, path, requests)
                p50s[kind].append(percentile(latencies, 50))
                p99s[kind].append(percentile(latencies, 99))
                rates[kind].append(rate)
                say(f"round {number + 1} {kind:10}: p50 {ms(p50s[kind][-1])}, p99 {ms(p99s[kind][-1])}, "
                    f"{rate:.0f} req/s")
    for kind in ("hit", "floor", "floor+body"):
        say(f"{kind:10} (median of rounds): p50 {ms(median(p50s[kind]))}, p99 {ms(median(p99s[kind]))}, "
            f"{median(rates[kind]):.0f} req/s")
    ratio = median(p50s["hit"]) / median(p50s["floor"])
    say(f"throughput hit/floor: {median(rates['hit']) / median(rates['floor']):.2f}")
    say(f"p50 hit/(floor that reads the body): {median(p50s['hit']) / median(p50s['floor+body']):.2f}")
    goal_line("cache_hits", f"p50 hit/floor {ratio:.2f}", "<=", "1.5")


def main() -> None:
    options = parse_args(__doc__, rounds=5, requests=400)
    from serve.app.args import AppArgs

    rounds, requests = (1, 40) if options.quick else (options.rounds, options.requests)
    say(f"concurrency {CONCURRENCY}, {rounds} rounds of {requests} requests per side")
    with BenchRedis() as redis, serve_app(AppArgs(redis_url=redis.url)) as url:
        deploy_floor()
        asyncio.run(measure(url, rounds, requests))


if __name__ == "__main__":
    main()
