"""Where a served video's time goes, hop by hop, against the same stages chained in this process.

Served (the cluster's shape: jobs, cache and artifacts in a real Redis): POST /v1/videos -> the job
queued and claimed by the router -> TextEncoder -> Denoiser -> Decoder (separate Ray Serve
deployments) -> artifacts stored -> job record written -> the client's event stream (SSE) says
``completed`` -> the client downloads the mp4. In-process: `serve.pipeline.stages.StagePipeline`, the
same three classes with no Serve, Redis or HTTP. Rounds alternate; figures are means per video.

The client measures what it sees (the POST's answer, the ``completed`` event, the download); the
replicas measure their stages (``wanserve_stage_latency_seconds``) and the router its own hops
(``wanserve_router_hop_seconds``); what is left is Serve's hops between the stages and the event's
way to the client.

    .venv/bin/python bench/hops.py [--quick] [--rounds 7]
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from statistics import fmean

import httpx
from common import (
    AUTH,
    CHEAP,
    CORES,
    BenchRedis,
    bench_checkpoint,
    follow_events,
    goal_line,
    metric,
    parse_args,
    say,
    serve_app,
)

PROMPT = "a golden retriever running through a sunny park"
FULL = {"size": "256x256", "num_frames": 17, "num_inference_steps": 8}
STAGES = ("text_encoder", "denoiser", "decoder")
ROUTER_HOPS = ("claim_wait", "artifact_save", "cache_write", "job_write")


@dataclass
class Timeline:
    """One served video as the client saw it, in seconds from sending the POST."""

    answered: float
    completed: float
    downloaded: float


@dataclass
class Figures:
    served: list[Timeline] = field(default_factory=list)
    in_process: list[dict[str, float]] = field(default_factory=list)


async def served_once(client: httpx.AsyncClient, request: dict[str, object], seed: int) -> Timeline:
    started = time.perf_counter()
    body = {"prompt": PROMPT, "negative_prompt": "blurry", "guidance_scale": 5.0, "seed": seed, **request}
    answer = await client.post("/v1/videos", json=body)
    answer.raise_for_status()
    answered = time.perf_counter() - started
    last = await follow_events(client, answer.json()["id"], timeout_s=300)
    if last.get("status") != "completed":
        raise RuntimeError(f"the served job did not complete: {last}")
    completed = time.perf_counter() - started
    (await client.get(last["content_url"])).raise_for_status()
    return Timeline(answered, completed, time.perf_counter() - started)


async def server_sums(client: httpx.AsyncClient) -> dict[str, tuple[float, float]]:
    """(seconds, observations) per stage and router hop, as the app's /metrics counts them so far."""
    sums: dict[str, tuple[float, float]] = {}
    for name, label, keys in (("wanserve_stage_latency_seconds", "stage", STAGES),
                              ("wanserve_router_hop_seconds", "hop", ROUTER_HOPS)):
        for key in keys:
            sums[key] = (await metric(client, f"{name}_sum", **{label: key}),
                         await metric(client, f"{name}_count", **{label: key}))
    return sums


async def measure(url: str, pipeline: object, request: dict[str, object], rounds: int) -> None:
    from serve.params import GenerationParams

    width, height = (int(part) for part in str(request["size"]).split("x"))
    params = GenerationParams(prompt=PROMPT, negative_prompt="blurry", guidance_scale=5.0, width=width,
                              height=height, num_frames=int(str(request["num_frames"])),
                              num_inference_steps=int(str(request["num_inference_steps"])))
    figures = Figures()
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=300) as client:
        await served_once(client, request, seed=10_000)  # warm-up, not counted
        pipeline.generate(params, 10_000)  # type: ignore[attr-defined]
        before = await server_sums(client)
        for seed in range(rounds):
            if seed % 2:
                figures.in_process.append(pipeline.generate(params, seed).stage_seconds)  # type: ignore[attr-defined]
                figures.served.append(await served_once(client, request, seed))
            else:
                figures.served.append(await served_once(client, request, seed))
                figures.in_process.append(pipeline.generate(params, seed).stage_seconds)  # type: ignore[attr-defined]
            say(f"round {seed + 1}: served {figures.served[-1].completed:.2f}s to completed, "
                f"in-process {sum(figures.in_process[-1].values()):.2f}s")
        after = await server_sums(client)
    report(figures, before, after, rounds)


def report(figures: Figures, before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]],
           videos: int) -> None:
    # Per video: a stage is called once per video; router hops may be observed several times per video.
    served = {key: (after[key][0] - before[key][0]) / videos for key in after}
    in_process = {stage: fmean([run[stage] for run in figures.in_process]) for stage in STAGES}
    # Means, so the rows add up to the total (the replicas' figures are means too).
    completed = fmean([timeline.completed for timeline in figures.served])
    answered = fmean([timeline.answered for timeline in figures.served])
    download = fmean([timeline.downloaded - timeline.completed for timeline in figures.served])
    accounted = answered + sum(served[key] for key in (*STAGES, *ROUTER_HOPS))
    rows: list[tuple[str, float, float | None]] = [
        ("HTTP POST (admission: access, quota, moderation, plan, cache miss, job and queue writes)", answered, None)]
    rows.append(("claim wait (accepted -> a router replica claims it)", served["claim_wait"], None))
    rows += [(f"{stage} (replica-measured; in-process alone)", served[stage], in_process[stage]) for stage in STAGES]
    rows += [(f"router: {hop.replace('_', ' ')}", served[hop], None) for hop in ROUTER_HOPS[1:]]
    rows.append(("Serve hops between stages + the completed event's way to the client (the rest)",
                 completed - accounted, None))
    say("")
    say(f"{'hop':<96} {'served s':>9} {'in-proc s':>9}")
    for name, seconds, alone in rows:
        say(f"{name:<96} {seconds:>9.3f} {'' if alone is None else f'{alone:9.3f}':>9}")
    compute = sum(in_process.values())
    say(f"{'POST -> completed event (mean)':<96} {completed:>9.3f} {compute:>9.3f}")
    say(f"{'completed event -> mp4 downloaded':<96} {download:>9.3f}")
    say(f"served/in-process: {completed / compute:.3f} (to the completed event), "
        f"{(completed + download) / compute:.3f} (to the downloaded mp4)")
    goal_line("hops", f"served (to the downloaded mp4) / in-process {(completed + download) / compute:.3f}",
              "<=", "1.10")


def main() -> None:
    options = parse_args(__doc__, rounds=7)
    import torch

    from serve.app.args import AppArgs
    from serve.pipeline.stages import StagePipeline

    torch.set_num_threads(CORES)
    request = CHEAP if options.quick else FULL
    rounds = 2 if options.quick else options.rounds
    checkpoint = bench_checkpoint()
    pipeline = StagePipeline(checkpoint)
    say(f"checkpoint {checkpoint}; request {request}, guidance 5.0; {rounds} alternating rounds")
    with BenchRedis() as redis, serve_app(AppArgs(model_dir=str(checkpoint), redis_url=redis.url)) as url:
        asyncio.run(measure(url, pipeline, request, rounds))


if __name__ == "__main__":
    main()
