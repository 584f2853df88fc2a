"""Stage-split overhead: the served three-stage pipeline against one in-process diffusers call.

Served: HTTP POST /v1/videos -> ingress -> TextEncoder -> Denoiser -> Decoder (separate Ray Serve
deployments) -> follow the job's event stream (SSE) until completed -> GET the mp4. Direct: one
``diffusers.WanPipeline`` call in this process plus the same mp4 encoding. Same bench checkpoint,
params and seed per round; runs alternate (served, direct, served, ...) and the figure is the median
of served/direct.

    .venv/bin/python bench/stage_split.py [--quick] [--rounds 7]
"""

from __future__ import annotations

import asyncio
import time

import httpx
from common import (
    AUTH,
    CHEAP,
    CORES,
    bench_checkpoint,
    did_not_complete,
    failure_summary,
    goal_line,
    median,
    metric,
    parse_args,
    run_job,
    say,
    serve_app,
)

PROMPT = "a golden retriever running through a sunny park"
NEGATIVE = "blurry, low quality"
FULL = {"size": "256x256", "num_frames": 17, "num_inference_steps": 8}


def direct_seconds(pipe: object, request: dict[str, object], seed: int) -> float:
    import torch

    from serve.pipeline.video import encode_mp4, to_uint8

    width, height = (int(part) for part in str(request["size"]).split("x"))
    started = time.perf_counter()
    frames = pipe(  # type: ignore[operator]
        PROMPT, negative_prompt=NEGATIVE, height=height, width=width, num_frames=request["num_frames"],
        num_inference_steps=request["num_inference_steps"], guidance_scale=5.0,
        generator=torch.Generator().manual_seed(seed), max_sequence_length=512, output_type="np",
    ).frames[0]
    encode_mp4(to_uint8(frames), 24)
    return time.perf_counter() - started


async def served_seconds(client: httpx.AsyncClient, request: dict[str, object], seed: int) -> float | None:
    """Seconds from POST to the downloaded mp4; None if the job failed."""
    started = time.perf_counter()
    body = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "guidance_scale": 5.0, "seed": seed, **request}
    outcome = await run_job(client, body, follow="events")
    if did_not_complete(outcome):
        return None
    (await client.get(f"/v1/videos/{outcome.job_id}/content")).raise_for_status()
    return time.perf_counter() - started


async def measure(url: str, pipe: object, request: dict[str, object], rounds: int) -> list[float]:
    ratios: list[float] = []
    best = {"served": float("inf"), "direct": float("inf")}
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=300) as client:
        for seed in range(rounds + 1):
            # Alternate which goes first so drift in machine load hits both sides alike.
            if seed % 2:
                direct = direct_seconds(pipe, request, seed)
                served = await served_seconds(client, request, seed)
            else:
                served = await served_seconds(client, request, seed)
                direct = direct_seconds(pipe, request, seed)
            if served is None:
                say(f"round {seed}: the served run failed (not counted)")
                continue
            if seed == 0:
                say(f"warm-up: served {served:.2f}s, direct {direct:.2f}s (not counted)")
                continue
            ratios.append(served / direct)
            best = {"served": min(best["served"], served), "direct": min(best["direct"], direct)}
            say(f"round {seed}: served {served:.2f}s, direct {direct:.2f}s, ratio {served / direct:.3f}")
        # Where the served time goes: compute per stage call as the replicas report it.
        for stage in ("text_encoder", "denoiser", "decoder"):
            total = await metric(client, "wanserve_stage_latency_seconds_sum", stage=stage)
            calls = await metric(client, "wanserve_stage_latency_seconds_count", stage=stage)
            say(f"served {stage}: {total / max(calls, 1):.2f}s per call ({calls:.0f} calls)")
    # On a busy machine the fastest run of each side is the least disturbed one.
    served, direct = best["served"], best["direct"]
    say(f"best served {served:.2f}s / best direct {direct:.2f}s = {served / direct:.3f}")
    return ratios


def main() -> None:
    options = parse_args(__doc__, rounds=7)
    import diffusers
    import torch

    from serve.app.args import AppArgs

    torch.set_num_threads(CORES)
    request = CHEAP if options.quick else FULL
    rounds = 1 if options.quick else options.rounds
    checkpoint = bench_checkpoint()
    pipe = diffusers.WanPipeline.from_pretrained(checkpoint)
    pipe.set_progress_bar_config(disable=True)
    say(f"checkpoint {checkpoint}; request {request}, guidance 5.0; {rounds} alternating rounds")
    with serve_app(AppArgs(model_dir=str(checkpoint))) as url:
        ratios = asyncio.run(measure(url, pipe, request, rounds))
    say(failure_summary())
    if not ratios:
        goal_line("stage_split", "no served run completed", "<=", "1.10")
        return
    say(f"served/direct: median {median(ratios):.3f}, min {min(ratios):.3f}, max {max(ratios):.3f}")
    goal_line("stage_split", f"median served/direct {median(ratios):.3f}", "<=", "1.10")


if __name__ == "__main__":
    main()
