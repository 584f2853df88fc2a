"""Durable work on real Ray Serve: a second router app beside the session's, shaped like a cluster's.

It has two Ingress replicas and keeps its videos in an S3-compatible object store (moto's server,
which stands in for S3 here), so its content answers redirect to presigned URLs. Its jobs share the
session's Redis and have their own queue (``wanserve:{work:durable}``); leases are 5 s.

The drill of issue 13 runs here: an Ingress replica is killed (``ray.kill`` of its actor, Serve starts
another) with jobs in flight, and every job ends completed, recorded once. It runs last: the killed
replica's generations run on in the stages for nobody, which would blur the Denoiser counts.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.app.helpers import small_body, unique_prompt, wait_done
from tests.conftest import ROOMY_QUOTAS, LocalApp
from tests.s3_support import LocalS3, s3_env

pytestmark = pytest.mark.integration

APP = "durable"
QUEUE = "wanserve:{work:durable}"
SLOW = {"size": "256x256", "num_frames": 9, "num_inference_steps": 16}


@dataclass(frozen=True)
class DurableApp:
    url: str
    keys: dict[str, str]
    redis_url: str
    s3: LocalS3
    bucket: str

    def redis(self) -> Any:
        import redis

        return redis.Redis.from_url(self.redis_url)

    def client(self, tenant: str = "tests") -> httpx.Client:
        # Content answers are redirects to the object store: follow them (httpx drops the key on the way).
        return httpx.Client(base_url=self.url, timeout=60, follow_redirects=True,
                            headers={"Authorization": f"Bearer {self.keys[tenant]}"})


@pytest.fixture(scope="module")
def durable_app(
    local_app: LocalApp, redis_server: Any, local_s3: LocalS3, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DurableApp]:
    from ray import serve

    from serve.app import local
    from serve.app.args import AppArgs, LaneArgs, StageArgs, WorkArgs
    from serve.tenancy import TenantQuotas, generate_key, hash_key

    quota_key = generate_key()
    keys_path = tmp_path_factory.mktemp("durable") / "api-keys.yaml"
    keys_path.write_text(local_app.keys_file_with({
        "two-at-once": {"quotas": {**ROOMY_QUOTAS, "max_concurrent_jobs": 2}, "key_hashes": [hash_key(quota_key)]},
    }))
    args = AppArgs(
        redis_url=redis_server.url, lanes=LaneArgs(capacity=1, realtime_queue=8, batch_queue=8),
        ingress=StageArgs(min_replicas=2, max_replicas=2, max_ongoing_requests=256, max_queued_requests=-1),
        work=WorkArgs(lease_s=5.0), api_keys_file=str(keys_path), admin_key=local_app.admin_key,
        default_quotas=TenantQuotas(**ROOMY_QUOTAS),  # type: ignore[arg-type]
    )
    bucket = local_s3.new_bucket()
    local.deploy(args, name=APP, route_prefix=f"/{APP}", router_env=s3_env(local_s3, f"s3://{bucket}/videos"))
    url = f"{local_app.url}/{APP}"
    local.wait_ready(url)
    _wait_for_both_ingress_replicas()
    yield DurableApp(url, {"tests": local_app.key, "two-at-once": quota_key}, redis_server.url, local_s3, bucket)
    for name in [APP, *(app.app_name for app in args.topology(APP).apps)]:
        serve.delete(name)


def _wait_for_both_ingress_replicas(timeout_s: float = 180) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while True:
        states = serve.status().applications[APP].deployments["Ingress"].replica_states
        if states.get("RUNNING", 0) == 2:
            return
        assert time.monotonic() < deadline, f"the two Ingress replicas never both ran: {states}"
        time.sleep(0.5)


def _ingress_actors(app: str) -> list[Any]:
    import ray

    names = [entry["name"] for entry in ray.util.list_named_actors(all_namespaces=True)
             if entry["namespace"] == "serve" and f"{app}#Ingress#" in entry["name"]]
    return [ray.get_actor(name, namespace="serve") for name in names]


def _outcomes(client: Any) -> Counter[str]:
    """How many outcome decisions each job got (the queue's log of complete_once)."""
    return Counter(fields[b"job"].decode() for _, fields in client.xrange(f"{QUEUE}:finished"))


def _holders(client: Any) -> Counter[int]:
    """Jobs held now per Ingress process id (consumer names are ``host:pid``)."""
    held: Counter[int] = Counter()
    for lane in ("realtime", "batch"):
        stream = f"{QUEUE}:lane:{lane}"
        if not client.exists(stream):
            continue
        for consumer in client.xinfo_consumers(stream, "routers"):
            held[int(consumer["name"].decode().rsplit(":", 1)[1])] += int(consumer["pending"])
    return held


def _kill_the_busiest_ingress_replica(client: Any) -> tuple[str, int]:
    import ray

    held = _holders(client)
    replicas = {int(ray.get(actor.__ray_call__.remote(lambda _: os.getpid()))): actor for actor in _ingress_actors(APP)}
    pid = max(replicas, key=lambda candidate: held.get(candidate, 0))
    ray.kill(replicas[pid])
    return f"pid {pid}", held.get(pid, 0)


def test_the_same_prompt_sent_to_two_router_replicas_at_once_is_generated_once(durable_app: DurableApp) -> None:
    # Serve's proxy picks the replica; a burst usually reaches both, and it is sent again until one does.
    for _ in range(3):
        body = small_body(**SLOW)
        before = _denoiser_runs(durable_app)
        with durable_app.client() as client, durable_app.redis() as redis_client:
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                created = list(pool.map(lambda sent: client.post("/v1/videos", json=sent).json(), [body] * 8))
            finished = [wait_done(client, video["id"]) for video in created]
            assert all(video["status"] == "completed" for video in finished)
            contents = {client.get(f"/v1/videos/{video['id']}/content").content for video in finished}
            assert len(contents) == 1
            assert _denoiser_runs_after(durable_app, before) == 1
            by = {fields[b"job"].decode(): fields[b"by"].decode()
                  for _, fields in redis_client.xrange(f"{QUEUE}:finished")}
        if len({by[video["id"]] for video in finished}) == 2:
            return
    raise AssertionError("three bursts never reached both router replicas")


def test_the_openai_sdk_downloads_a_video_kept_in_object_storage_through_the_redirect(
    durable_app: DurableApp,
) -> None:
    from openai import OpenAI

    sdk = OpenAI(base_url=f"{durable_app.url}/v1", api_key=durable_app.keys["tests"])
    video = sdk.videos.create_and_poll(prompt=unique_prompt(), size="128x64",  # type: ignore[arg-type]
                                       extra_body={"num_frames": 5, "num_inference_steps": 2})
    assert video.status == "completed"
    with durable_app.client() as client:
        answer = client.get(f"/v1/videos/{video.id}/content", follow_redirects=False)
    assert answer.status_code == 307  # not streamed through the router: the client fetches from the store
    location = answer.headers["location"]
    assert location.startswith(f"{durable_app.s3.endpoint_url}/{durable_app.bucket}/videos/")
    assert "X-Amz-Signature=" in location and "X-Amz-Expires=" in location
    content = sdk.videos.download_content(video.id).read()
    assert content[4:8] == b"ftyp"  # an mp4, and the very object the job points to
    key = location.split("?", 1)[0].removeprefix(f"{durable_app.s3.endpoint_url}/{durable_app.bucket}/")
    stored = durable_app.s3.client().get_object(Bucket=durable_app.bucket, Key=key)["Body"].read()
    assert content == stored
    thumbnail = sdk.videos.download_content(video.id, variant="thumbnail").read()
    assert thumbnail[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_router_replicas_hold_a_tenant_to_its_concurrent_job_quota(durable_app: DurableApp) -> None:
    with durable_app.client("two-at-once") as client:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: client.post("/v1/videos", json=small_body(**SLOW)), range(6)))
        accepted = [answer.json()["id"] for answer in answers if answer.status_code == 200]
        refused = [answer.json()["error"] for answer in answers if answer.status_code == 429]
        assert len(accepted) == 2 and len(refused) == 4, [answer.text for answer in answers]
        assert all(error["code"] == "quota_exceeded" and "max_concurrent_jobs" in error["message"] for error in refused)
        for job_id in accepted:
            assert wait_done(client, job_id)["status"] == "completed"
        assert client.post("/v1/videos", json=small_body()).status_code == 200


