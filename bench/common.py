"""Shared pieces of the benchmarks and drills: the bench checkpoint, a local Serve session, a Redis
subprocess, an HTTP load client, percentiles and the final goal line.

Not a benchmark itself: ``make bench`` runs the other scripts in this folder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from serve.local_redis import INSTALL_HINT, RedisProcess, find_redis_server, free_port
from serve.local_redis import stop_process as stop_process  # for the drills and burst scripts

# Make `serve` and `operators` importable when a script runs as `python bench/x.py`.
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The cheapest valid request: one 64x64 frame, one step.
CHEAP: dict[str, Any] = {"size": "64x64", "num_frames": 1, "num_inference_steps": 1}
# The bench checkpoint's transformer: wide enough that denoising is a real share of a video.
BENCH_TRANSFORMER = {"transformer_heads": 16, "transformer_layers": 4, "transformer_ffn_dim": 768}
CORES = os.cpu_count() or 2
# The benchmarks' apps run open (no keys file) and their admin routes need the admin key: one per
# run, in the environment, so the app (AppArgs.admin_key) and the operator subprocess both get it.
ADMIN_KEY = os.environ.setdefault("WANSERVE_ADMIN_KEY", uuid.uuid4().hex + uuid.uuid4().hex)
# Sent on every benchmark request: an open server ignores it on /v1 routes.
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def parse_args(doc: str | None, **extra: Any) -> argparse.Namespace:
    """``--quick`` (a tiny run for the smoke tests) plus any ``name=default`` options of a script."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run, for the smoke tests")
    for name, default in extra.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    return parser.parse_args()


def goal_line(name: str, figure: str, op: str, goal: str) -> None:
    """The last line of every benchmark: ``<name>: <figure> (goal <op> <value>)``."""
    print(f"{name}: {figure} (goal {op} {goal})", flush=True)


def say(*parts: object) -> None:
    print(*parts, flush=True)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: list[float]) -> float:
    return percentile(values, 50)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def unique_prompt(text: str = "a red fox jumping over a log") -> str:
    """A prompt nobody sent before, so neither the cache nor single flight can answer it."""
    return f"{text} {uuid.uuid4().hex[:10]}"


# -- checkpoints --------------------------------------------------------------------------------


def bench_checkpoint() -> Path:
    """The tiny checkpoint with a wider transformer, built once into the wanserve cache."""
    from serve.pipeline.checkpoint import tiny_checkpoint_dir

    return tiny_checkpoint_dir(**BENCH_TRANSFORMER)


# -- the local Serve application ----------------------------------------------------------------


def wait_ready(url: str) -> None:
    """The app's own readiness wait, with the patience a loaded benchmark machine needs."""
    from serve.app.local import wait_ready as wait_app_ready

    wait_app_ready(url, timeout_s=240.0, poll_s=0.3)


def unmetered(args: Any) -> Any:
    """The app args with quotas no benchmark reaches: a benchmark measures the service, not its quotas."""
    from serve.tenancy import TenantQuotas

    roomy = TenantQuotas(requests_per_minute=10**6, max_concurrent_jobs=10**5, daily_compute_units=1e12,
                         max_storage_bytes=2**50)
    return args.model_copy(update={"default_quotas": roomy})


@contextmanager
def serve_app(args: Any) -> Iterator[str]:
    """Ray (all cores) + Serve + the wanserve app on a free port, ready; stopped on exit.

    Stage replicas ask for 0 CPUs, so Ray would give each one torch thread; OMP_NUM_THREADS set to
    the core count (unless already set) gives them what an in-process run gets.
    """
    from serve.app import local

    args = unmetered(args)
    os.environ.setdefault("OMP_NUM_THREADS", str(CORES))
    started = time.monotonic()
    url = local.start(args, port=free_port(), num_cpus=CORES)
    try:
        wait_ready(url)
        say(f"app ready at {url} in {time.monotonic() - started:.1f}s")
        yield url
    finally:
        local.stop()


def deploy_beside(args: Any, name: str, route_prefix: str, base_url: str) -> str:
    """Another wanserve app in the same Serve instance under ``route_prefix``; returns its URL."""
    from serve.app import local

    # Its own stage applications too ("<name>-<version>-<instance>"), beside the first app's.
    local.deploy(unmetered(args), name=name, route_prefix=route_prefix)
    url = f"{base_url}{route_prefix}"
    wait_ready(url)
    return url


# -- Redis ----------------------------------------------------------------------------------------


class BenchRedis(RedisProcess):
    """The project's local redis-server in a temporary folder, removed when the benchmark ends."""

    def __init__(self, persistent: bool = False) -> None:
        binary = find_redis_server()
        if binary is None:
            raise SystemExit(INSTALL_HINT)
        super().__init__(binary, Path(tempfile.mkdtemp(prefix="wanserve-bench-redis-")), persistent)

    def __enter__(self) -> BenchRedis:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


# -- HTTP load ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One request: HTTP status of the POST, the job's end state, and seconds from POST to that end."""

    status: int
    job_id: str | None = None
    final: str | None = None  # completed | failed | lost | None (not accepted)
    error_code: str | None = None
    error_message: str | None = None
    latency_s: float | None = None
    started: float = field(default_factory=time.monotonic)


