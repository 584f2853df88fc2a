"""Multi-tenant access against the real local app: keys, isolation, quotas, fair lanes, no key leaks.

The session app runs keyed with one tenant (``tests``). This module adds its tenants to the keys
file, waits until the ingress has re-read it (it checks at most once a second), and puts the
session's file back at the end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray

from serve.tenancy import generate_key, hash_key
from tests.app.helpers import metric_value, small_body, wait_done

TENANTS: dict[str, dict[str, Any]] = {
    "alpha": {"shared_cache_opt_in": True},
    "beta": {"shared_cache_opt_in": True},
    "private": {},
    "ops": {"admin": True},
    "rate-limited": {"quotas": {"requests_per_minute": 3}},
    "job-limited": {"quotas": {"max_concurrent_jobs": 1}},
    # One small_body(num_frames=9) costs 128*64/(1280*704) * 9/121 * 2/50 = 2.7e-5 compute units.
    "compute-limited": {"quotas": {"daily_compute_units": 4e-5}},
    "flooder": {},
    "latecomer": {},
}


@dataclass
class Tenancy:
    url: str
    keys: dict[str, str]
    # Every error body this module received, to check that none repeats a key.
    error_bodies: list[str] = field(default_factory=list)
    wrong_keys: list[str] = field(default_factory=list)

    def client(self, tenant: str | None = None, key: str | None = None) -> httpx.Client:
        key = key if key is not None else (self.keys[tenant] if tenant else None)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def error(self, response: httpx.Response, status: int) -> dict[str, Any]:
        self.error_bodies.append(response.text)
        assert response.status_code == status, response.text
        body: dict[str, Any] = response.json()["error"]
        return body


def _wait_for(url: str, key: str, status: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/v1/videos", timeout=10, headers={"Authorization": f"Bearer {key}"}).status_code == status:
            return
        time.sleep(0.2)
    raise AssertionError(f"the ingress did not answer {status} to the key within 10 s")


@pytest.fixture(scope="module")
def tenancy(local_app) -> Iterator[Tenancy]:  # type: ignore[no-untyped-def]
    keys = {name: generate_key() for name in TENANTS}
    path = Path(local_app.api_keys_file)
    original = path.read_text()
    path.write_text(local_app.keys_file_with({
        name: {**settings, "key_hashes": [hash_key(keys[name])]} for name, settings in TENANTS.items()
    }))
    _wait_for(local_app.url, keys["alpha"], 200)
    _OPS_KEY["key"] = keys["ops"]
    try:
        yield Tenancy(local_app.url, keys)
    finally:
        path.write_text(original)
        _wait_for(local_app.url, keys["alpha"], 401)


# -- authentication -------------------------------------------------------------------------------

def test_a_request_without_a_key_is_401_with_a_bearer_challenge(tenancy):
    with tenancy.client() as anonymous:
        response = anonymous.post("/v1/videos", json=small_body())
        assert tenancy.error(response, 401)["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert tenancy.error(anonymous.get("/v1/ops"), 401)["code"] == "unauthorized"


def test_a_wrong_key_is_401_invalid_api_key(tenancy):
    wrong = generate_key()
    tenancy.wrong_keys.append(wrong)
    with tenancy.client(key=wrong) as stranger:
        response = stranger.get("/v1/videos")
        assert tenancy.error(response, 401)["code"] == "invalid_api_key"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_probes_and_docs_stay_open(tenancy):
    with tenancy.client() as anonymous:
        for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
            assert anonymous.get(path).status_code == 200, path


def test_metrics_and_ops_need_an_operator_credential(tenancy):
    with tenancy.client() as anonymous, tenancy.client("alpha") as tenant, tenancy.client("ops") as admin:
        for path in ("/metrics", "/v1/ops"):
            assert tenancy.error(anonymous.get(path), 401)["code"] == "unauthorized"
            assert tenancy.error(tenant.get(path), 403)["code"] == "forbidden"
            assert admin.get(path).status_code == 200, path


def test_admin_endpoints_need_an_admin_key(tenancy):
    with tenancy.client("alpha") as tenant:
        response = tenant.get("/admin/policy")
        assert tenancy.error(response, 403)["code"] == "forbidden"
        assert tenancy.error(tenant.put("/admin/policy", json={}), 403)["code"] == "forbidden"
    with tenancy.client("ops") as admin:
        policy = admin.get("/admin/policy")
        assert policy.status_code == 200
        assert admin.put("/admin/policy", json=policy.json()).status_code == 200


# -- isolation ------------------------------------------------------------------------------------

def test_a_tenant_sees_only_its_own_videos(tenancy):
    with tenancy.client("alpha") as alpha, tenancy.client("beta") as beta:
        video = wait_done(alpha, alpha.post("/v1/videos", json=small_body()).json()["id"])
        assert video["status"] == "completed"
        unknown = "video_" + "0" * 24
        for path in (f"/v1/videos/{video['id']}", f"/v1/videos/{video['id']}/content"):
            theirs = tenancy.error(beta.get(path), 404)
            nobody = tenancy.error(beta.get(path.replace(video["id"], unknown)), 404)
            assert theirs == {**nobody, "message": nobody["message"].replace(unknown, video["id"])}
        assert tenancy.error(beta.delete(f"/v1/videos/{video['id']}"), 404)["code"] == "video_not_found"
        assert video["id"] not in {v["id"] for v in beta.get("/v1/videos", params={"limit": 100}).json()["data"]}
        assert video["id"] in {v["id"] for v in alpha.get("/v1/videos", params={"limit": 100}).json()["data"]}
        assert alpha.get(f"/v1/videos/{video['id']}/content").status_code == 200


def test_the_cache_is_per_tenant(tenancy):
    body = small_body()
    with tenancy.client("alpha") as alpha, tenancy.client("beta") as beta:
        assert wait_done(alpha, alpha.post("/v1/videos", json=body).json()["id"])["status"] == "completed"
        assert alpha.post("/v1/videos", json=body).json()["cache_hit"] is True
        other = beta.post("/v1/videos", json=body).json()
        assert other["cache_hit"] is False
        assert wait_done(beta, other["id"])["status"] == "completed"


def test_tenants_that_opt_in_share_the_shared_pool(tenancy):
    body = small_body(shared_cache=True)
    with tenancy.client("alpha") as alpha, tenancy.client("beta") as beta:
        assert wait_done(alpha, alpha.post("/v1/videos", json=body).json()["id"])["status"] == "completed"
        shared = beta.post("/v1/videos", json=body).json()
        assert shared["cache_hit"] is True
        # The shared result is not alpha's private one: without the flag beta still misses.
        assert beta.post("/v1/videos", json={**body, "shared_cache": False}).json()["cache_hit"] is False


def test_a_tenant_not_allowed_the_shared_pool_is_403(tenancy):
    with tenancy.client("private") as private:
        error = tenancy.error(private.post("/v1/videos", json=small_body(shared_cache=True)), 403)
        assert error["code"] == "shared_cache_not_allowed" and error["param"] == "shared_cache"


# -- quotas ---------------------------------------------------------------------------------------

_OPS_KEY: dict[str, str] = {}


def _metrics(tenancy: Tenancy) -> str:
    with tenancy.client("ops") as ops:  # /metrics needs an operator's credential
        return ops.get("/metrics").text


def _quota_rejections(client: httpx.Client, tenant: str, limit: str) -> float:
    with httpx.Client(base_url=str(client.base_url), headers={"Authorization": f"Bearer {_OPS_KEY['key']}"}) as ops:
        text = ops.get("/metrics").text
    return metric_value(text, "wanserve_quota_rejections_total", tenant=tenant, limit=limit)


def test_requests_per_minute_is_429_with_retry_after(tenancy):
    with tenancy.client("rate-limited") as client:
        before = _quota_rejections(client, "rate-limited", "requests_per_minute")
        accepted = [client.post("/v1/videos", json=small_body(num_inference_steps=1)) for _ in range(3)]
        assert all(response.status_code == 200 for response in accepted)
        refused = client.post("/v1/videos", json=small_body())
        error = tenancy.error(refused, 429)
        assert error["code"] == "rate_limit_exceeded" and "requests_per_minute" in error["message"]
        assert 0 < int(refused.headers["Retry-After"]) <= 60
        assert _quota_rejections(client, "rate-limited", "requests_per_minute") == before + 1
        for response in accepted:
            wait_done(client, response.json()["id"])


def test_max_concurrent_jobs_is_429_with_retry_after(tenancy):
    with tenancy.client("job-limited") as client:
        slow = client.post("/v1/videos", json=small_body(num_inference_steps=30, size="256x256")).json()
        refused = client.post("/v1/videos", json=small_body())
        error = tenancy.error(refused, 429)
        assert error["code"] == "quota_exceeded" and "max_concurrent_jobs" in error["message"]
        assert int(refused.headers["Retry-After"]) > 0
        assert _quota_rejections(client, "job-limited", "max_concurrent_jobs") >= 1
        assert wait_done(client, slow["id"])["status"] == "completed"
        assert client.post("/v1/videos", json=small_body()).status_code == 200


def test_daily_compute_units_is_429_until_utc_midnight(tenancy):
    with tenancy.client("compute-limited") as client:
        first = client.post("/v1/videos", json=small_body(num_frames=9))  # 2.7e-5 units of 4e-5
        assert first.status_code == 200, first.text
        refused = client.post("/v1/videos", json=small_body(num_frames=9))
        error = tenancy.error(refused, 429)
        assert error["code"] == "quota_exceeded" and "daily_compute_units" in error["message"]
        assert 0 < int(refused.headers["Retry-After"]) <= 86_400
        assert _quota_rejections(client, "compute-limited", "daily_compute_units") >= 1
        wait_done(client, first.json()["id"])


# -- fairness -------------------------------------------------------------------------------------

def test_a_flood_from_one_tenant_delays_another_by_at_most_one_batch(tenancy):
    heavy = {"priority": "batch", "num_inference_steps": 6, "size": "256x256"}
    with tenancy.client("flooder") as flooder, tenancy.client("latecomer") as latecomer:
        # Capacity 1, groups of 4, 12 waiting at most: 11 from the flooder, the first running alone.
        flood = [flooder.post("/v1/videos", json=small_body(**heavy)) for _ in range(11)]
        assert all(response.status_code == 200 for response in flood), [r.text for r in flood]
        late = latecomer.post("/v1/videos", json=small_body(**heavy)).json()
        deadline = time.monotonic() + 120
        while latecomer.get(f"/v1/videos/{late['id']}").json()["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, "the latecomer's video never finished"
            time.sleep(0.05)
        states = [flooder.get(f"/v1/videos/{r.json()['id']}").json()["status"] for r in flood]
        # FIFO would finish 9 or more of the flood first; fair turns let in the one running group plus
        # the rest of the latecomer's own group.
        assert states.count("completed") <= 1 + 3, states
        for response in flood:
            assert wait_done(flooder, response.json()["id"])["status"] == "completed"
        text = _metrics(tenancy)
        assert metric_value(text, "wanserve_requests_total", tenant="latecomer", status="completed") >= 1


# -- no key leaks (last: it reads what every test above left behind) ------------------------------

def test_no_key_appears_in_logs_metrics_or_error_bodies(tenancy):
    secrets = [*tenancy.keys.values(), *tenancy.wrong_keys]
    metrics = _metrics(tenancy)
    assert tenancy.error_bodies, "the tests above collected no error body"
    for key in secrets:
        assert key not in metrics
        assert not any(key in body for body in tenancy.error_bodies)
    # This app's Ray session (session_latest may be another process's Ray on a shared machine).
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    assert (logs / "serve").is_dir(), f"no Ray Serve logs at {logs / 'serve'}"
    needles = [key.encode() for key in secrets]
    scanned = 0
    for path in logs.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            scanned += 1
            leaked = [needle for needle in needles if needle in data]
            assert not leaked, f"an API key appears in {path}"
    assert scanned > 0
