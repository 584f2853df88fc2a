"""Memory: RSS of every process of the app after 20 and after 300 requests.

Starts the app (tiny checkpoint, real Redis) and sends cheap requests (64x64, 1 frame, 1 step) at
concurrency 4: unique prompts (misses, real generations) mixed with repeats (cache hits). Reads the
RSS of each process Ray started for this run (Serve controller, proxy, ingress and stage replicas,
metrics board, raylet, GCS ...) after a warm-up of 20 requests and again after 300. The figure is
the largest growth of any Serve process.

    .venv/bin/python bench/memory.py [--quick] [--requests 300]
"""

from __future__ import annotations

import asyncio
import os

import httpx
from common import AUTH, CHEAP, BenchRedis, goal_line, parse_args, rss_mb, run_job, say, serve_app, unique_prompt

CONCURRENCY = 4
HOT_PROMPTS = ["a cat playing piano", "waves on a rocky coast", "a red car in the rain"]


def processes() -> dict[int, str]:
    """pid -> title of every process under this one (what ray.init started); Ray titles actors by role."""
    import psutil

    names = {}
    for child in psutil.Process(os.getpid()).children(recursive=True):
        try:
            command = child.cmdline() or [child.name()]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        # Ray retitles actor processes ("ray::ServeReplica:wanserve:Denoiser"); others show their script.
        words = command[0].removeprefix("ray::").split(" ")
        scripts = [arg for arg in command[1:] if not arg.startswith("-")]
        if words[0].endswith(("python", "python3")) and scripts:
            words = [os.path.basename(scripts[0])]
        names[child.pid] = os.path.basename(words[0]) if "/" in words[0] else words[0]
    return names


def snapshot() -> dict[int, tuple[str, float]]:
    readings = {}
    for pid, name in processes().items():
        rss = rss_mb(pid)
        if rss is not None:
            readings[pid] = (name, rss)
    return readings


async def send(url: str, count: int, start_index: int) -> int:
    """Sends ``count`` requests; returns how many did not complete."""
    indices = iter(range(start_index, start_index + count))
    failed: list[str] = []
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=300) as client:

        async def worker() -> None:
            for index in indices:
                prompt = HOT_PROMPTS[index % 3] if index % 2 else unique_prompt()
                outcome = await run_job(client, {"prompt": prompt, "seed": 1, **CHEAP}, poll_s=0.05)
                if outcome.final != "completed":
                    failed.append(f"{outcome.status} {outcome.final} {outcome.error_message}")

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    for problem in failed[:3]:
        say(f"a request did not complete: {problem}")
    return len(failed)


def main() -> None:
    options = parse_args(__doc__, requests=300)
    from serve.app.args import AppArgs

    warm, total = (5, 20) if options.quick else (20, options.requests)
    with BenchRedis() as redis, serve_app(AppArgs(redis_url=redis.url)) as url:
        failed = asyncio.run(send(url, warm, 0))
        before = snapshot()
        failed += asyncio.run(send(url, total - warm, warm))
        after = snapshot()
    say(f"{total} requests, {failed} did not complete")
    growth: dict[str, float] = {}
    say(f"{'process':44} {'pid':>7} {f'after {warm}':>10} {f'after {total}':>10} {'growth':>8}")
    for pid, (name, rss_before) in sorted(before.items(), key=lambda item: -item[1][1]):
        if pid not in after:
            say(f"{name[:44]:44} {pid:>7} {rss_before:>8.0f}MB {'exited':>10}")
            continue
        change = (after[pid][1] - rss_before) / rss_before * 100
        say(f"{name[:44]:44} {pid:>7} {rss_before:>8.0f}MB {after[pid][1]:>8.0f}MB {change:>+7.1f}%")
        if name.startswith(("ServeReplica", "ServeController", "ProxyActor", "MetricsBoard")):
            growth[f"{name} (pid {pid})"] = change
    total_before = sum(rss for _, rss in before.values())
    total_after = sum(after[pid][1] for pid in before if pid in after)
    say(f"all processes: {total_before:.0f}MB -> {total_after:.0f}MB ({(total_after / total_before - 1) * 100:+.1f}%)")
    if not growth:
        goal_line("memory", "no Serve process found to measure", "<", "5%")
        return
    worst = max(growth, key=lambda key: growth[key])
    goal_line("memory", f"largest RSS growth {growth[worst]:+.1f}% ({worst}) from {warm} to {total} requests",
              "<", "5%")


if __name__ == "__main__":
    main()