async def wait_job(client: httpx.AsyncClient, job_id: str, timeout_s: float, poll_s: float = 0.02) -> dict[str, Any]:
    """The job once completed or failed; ``{"status": "lost"}`` if it never got there in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            response = await client.get(f"/v1/videos/{job_id}")
        except httpx.HTTPError:
            await asyncio.sleep(0.2)
            continue
        if response.status_code == 200:
            video: dict[str, Any] = response.json()
            if video["status"] in ("completed", "failed"):
                return video
        await asyncio.sleep(poll_s)
    return {"status": "lost"}


async def follow_events(client: httpx.AsyncClient, job_id: str, timeout_s: float) -> dict[str, Any]:
    """The job's last event on ``GET /v1/videos/{id}/events`` (SSE): how a client waits without polling.

    A broken stream (a router replica restarted) is opened again with ``Last-Event-ID``, as browsers do.
    """
    last: dict[str, Any] = {"status": "lost"}
    seen: str | None = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        headers = {"Last-Event-ID": seen} if seen else {}
        try:
            async with asyncio.timeout(deadline - time.monotonic()), \
                    client.stream("GET", f"/v1/videos/{job_id}/events", headers=headers) as response:
                if response.status_code != 200:
                    await asyncio.sleep(0.2)
                    continue
                async for line in response.aiter_lines():
                    if line.startswith("id:"):
                        seen = line[3:].strip()
                    elif line.startswith("data:"):
                        last = json.loads(line[5:])
                        if last.get("status") in ("completed", "failed", "gone"):
                            return last
        except httpx.HTTPError:
            await asyncio.sleep(0.2)
        except TimeoutError:
            break
    return {"status": "lost"} if last.get("status") not in ("completed", "failed") else last


async def run_job(
    client: httpx.AsyncClient, body: dict[str, Any], timeout_s: float = 300.0, poll_s: float = 0.02,
    follow: str = "poll",
) -> Outcome:
    """POST a video and follow it to its end (polling, or ``follow="events"``); latency is POST to completed."""
    outcome = Outcome(status=0)
    try:
        response = await client.post("/v1/videos", json=body)
    except httpx.HTTPError:
        return outcome
    outcome.status = response.status_code
    if response.status_code != 200:
        return outcome
    video = response.json()
    outcome.job_id = video["id"]
    if video["status"] not in ("completed", "failed"):
        if follow == "events":
            video = await follow_events(client, video["id"], timeout_s)
        else:
            video = await wait_job(client, video["id"], timeout_s, poll_s)
    outcome.final = video["status"]
    outcome.error_code = (video.get("error") or {}).get("code")
    outcome.error_message = (video.get("error") or {}).get("message")
    outcome.latency_s = time.monotonic() - outcome.started
    return outcome


# Requests that did not complete, by reason: benchmarks report them instead of stopping.
FAILURES: Counter[str] = Counter()


def did_not_complete(outcome: Outcome) -> bool:
    """True (and counted in FAILURES) when the job did not end ``completed``."""
    if outcome.final == "completed":
        return False
    reason = f"{outcome.final or f'HTTP {outcome.status}'}: {outcome.error_code or '-'}: {outcome.error_message or ''}"
    FAILURES[reason[:300]] += 1
    return True


def failure_summary() -> str:
    if not FAILURES:
        return "every request completed"
    lines = [f"{count} x {reason}" for reason, count in FAILURES.most_common(5)]
    return f"{sum(FAILURES.values())} requests did not complete:\n  " + "\n  ".join(lines)


def count_outcomes(outcomes: list[Outcome]) -> dict[str, int]:
    """accepted / completed / failed (per reason) / lost, and HTTP status classes of the POSTs."""
    counts: dict[str, int] = {"sent": len(outcomes)}
    for outcome in outcomes:
        klass = "no_answer" if outcome.status == 0 else f"{outcome.status // 100}xx"
        counts[klass] = counts.get(klass, 0) + 1
        if outcome.status == 429:
            counts["429"] = counts.get("429", 0) + 1
        if outcome.job_id is not None:
            counts["accepted"] = counts.get("accepted", 0) + 1
            key = outcome.final if outcome.final != "failed" else f"failed:{outcome.error_code}"
            counts[key or "lost"] = counts.get(key or "lost", 0) + 1
    counts.setdefault("accepted", 0)
    counts.setdefault("completed", 0)
    counts.setdefault("lost", 0)
    return counts


def describe_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(counts.items()))


async def get_policy(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/admin/policy")
    response.raise_for_status()
    policy: dict[str, Any] = response.json()
    return policy


async def put_policy(client: httpx.AsyncClient, policy: dict[str, Any]) -> None:
    (await client.put("/admin/policy", json=policy)).raise_for_status()


def rss_mb(pid: int) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def operator_process(url: str, interval_s: float, spec: dict[str, Any], log_path: Path) -> subprocess.Popen[bytes]:
    """``wanserve-operator local`` beside the app, with ``spec`` (camelCase) as its policy file."""
    import yaml

    spec_path = log_path.with_suffix(".yaml")
    spec_path.write_text(yaml.safe_dump(spec))
    command = [sys.executable, "-m", "operators.cli", "local", "--url", url, "--interval", str(interval_s),
               "--policy-file", str(spec_path), "--metrics-port", "0"]
    with log_path.open("wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)


async def metric(client: httpx.AsyncClient, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``, from the app's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = (await client.get("/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items())
    )


DECISION_WORDS = ("degrade:", "recover:", "failover:", "failback:", "rollout-", " ERROR ")


def operator_decisions(log_path: Path) -> list[str]:
    """The operator's log lines that changed something, and its errors; else its last line."""
    lines = log_path.read_text().splitlines() if log_path.exists() else []
    decisions = [line for line in lines if any(word in line for word in DECISION_WORDS)]
    return decisions or [f"(no decision lines; {len(lines)} lines, last: {lines[-1] if lines else '-'})"]
