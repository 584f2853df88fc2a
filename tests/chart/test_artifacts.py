"""The chart's artifact store (issue 20): S3 settings and credentials reach every pod that runs Serve code."""

from __future__ import annotations

import pytest

S3 = ("artifacts.store=s3://wanserve-videos/prod", "artifacts.endpointUrl=https://minio.storage:9000",
      "artifacts.region=eu-west-1", "artifacts.existingSecret=wanserve-s3")


def _ray_pods(rendered):  # type: ignore[no-untyped-def]
    return [name for name, _ in rendered.pod_specs() if name.startswith("RayService")]


def test_by_default_artifacts_stay_in_the_durable_redis(render):
    rendered = render("defaults")
    for pod in _ray_pods(rendered):
        assert "WANSERVE_ARTIFACT_STORE" not in rendered.env_of(pod)


def test_an_s3_store_and_its_credentials_reach_every_ray_container(render):
    rendered = render("defaults", set_values=S3)
    pods = _ray_pods(rendered)
    assert len(pods) >= 2
    for pod in pods:
        env = rendered.env_of(pod)
        assert env["WANSERVE_ARTIFACT_STORE"]["value"] == "s3://wanserve-videos/prod"
        assert env["AWS_ENDPOINT_URL"]["value"] == "https://minio.storage:9000"
        assert env["AWS_REGION"]["value"] == "eu-west-1"
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "wanserve-s3", "key": name}


def test_without_a_secret_the_pods_use_their_workload_identity(render):
    rendered = render("defaults", set_values=("artifacts.store=s3://wanserve-videos",))
    for pod in _ray_pods(rendered):
        env = rendered.env_of(pod)
        assert "AWS_ACCESS_KEY_ID" not in env and env["WANSERVE_ARTIFACT_STORE"]["value"] == "s3://wanserve-videos"


@pytest.mark.parametrize("store", ["s3://", "http://bucket", "s3://UPPER/x", "redis"])
def test_a_malformed_store_is_refused_by_the_schema(render_error, store):
    message = render_error(f"artifacts.store={store}")
    assert "artifacts" in message and "store" in message
