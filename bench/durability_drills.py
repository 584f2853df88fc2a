"""The durable-work drills of issue 13, run by ``bench/drills.py`` (``make drill``); each prints its counts.

- ingress: jobs in flight, then ``ray.kill`` of the Ingress replica that holds the most of them (Serve
  starts another); every job must end completed, and the queue's log of outcome decisions
  (``complete_once``) must name each job once.
- restart: ``wanserve serve`` (driver and its local Ray) SIGKILLed mid-run and started again on the
  same Redis; every accepted job must end (completed, or failed with a reason) within a bound.
- quota: a second router app with two Ingress replicas; a tenant with ``max_concurrent_jobs: 2``
  sends 8 jobs at once: at most 2 accepted, never more than 2 unfinished in the queue.
- flight: the same prompt sent 8 times at once to two Ingress replicas: one Denoiser run, one video.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from common import REPO, Outcome, count_outcomes, describe_counts, metric, say, unique_prompt, wait_job, wait_ready

from serve.local_redis import free_port

SLOW = {"size": "256x256", "num_frames": 9, "num_inference_steps": 12}


def keys_file_for(tenants: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """A keys file where each of ``tenants`` (with its settings) holds one new key; returns (path, that key)."""
    import yaml

    from serve.tenancy import generate_key, hash_key

    key = generate_key()
    path = Path(tempfile.mkdtemp(prefix="wanserve-drill-keys-")) / "api-keys.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "tenants": {
        name: {**settings, "key_hashes": [hash_key(key)]} for name, settings in tenants.items()}}))
    return str(path), key


def queue_prefix(app: str) -> str:
    """The router app's work-queue keys (serve/app/ingress.py)."""
    return f"wanserve:{{work:{app}}}"


def decisions(redis_url: str, app: str) -> Counter[str]:
    """Outcome decisions per job id, from the queue's capped log of ``complete_once``."""
    import redis

    with redis.Redis.from_url(redis_url) as client:
        return Counter(fields[b"job"].decode() for _, fields in client.xrange(f"{queue_prefix(app)}:finished"))


def holders(redis_url: str, app: str) -> Counter[int]:
    """Jobs each Ingress process holds now (consumer names are ``host:pid``)."""
    import redis

    held: Counter[int] = Counter()
    with redis.Redis.from_url(redis_url) as client:
        for lane in ("realtime", "batch"):
            stream = f"{queue_prefix(app)}:lane:{lane}"
            if client.exists(stream):
                for consumer in client.xinfo_consumers(stream, "routers"):
                    held[int(consumer["name"].decode().rsplit(":", 1)[1])] += int(consumer["pending"])
    return held


def ingress_replicas(app: str) -> dict[int, Any]:
    """The app's Ingress replica actors by process id."""
    import ray

    names = [entry["name"] for entry in ray.util.list_named_actors(all_namespaces=True)
             if entry["namespace"] == "serve" and f"{app}#Ingress#" in entry["name"]]
    actors = [ray.get_actor(name, namespace="serve") for name in names]
    return {int(ray.get(actor.__ray_call__.remote(lambda _: os.getpid()))): actor for actor in actors}


def report(title: str, outcomes: list[Outcome], decided: Counter[str] | None = None) -> dict[str, int]:
    counts = count_outcomes(outcomes)
    if decided is not None:
        ids = [o.job_id for o in outcomes if o.job_id is not None]
        counts["decided_twice"] = sum(1 for job_id in ids if decided[job_id] > 1)
        counts["decided_never"] = sum(1 for job_id in ids if decided[job_id] == 0)
    say(f"  {title}: {describe_counts(counts)}")
    for reason in sorted({f"{o.error_code}: {o.error_message}" for o in outcomes if o.final == "failed"}):
        say(f"    failed with {reason}")
    return counts


async def finals(client: httpx.AsyncClient, ids: list[str], timeout_s: float) -> list[Outcome]:
    videos = await asyncio.gather(*(wait_job(client, job_id, timeout_s, 0.2) for job_id in ids))
    return [Outcome(status=200, job_id=job_id, final=video["status"],
                    error_code=(video.get("error") or {}).get("code"),
                    error_message=(video.get("error") or {}).get("message"))
            for job_id, video in zip(ids, videos, strict=True)]


