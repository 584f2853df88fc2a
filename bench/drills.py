"""Drills: kill a Denoiser replica mid-run, stop Redis for 20 s under load, inject errors until failover,
and the durable-work drills of issue 13 (bench/durability_drills.py): kill an Ingress replica, SIGKILL
and restart the whole ``wanserve serve``, a tenant's quota and one generation across two router replicas.

One app (tiny checkpoint, primary + backup instances, two Ingress replicas, persistent Redis
subprocess) and, for the failover drill, ``wanserve-operator local`` beside it; the restart drill runs
``wanserve serve`` as its own process first, the quota drill a second router app. Each drill prints
what it did and the counts (accepted, completed, failed with reason, lost, outcomes decided twice, and
HTTP status classes); the last line sums up.

1. kill: jobs in flight, then ``ray.kill`` of the primary Denoiser replica (found by name among
   Ray's named actors); every accepted job must end completed or failed with a clear error, and
   later requests must succeed once Serve has replaced the replica.
2. redis: steady load of cache hits and misses; Redis stopped for 20 s and started again; no 5xx,
   jobs accepted before, during and after all end, and the cache serves hits again afterwards.
3. failover: the primary instance fails every request (policy ``faults``); requests one by one,
   watching the policy after each; the operator must move traffic to the backup after the third
   consecutive error, and later requests succeed.

4. ingress, 5. restart, 6. quota, 7. flight: see bench/durability_drills.py.

    .venv/bin/python bench/drills.py [--quick] [--outage-s 20] [--only ingress,restart,quota,flight]
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from common import (
    AUTH,
    BenchRedis,
    Outcome,
    count_outcomes,
    deploy_beside,
    describe_counts,
    get_policy,
    goal_line,
    operator_decisions,
    operator_process,
    parse_args,
    put_policy,
    run_job,
    say,
    serve_app,
    stop_process,
    unique_prompt,
    wait_job,
)
from durability_drills import flight_drill, ingress_drill, keys_file_for, quota_drill, restart_drill

REQUEST = {"size": "256x256", "num_frames": 9, "num_inference_steps": 6}
CHEAP = {"size": "128x64", "num_frames": 5, "num_inference_steps": 2}


def kill_replica(deployment: str) -> str:
    """``ray.kill`` one replica of ``deployment`` (primary instance); returns the actor's name."""
    import ray

    names = [entry["name"] for entry in ray.util.list_named_actors(all_namespaces=True)
             if entry["namespace"] == "serve" and f"-primary#{deployment}#" in entry["name"]]
    if not names:
        raise RuntimeError(f"no replica of {deployment} among Ray's named actors")
    ray.kill(ray.get_actor(names[0], namespace="serve"))
    return str(names[0])


def report(title: str, outcomes: list[Outcome]) -> dict[str, int]:
    counts = count_outcomes(outcomes)
    say(f"  {title}: {describe_counts(counts)}")
    for reason in sorted({f"{o.error_code}: {o.error_message}" for o in outcomes if o.final == "failed"}):
        say(f"    failed with {reason}")
    return counts


async def in_progress(client: httpx.AsyncClient, job_ids: list[str]) -> bool:
    for job_id in job_ids:
        response = await client.get(f"/v1/videos/{job_id}")
        if response.status_code == 200 and response.json()["status"] == "in_progress":
            return True
    return False


