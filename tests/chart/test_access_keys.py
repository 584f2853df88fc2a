"""The admin and metrics keys: generated Secrets, wired into the pods that need them and nowhere else."""

from __future__ import annotations

import base64

RAY_PODS = ("RayService head", "RayService worker text-encoder", "RayService worker denoiser",
            "RayService worker decoder")
OPERATOR = "Deployment/wanserve-operator"


def _secret_ref(env, name):
    source = env[name]
    assert set(source) == {"name", "valueFrom"}, f"{name} must come from a Secret, never a literal value"
    return source["valueFrom"]["secretKeyRef"]


def _decoded(rendered, name, key):
    return base64.b64decode(rendered.named("Secret", name)["data"][key]).decode()


def test_every_ray_container_gets_both_keys_from_their_secrets(rendered):
    for pod in RAY_PODS:
        env = rendered.env_of(pod)
        assert _secret_ref(env, "WANSERVE_ADMIN_KEY") == {"name": "wanserve-admin-key", "key": "admin-key"}, pod
        assert _secret_ref(env, "WANSERVE_METRICS_KEY") == {"name": "wanserve-metrics-key", "key": "metrics-key"}, pod


def test_the_keys_are_random_distinct_and_never_in_the_rayservice(render):
    rendered = render()
    admin = _decoded(rendered, "wanserve-admin-key", "admin-key")
    metrics = _decoded(rendered, "wanserve-metrics-key", "metrics-key")
    assert admin != metrics and min(len(admin), len(metrics)) >= 32
    rayservice_text = str(rendered.rayservice)
    assert admin not in rayservice_text and metrics not in rayservice_text
    assert "admin_key" not in rendered.application["args"]


def test_the_operator_gets_the_metrics_key_and_the_redis_password_never_the_admin_key(render):
    rendered = render()
    env = rendered.env_of(OPERATOR)
    assert _secret_ref(env, "WANSERVE_METRICS_KEY") == {"name": "wanserve-metrics-key", "key": "metrics-key"}
    # It publishes the policy to the durable Redis (the policy store).
    assert _secret_ref(env, "WANSERVE_REDIS_PASSWORD") == {"name": "wanserve-redis", "key": "redis-password"}
    assert env["WANSERVE_REDIS_URL"]["value"] == rendered.application["args"]["redis_url"]
    assert "WANSERVE_ADMIN_KEY" not in env


def test_redis_pods_hold_no_access_key(render):
    rendered = render()
    for pod in ("StatefulSet/wanserve-redis", "Deployment/wanserve-redis-cache"):
        assert not {"WANSERVE_ADMIN_KEY", "WANSERVE_METRICS_KEY"} & set(rendered.env_of(pod)), pod


def test_prometheus_scrapes_the_ingress_with_the_metrics_key(render):
    rendered = render()
    (endpoint,) = rendered.named("ServiceMonitor", "wanserve-ingress")["spec"]["endpoints"]
    assert endpoint["authorization"] == {
        "type": "Bearer", "credentials": {"name": "wanserve-metrics-key", "key": "metrics-key"}}
    # The Secret Prometheus reads holds the metrics key and nothing else.
    assert set(rendered.named("Secret", "wanserve-metrics-key")["data"]) == {"metrics-key"}


def test_existing_secrets_replace_the_generated_ones(render):
    rendered = render(set_values=(
        "tenancy.adminKey.existingSecret=ops-admin", "tenancy.adminKey.secretKey=key",
        "tenancy.metricsKey.existingSecret=prom-key", "tenancy.metricsKey.secretKey=token",
    ))
    names = {s["metadata"]["name"] for s in rendered.of_kind("Secret")}
    assert not {"wanserve-admin-key", "wanserve-metrics-key"} & names
    env = rendered.env_of("RayService head")
    assert _secret_ref(env, "WANSERVE_ADMIN_KEY") == {"name": "ops-admin", "key": "key"}
    assert _secret_ref(env, "WANSERVE_METRICS_KEY") == {"name": "prom-key", "key": "token"}
    (endpoint,) = rendered.named("ServiceMonitor", "wanserve-ingress")["spec"]["endpoints"]
    assert endpoint["authorization"]["credentials"] == {"name": "prom-key", "key": "token"}


def test_the_admin_key_is_wired_in_open_mode_too(render):
    # Open mode opens the tenant routes only: /admin still needs the admin key.
    rendered = render("values-09-open-mode.yaml")
    assert _secret_ref(rendered.env_of("RayService head"), "WANSERVE_ADMIN_KEY")["name"] == "wanserve-admin-key"
