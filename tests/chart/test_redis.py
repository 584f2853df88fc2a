"""Redis: the chart's own small StatefulSet, an external URL, or none; the password always from a Secret."""

from __future__ import annotations


def test_internal_redis_renders_statefulset_service_and_secret(render, namespace):
    rendered = render("defaults")
    statefulset = rendered.one("StatefulSet")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert '--requirepass "$REDIS_PASSWORD"' in container["args"][0]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    (secret,) = rendered.of_kind("Secret")
    assert env["REDIS_PASSWORD"] == {"name": secret["metadata"]["name"], "key": "redis-password"}
    assert len(secret["data"]["redis-password"]) >= 32
    service_names = {s["metadata"]["name"] for s in rendered.of_kind("Service")}
    assert rendered.application["args"]["redis_url"] == f"redis://wanserve-redis.{namespace}.svc:6379/0"
    assert "wanserve-redis" in service_names


def test_internal_redis_without_persistence_uses_an_emptydir(render):
    spec = render("defaults").one("StatefulSet")["spec"]
    assert "volumeClaimTemplates" not in spec
    (data,) = [v for v in spec["template"]["spec"]["volumes"] if v["name"] == "data"]
    assert "emptyDir" in data


def test_redis_persistence_uses_a_volume_claim_template(render):
    spec = render("values-06-hardened.yaml").one("StatefulSet")["spec"]
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["spec"]["storageClassName"] == "premium-rwo"
    assert "--appendonly yes" in spec["template"]["spec"]["containers"][0]["args"][0]


def test_external_redis_runs_nothing_and_reads_the_given_secret(render):
    rendered = render("values-03-external-redis.yaml")
    assert rendered.of_kind("StatefulSet") == []
    assert rendered.of_kind("Secret") == []
    assert rendered.application["args"]["redis_url"] == "rediss://wanserve-cache.abc123.cache.amazonaws.com:6379/0"
    head = rendered.rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    env = {e["name"]: e for e in head["containers"][0]["env"]}
    assert env["WANSERVE_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "wanserve-redis-auth",
        "key": "redis-password",
    }


def test_no_redis_sets_a_null_url_and_no_password(render):
    rendered = render(set_values=("redis.mode=none",))
    assert rendered.application["args"]["redis_url"] is None
    assert rendered.of_kind("StatefulSet") == []
    for _, spec in rendered.pod_specs():
        assert "WANSERVE_REDIS_PASSWORD" not in {e["name"] for e in spec["containers"][0].get("env", [])}


def test_existing_secret_replaces_the_generated_one_for_internal_redis(render):
    rendered = render(set_values=("redis.auth.existingSecret=my-redis",))
    assert rendered.of_kind("Secret") == []
    env = rendered.one("StatefulSet")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in env} == {"my-redis"}