async def kill_drill(client: httpx.AsyncClient, jobs: int) -> bool:
    say(f"== kill: {jobs} jobs ({REQUEST}), then ray.kill of the Denoiser replica while one is in progress")
    posted = [await client.post("/v1/videos", json={"prompt": unique_prompt(), **REQUEST}) for _ in range(jobs)]
    ids = [response.json()["id"] for response in posted if response.status_code == 200]
    deadline = time.monotonic() + 60
    while not await in_progress(client, ids) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    killed = kill_replica("Denoiser")
    say(f"  killed {killed} at {time.strftime('%H:%M:%S')}")
    finals = await asyncio.gather(*(wait_job(client, job_id, 300, 0.2) for job_id in ids))
    errors = [video.get("error") or {} for video in finals]
    outcomes = [Outcome(status=200, job_id=job_id, final=video["status"], error_code=error.get("code"),
                        error_message=error.get("message"))
                for job_id, video, error in zip(ids, finals, errors, strict=True)]
    outcomes += [Outcome(status=response.status_code) for response in posted if response.status_code != 200]
    counts = report("jobs in flight", outcomes)
    later = [await run_job(client, {"prompt": unique_prompt(), **CHEAP}, timeout_s=300) for _ in range(3)]
    later_counts = report("later requests", later)
    return counts["lost"] == 0 and counts.get("5xx", 0) == 0 and later_counts["completed"] == 3


async def redis_drill(client: httpx.AsyncClient, redis: BenchRedis, outage_s: float, quick: bool) -> bool:
    hot = {"prompt": "a cat playing piano on a stage", "seed": 3, **CHEAP}
    await run_job(client, hot)
    phases: dict[str, list[asyncio.Task[Outcome]]] = {"before": [], "outage": [], "after": []}
    phase = "before"
    stop = asyncio.Event()

    async def load() -> None:
        number = 0
        while not stop.is_set():
            body = hot if number % 2 else {"prompt": unique_prompt(), **CHEAP}
            phases[phase].append(asyncio.create_task(run_job(client, body, timeout_s=300, poll_s=0.2)))
            number += 1
            await asyncio.sleep(0.25)

    say(f"== redis: load of cache hits and misses (4 req/s); Redis stopped for {outage_s:.0f}s, then started")
    loading = asyncio.create_task(load())
    await asyncio.sleep(2 if quick else 5)
    phase = "outage"
    redis.stop()
    say(f"  stopped redis-server at {time.strftime('%H:%M:%S')}")
    await asyncio.sleep(outage_s)
    redis.start()
    phase = "after"
    say(f"  started redis-server at {time.strftime('%H:%M:%S')}")
    await asyncio.sleep(4 if quick else 10)
    stop.set()
    await loading
    totals: dict[str, int] = {}
    for name, tasks in phases.items():
        for key, value in report(name, list(await asyncio.gather(*tasks))).items():
            totals[key] = totals.get(key, 0) + value
    await run_job(client, hot)
    again = await client.post("/v1/videos", json=hot)
    hit = again.status_code == 200 and bool(again.json().get("cache_hit"))
    say(f"  cache hit again after Redis returned: {'yes' if hit else 'no'}")
    return totals.get("5xx", 0) == 0 and totals["lost"] == 0 and hit


async def failover_drill(client: httpx.AsyncClient, url: str, version: str, interval: float) -> int | None:
    """Returns after how many consecutive failed requests the operator moved traffic (None: never)."""
    say(f"== failover: primary of {version} fails every request; operator every {interval:.0f}s")
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "operator.log"
        spec = {"controlIntervalSeconds": interval, "rollout": {"stableVersion": version},
                "failover": {"consecutiveFailures": 3, "recoveryWindowSeconds": 3600}}
        operator = operator_process(url, interval, spec, log)
        original = await get_policy(client)
        try:
            await asyncio.sleep(3 * interval)  # the operator's first steps
            faulty = {**await get_policy(client), "faults": [{"model_version": version, "instance": "primary",
                                                              "error_rate": 1.0}]}
            await put_policy(client, faulty)
            failed_after = await until_failover(client, version, interval)
        finally:
            await put_policy(client, {**original, "faults": []})
            stop_process(operator)
        say("  operator decisions:\n    " + "\n    ".join(operator_decisions(log)[-6:]))
    return failed_after