async def until_in_progress(client: httpx.AsyncClient, ids: list[str], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for job_id in ids:
            response = await client.get(f"/v1/videos/{job_id}")
            if response.status_code == 200 and response.json()["status"] == "in_progress":
                return
        await asyncio.sleep(0.05)


async def ingress_drill(client: httpx.AsyncClient, redis_url: str, app: str, jobs: int) -> bool:
    import ray

    say(f"== ingress: {jobs} jobs ({SLOW}), then ray.kill of the Ingress replica holding the most of them")
    posted = [await client.post("/v1/videos", json={"prompt": unique_prompt(), **SLOW}) for _ in range(jobs)]
    ids = [response.json()["id"] for response in posted if response.status_code == 200]
    await until_in_progress(client, ids)
    held, replicas = holders(redis_url, app), ingress_replicas(app)
    pid = max(replicas, key=lambda candidate: held.get(candidate, 0))
    ray.kill(replicas[pid])
    killed_at = time.monotonic()
    say(f"  killed the Ingress replica of pid {pid}, holding {held.get(pid, 0)} of the jobs "
        f"(the other held {sum(held.values()) - held.get(pid, 0)})")
    outcomes = await finals(client, ids, 300)
    say(f"  last job ended {time.monotonic() - killed_at:.0f}s after the kill")
    outcomes += [Outcome(status=response.status_code) for response in posted if response.status_code != 200]
    counts = report("jobs in flight", outcomes, decisions(redis_url, app))
    return (counts["completed"] == jobs and counts["lost"] == 0 and counts["decided_twice"] == 0)


def _serve_process(redis_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "WANSERVE_REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        # Its own session: the SIGKILL reaches the driver and the Ray processes it started, nothing else.
        return subprocess.Popen([sys.executable, "-m", "serve.cli", "serve", "--port", str(port)], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _kill_session(proc: subprocess.Popen[bytes]) -> int:
    """SIGKILL every process of ``proc``'s session (the driver and its Ray); returns how many."""
    session = os.getsid(proc.pid)
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == session:  # stat field 6: the session id
                members.append(int(entry.name))
    for pid in members:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    return len(members)


async def restart_drill(redis_url: str, jobs: int) -> bool:
    say(f"== restart: {jobs} jobs, then SIGKILL of the whole `wanserve serve` (driver and its Ray); started again")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkdtemp(prefix="wanserve-restart-drill-")) / "serve.log"
    proc = _serve_process(redis_url, port, log)
    try:
        wait_ready(url)
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            posted = [await client.post("/v1/videos", json={"prompt": unique_prompt(), **SLOW}) for _ in range(jobs)]
            ids = [response.json()["id"] for response in posted if response.status_code == 200]
            await until_in_progress(client, ids)
        say(f"  SIGKILLed {_kill_session(proc)} processes at {time.strftime('%H:%M:%S')}")
        proc = _serve_process(redis_url, port, log)
        started = time.monotonic()
        wait_ready(url)
        say(f"  ready again {time.monotonic() - started:.0f}s after the restart")
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            outcomes = await finals(client, ids, 300)
        say(f"  last job ended {time.monotonic() - started:.0f}s after the restart")
        counts = report("jobs accepted before the kill", outcomes, decisions(redis_url, "wanserve"))
        return counts["lost"] == 0 and counts["decided_twice"] == 0 and counts["accepted"] == jobs
    finally:
        if proc.poll() is None:
            _kill_session(proc)


async def quota_drill(url: str, key: str, redis_url: str, app: str, tenant: str, limit: int) -> bool:
    import redis

    say(f"== quota: tenant {tenant!r} (max_concurrent_jobs {limit}) sends 8 jobs at once to two Ingress replicas")
    most, stop = 0, asyncio.Event()

    async def watch() -> None:
        nonlocal most
        with redis.Redis.from_url(redis_url) as client:
            while not stop.is_set():
                most = max(most, int(client.zcard(f"{queue_prefix(app)}:tenant:{tenant}")))
                await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    async with httpx.AsyncClient(base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:
        posted = await asyncio.gather(*(client.post("/v1/videos", json={"prompt": unique_prompt(), **SLOW})
                                        for _ in range(8)))
        ids = [response.json()["id"] for response in posted if response.status_code == 200]
        outcomes = await finals(client, ids, 300)
    stop.set()
    await watcher
    outcomes += [Outcome(status=response.status_code) for response in posted if response.status_code != 200]
    counts = report("burst", outcomes)
    say(f"  most unfinished jobs of {tenant!r} in the queue at once: {most} (limit {limit})")
    return counts["accepted"] <= limit and most <= limit and counts.get("429", 0) == 8 - counts["accepted"]


async def denoiser_runs(client: httpx.AsyncClient) -> float:
    """Requests the Denoiser has run, from the app's /metrics (stage applications report to their router's)."""
    return await metric(client, "wanserve_stage_latency_seconds_count", stage="denoiser")


async def flight_drill(client: httpx.AsyncClient, redis_url: str, app: str) -> bool:
    say("== flight: the same prompt 8 times at once to two Ingress replicas")
    body = {"prompt": unique_prompt(), **SLOW}
    before = await denoiser_runs(client)
    posted = await asyncio.gather(*(client.post("/v1/videos", json=body) for _ in range(8)))
    ids = [response.json()["id"] for response in posted if response.status_code == 200]
    outcomes = await finals(client, ids, 300)
    report("identical jobs", outcomes)
    import redis

    with redis.Redis.from_url(redis_url) as redis_client:
        by = {fields[b"job"].decode(): fields[b"by"].decode()
              for _, fields in redis_client.xrange(f"{queue_prefix(app)}:finished")}
    replicas = Counter(by.get(job_id, "?") for job_id in ids)
    # Reports are fire-and-forget (the first one creates the board): wait for one, then a little longer.
    deadline = time.monotonic() + 60
    while await denoiser_runs(client) <= before and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    await asyncio.sleep(3.0)
    runs = await denoiser_runs(client) - before
    say(f"  jobs per router replica: {dict(replicas)}; Denoiser runs: {runs:g}")
    return all(o.final == "completed" for o in outcomes) and runs == 1
