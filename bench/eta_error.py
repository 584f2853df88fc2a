"""ETA error: how far the admission's estimated start and finish are from what happens, on the tiny checkpoint.

The router's own ``Timeline`` (serve/app/eta.py) is fed as a replica feeds it: every job is held when
it arrives, started when it takes the (single) slot, finished when its video is done, and a finished
job's duration refits the version's cost model. First ``warmup`` jobs of assorted sizes, frames, steps
and guidance run one by one to fit it; then a burst of ``burst`` assorted jobs arrives at once, each
gets its ETA at admission (behind the ones before it), and they run one after another through the three
stages in this process (``StagePipeline``, no Ray). The figures: the mean absolute error of the
estimated start and finish, in seconds and relative to the job's actual time in the system.

    nice -n 10 .venv/bin/python bench/eta_error.py [--quick] [--burst 12]
"""

from __future__ import annotations

import random
import time

from common import goal_line, median, parse_args, say

from serve.app.eta import Timeline, cost_units
from serve.params import GenerationParams

VERSION = "tiny"
SIZES = [(64, 64), (128, 64), (128, 128), (256, 128), (256, 256)]
FRAMES = [1, 5, 9, 17]
STEPS = [2, 4, 8]


def assorted(rng: random.Random, index: int) -> GenerationParams:
    width, height = rng.choice(SIZES)
    return GenerationParams(prompt=f"a fox crossing a river, take {index}", negative_prompt="blurry", width=width,
                            height=height, num_frames=rng.choice(FRAMES), num_inference_steps=rng.choice(STEPS),
                            guidance_scale=rng.choice([1.0, 5.0]), seed=index)


def main() -> None:
    args = parse_args(__doc__, warmup=10, burst=12)
    from serve.pipeline.checkpoint import tiny_checkpoint_dir
    from serve.pipeline.stages import StagePipeline

    warmup, burst = (3, 3) if args.quick else (args.warmup, args.burst)
    rng = random.Random(18)
    pipeline = StagePipeline(tiny_checkpoint_dir())
    timeline = Timeline(time.time, lambda: 1, lambda: 1)
    pipeline.generate(assorted(rng, 999), 0)  # warm up
    for index in range(warmup):
        params = assorted(rng, index)
        job = f"warm-{index}"
        timeline.hold(job, "realtime", VERSION, cost_units(params))
        timeline.start(job)
        pipeline.generate(params, index)
        timeline.finish(job, ok=True)
        say(f"  warm-up {params.size} x {params.num_frames} x {params.num_inference_steps}, cfg "
            f"{params.guidance_scale:g}: {cost_units(params):.3f} units")
    fit = timeline.model.fit(VERSION)
    assert fit is not None
    say(f"fitted on {warmup} jobs: {fit.base:.3f} s + {fit.per_unit:.4f} s per unit")

    jobs = [(f"job-{index}", assorted(rng, 100 + index)) for index in range(burst)]
    arrived = time.time()
    estimates = {}
    for job, params in jobs:
        eta = timeline.eta("realtime", VERSION, cost_units(params))
        assert eta is not None
        estimates[job] = eta
        timeline.hold(job, "realtime", VERSION, cost_units(params))
    start_errors, finish_errors, relative = [], [], []
    say("| job | size x frames x steps, cfg | est. start | start | est. finish | finish |")
    say("|---|---|---:|---:|---:|---:|")
    for job, params in jobs:
        started = time.time()
        timeline.start(job)
        pipeline.generate(params, params.seed or 0)
        finished = time.time()
        timeline.finish(job, ok=True)
        eta = estimates[job]
        start_errors.append(abs(eta.start - started))
        finish_errors.append(abs(eta.finish - finished))
        relative.append(abs(eta.finish - finished) / max(finished - arrived, 1e-6))
        say(f"| {job} | {params.size} x {params.num_frames} x {params.num_inference_steps}, {params.guidance_scale:g} "
            f"| {eta.start - arrived:.2f} | {started - arrived:.2f} | {eta.finish - arrived:.2f} "
            f"| {finished - arrived:.2f} |")
    say("")
    say(f"start: mean absolute error {sum(start_errors) / burst:.2f} s; finish: mean absolute error "
        f"{sum(finish_errors) / burst:.2f} s, median {median(relative) * 100:.0f}% of the time in the system "
        f"(max {max(relative) * 100:.0f}%)")
    goal_line("eta_error", f"median finish error {median(relative) * 100:.0f}% of the job's time in the system",
              "<", "25%")


if __name__ == "__main__":
    main()
