"""Quality ladder: what each degradation tier buys (seconds per video) and costs (PSNR against full quality).

Every rung is a real ``DegradationTier`` applied by the router's own ``apply_tier`` (size, frames and
steps snapped to the model's grids, step caching through diffusers' FirstBlockCache hooks, a route's
steps and guidance); the served parameters then run through the three stages in this process
(``StagePipeline``, no Ray) on the bench checkpoint, with the full-quality request's seed. PSNR
compares the served frames, resized to the full size (bilinear), with the full-quality frames over the
frames both have. Rungs alternate within each round; the seconds are each rung's median.

No distilled checkpoint exists on this machine: the "route" rung runs the bench checkpoint at the
route's steps and guidance (4 steps, no guidance), so it measures what those settings cost and save,
not a distilled model's quality, which would be far better than an undistilled one's at 4 steps.
The bench checkpoint has random weights: its PSNR orders the rungs, it does not predict how a person
would rate Wan2.2's videos.

    nice -n 10 .venv/bin/python bench/quality_ladder.py [--quick] [--rounds 3]
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from common import bench_checkpoint, goal_line, median, parse_args, say

from serve.app.routing import apply_tier
from serve.params import GenerationParams
from serve.policy import DegradationTier, TierRoute
from serve.step_cache import StepCache

PROMPT = "a golden retriever running through a sunny park"
NEGATIVE = "blurry, low quality"
FULL: dict[str, Any] = {"width": 384, "height": 224, "num_frames": 17, "num_inference_steps": 20}
QUICK: dict[str, Any] = {"width": 128, "height": 64, "num_frames": 5, "num_inference_steps": 4}
SEED = 7


@dataclass(frozen=True)
class Rung:
    tier: DegradationTier
    note: str


def ladder(request: GenerationParams) -> list[Rung]:
    steps = request.num_inference_steps
    half_area = f"{request.width // 2 // 32 * 32 or 32}x{request.height // 2 // 32 * 32 or 32}"
    return [
        Rung(DegradationTier(name="full"), "as asked"),
        Rung(DegradationTier(name="cache-0.05", level=1, step_cache=StepCache(threshold=0.05)),
             "FirstBlockCache, threshold 0.05"),
        Rung(DegradationTier(name="cache-0.2", level=1, step_cache=StepCache(threshold=0.2)),
             "FirstBlockCache, threshold 0.2"),
        Rung(DegradationTier(name="half-steps", level=2, max_steps=max(1, steps // 2)), f"at most {steps // 2} steps"),
        Rung(DegradationTier(name="reduced", level=3, max_size=half_area, max_steps=max(1, steps // 2)),
             f"at most {half_area}, {steps // 2} steps"),
        Rung(DegradationTier(name="route-4-step", level=4, route=TierRoute(model_version="bench", num_inference_steps=4,
                                                                             guidance_scale=1.0)),
             "a route's 4 steps, guidance 1 (stand-in for a distilled version)"),
    ]


def served(request: GenerationParams, rung: Rung) -> GenerationParams:
    route = rung.tier.route
    params, _ = apply_tier(request, rung.tier, "realtime", "bench", route)
    return params


def psnr(reference: np.ndarray, frames: np.ndarray) -> float:
    """PSNR (dB) of ``frames`` [F, H, W, 3] in 0..1, resized to ``reference``'s size, over the common frames."""
    import torch

    count = min(len(reference), len(frames))
    ref = torch.from_numpy(reference[:count]).permute(0, 3, 1, 2).float()
    got = torch.from_numpy(frames[:count]).permute(0, 3, 1, 2).float()
    if got.shape[-2:] != ref.shape[-2:]:
        got = torch.nn.functional.interpolate(got, size=ref.shape[-2:], mode="bilinear", align_corners=False)
    mse = float(((ref.clamp(0, 1) - got.clamp(0, 1)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def main() -> None:
    args = parse_args(__doc__, rounds=3)
    from serve.pipeline.stages import StagePipeline

    shape = QUICK if args.quick else FULL
    rounds = 1 if args.quick else args.rounds
    request = GenerationParams(prompt=PROMPT, negative_prompt=NEGATIVE, seed=SEED, **shape)
    pipeline = StagePipeline(bench_checkpoint())
    rungs = ladder(request)
    say(f"bench checkpoint, request {request.size} x {request.num_frames} frames x {request.num_inference_steps} "
        f"steps, guidance {request.guidance_scale}, seed {SEED}; {rounds} round(s)")
    pipeline.generate(served(request, rungs[0]), SEED)  # warm up the kernels and the text encoder
    seconds: dict[str, list[float]] = {rung.tier.name: [] for rung in rungs}
    frames: dict[str, np.ndarray] = {}
    for _ in range(rounds):
        for rung in rungs:
            started = time.perf_counter()
            video = pipeline.generate(served(request, rung), SEED)
            seconds[rung.tier.name].append(time.perf_counter() - started)
            frames[rung.tier.name] = video.frames
    full_s = median(seconds["full"])
    say("")
    say("| tier | what it serves | served | s / video | speed-up | PSNR vs full (dB) |")
    say("|---|---|---|---:|---:|---:|")
    best = 1.0
    for rung in rungs:
        name = rung.tier.name
        params = served(request, rung)
        what = (f"{params.size} x {params.num_frames} f x {params.num_inference_steps} steps, "
                f"cfg {params.guidance_scale:g}")
        quality = psnr(frames["full"], frames[name])
        speedup = full_s / median(seconds[name])
        if name != "full":
            best = max(best, speedup)
        shown = "identical" if quality == float("inf") else f"{quality:.1f}"
        say(f"| {name} | {rung.note} | {what} | {median(seconds[name]):.2f} | {speedup:.2f}x | {shown} |")
    say("")
    goal_line("quality_ladder", f"the cheapest rung is {best:.2f}x faster than full quality", ">", "1x")


if __name__ == "__main__":
    main()