async def until_failover(client: httpx.AsyncClient, version: str, interval: float) -> int | None:
    failures, outcomes = 0, []
    for _ in range(8):
        outcome = await run_job(client, {"prompt": unique_prompt(), **CHEAP}, timeout_s=120)
        outcomes.append(outcome)
        failures = failures + 1 if outcome.final == "failed" else 0
        await asyncio.sleep(2.5 * interval)  # give the operator two steps to see the streak
        instance = (await get_policy(client)).get("active_instance", {}).get(version, "primary")
        say(f"  request {len(outcomes)}: {outcome.final} ({outcome.error_code or 'ok'}); "
            f"{failures} consecutive failures; active instance now {instance}")
        if instance == "backup":
            later = [await run_job(client, {"prompt": unique_prompt(), **CHEAP}) for _ in range(3)]
            report("requests before failover", outcomes)
            report("requests after failover", later)
            return failures if all(o.final == "completed" for o in later) else None
    report("requests", outcomes)
    return None


DRILLS = ("kill", "redis", "failover", "ingress", "restart", "quota", "flight")


async def run(url: str, redis: BenchRedis, args: Any, quick: bool, outage_s: float,
              chosen: set[str]) -> dict[str, str]:
    from serve.app.topology import ROUTER_APP

    results: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=120) as client:
        if "kill" in chosen:
            results["kill"] = "ok" if await kill_drill(client, 3 if quick else 8) else "FAILED"
        if "ingress" in chosen:
            results["ingress"] = "ok" if await ingress_drill(client, redis.url, ROUTER_APP, 3 if quick else 8) \
                else "FAILED"
        if "flight" in chosen:
            results["flight"] = "ok" if await flight_drill(client, redis.url, ROUTER_APP) else "FAILED"
        if "redis" in chosen:
            results["redis"] = "ok" if await redis_drill(client, redis, outage_s, quick) else "FAILED"
        if "failover" in chosen:
            failed_after = await failover_drill(client, url, args.model_version, 1.0)
            results["failover"] = f"after {failed_after if failed_after is not None else 'never'}"
    if "quota" in chosen:
        quota_url, key = quota_app(args, url)
        ok = await quota_drill(quota_url, key, redis.url, "quota", "pair", 2)
        results["quota"] = "ok" if ok else "FAILED"
    return results


def quota_app(args: Any, base_url: str) -> tuple[str, str]:
    """A second router app (two Ingress replicas) where tenant ``pair`` may run two jobs at once."""
    keys_file, key = keys_file_for({"pair": {"quotas": {"max_concurrent_jobs": 2}}})
    quota_args = args.model_copy(update={"api_keys_file": keys_file, "backup_instance": False})
    return deploy_beside(quota_args, "quota", "/quota", base_url), key


def main() -> None:
    options = parse_args(__doc__, outage_s=20.0, only="")
    from serve.app.args import AppArgs, LaneArgs, StageArgs

    chosen = set(options.only.split(",")) if options.only else set(DRILLS)
    outage_s = 3.0 if options.quick else options.outage_s
    results: dict[str, str] = {}
    with BenchRedis(persistent=True) as redis:
        if "restart" in chosen:
            ok = asyncio.run(restart_drill(redis.url, 3 if options.quick else 6))
            results["restart"] = "ok" if ok else "FAILED"
        args: Any = AppArgs(redis_url=redis.url, backup_instance=True, allow_fault_injection=True,
                            cache_ttl_seconds=600, lanes=LaneArgs(capacity=2, realtime_queue=32, batch_queue=64),
                            ingress=StageArgs(min_replicas=2, max_replicas=2, max_ongoing_requests=256,
                                              max_queued_requests=-1))
        if chosen - {"restart"}:
            with serve_app(args) as url:
                results.update(asyncio.run(run(url, redis, args, options.quick, outage_s, chosen)))
    summary = ", ".join(f"{name} {results[name]}" for name in DRILLS if name in results)
    goal = ", ".join(f"{name} {'after 3' if name == 'failover' else 'ok'}" for name in DRILLS if name in results)
    goal_line("drills", summary, "==", goal)


if __name__ == "__main__":
    main()