def test_killing_an_ingress_replica_with_jobs_in_flight_completes_every_job_once(durable_app: DurableApp) -> None:
    with durable_app.client() as client, durable_app.redis() as redis_client:
        ids = [client.post("/v1/videos", json=small_body(**SLOW)).json()["id"] for _ in range(6)]
        deadline = time.monotonic() + 120
        while not any(client.get(f"/v1/videos/{job_id}").json()["status"] == "in_progress" for job_id in ids):
            assert time.monotonic() < deadline, "no job started"
            time.sleep(0.05)
        killed, held = _kill_the_busiest_ingress_replica(redis_client)
        assert held >= 1, f"the killed replica ({killed}) held no job"
        finals = [wait_done(client, job_id, timeout_s=300) for job_id in ids]
        assert [video["status"] for video in finals] == ["completed"] * len(ids), finals
        outcomes = _outcomes(redis_client)
        assert {job_id: outcomes[job_id] for job_id in ids} == {job_id: 1 for job_id in ids}
        assert client.get(f"/v1/videos/{ids[0]}/content").status_code == 200


def _denoiser_runs_after(durable_app: DurableApp, before: float) -> float:
    """Denoiser runs since ``before``: reports are fire-and-forget (the first one creates the board), so
    wait for one, then a little longer for any other."""
    deadline = time.monotonic() + 60
    while _denoiser_runs(durable_app) <= before:
        assert time.monotonic() < deadline, "the Denoiser reported no run"
        time.sleep(0.5)
    time.sleep(3.0)
    return _denoiser_runs(durable_app) - before


def _denoiser_runs(durable_app: DurableApp) -> float:
    """Requests the app's Denoiser has run, from its /metrics (stage applications report to their router's)."""
    from tests.app.helpers import metric_value

    with durable_app.client() as client:
        return metric_value(client.get("/metrics").text, "wanserve_stage_latency_seconds_count", stage="denoiser")
