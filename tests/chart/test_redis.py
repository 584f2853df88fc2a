"""Redis: a durable one that never evicts and a cache-only one that does, or external URLs, or none.

The password always comes from one Secret: both Redis start with it, every Ray pod gets it as
WANSERVE_REDIS_PASSWORD, and no URL in the app args carries it.
"""

from __future__ import annotations

import shlex

import pytest

RAY_PODS = ("RayService head", "RayService worker text-encoder", "RayService worker denoiser",
            "RayService worker decoder")


def _redis_command(pod_spec) -> dict[str, str]:
    """The redis-server options of a Redis pod, as {option: value}."""
    (container,) = pod_spec["containers"]
    assert container["command"] == ["/bin/sh", "-c"]
    words = shlex.split(container["args"][0])
    assert words[:2] == ["exec", "redis-server"]
    options = words[2:]
    return {options[i].removeprefix("--"): options[i + 1] for i in range(0, len(options), 2)}


def _durable(rendered):
    return rendered.named("StatefulSet", "wanserve-redis")["spec"]["template"]["spec"]


def _cache(rendered):
    return rendered.named("Deployment", "wanserve-redis-cache")["spec"]["template"]["spec"]


def test_durable_redis_never_evicts_and_cache_redis_evicts_least_recently_used(render):
    rendered = render("defaults")
    durable, cache = _redis_command(_durable(rendered)), _redis_command(_cache(rendered))
    assert durable["maxmemory-policy"] == "noeviction"
    assert cache["maxmemory-policy"] == "allkeys-lru"
    assert (durable["maxmemory"], cache["maxmemory"]) == ("6gb", "768mb")


def test_both_redis_require_the_password_from_the_one_secret(render):
    rendered = render("defaults")
    (secret,) = [s for s in rendered.of_kind("Secret") if s["metadata"]["name"] == "wanserve-redis"]
    assert len(secret["data"]["redis-password"]) >= 32
    for spec in (_durable(rendered), _cache(rendered)):
        # The shell expands the variable: the password is never on the pod spec's command line.
        assert _redis_command(spec)["requirepass"] == "$REDIS_PASSWORD"
        env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in spec["containers"][0]["env"]}
        assert env["REDIS_PASSWORD"] == env["REDISCLI_AUTH"] == {"name": "wanserve-redis", "key": "redis-password"}


def test_cache_redis_keeps_nothing_on_disk(render):
    rendered = render("values-06-hardened.yaml")  # persistence on for the durable one
    cache = _redis_command(_cache(rendered))
    assert cache["appendonly"] == "no" and cache["save"] == ""
    assert {v["name"] for v in _cache(rendered)["volumes"]} == {"tmp"}
    assert rendered.named("Deployment", "wanserve-redis-cache")["spec"]["strategy"] == {"type": "Recreate"}


def test_app_args_carry_both_urls_without_a_password(render, namespace):
    args = render("defaults").application["args"]
    assert args["redis_url"] == f"redis://wanserve-redis.{namespace}.svc:6379/0"
    assert args["cache_redis_url"] == f"redis://wanserve-redis-cache.{namespace}.svc:6379/0"
    for url in (args["redis_url"], args["cache_redis_url"]):
        assert "@" not in url


def test_each_url_names_a_service_that_selects_its_redis(render):
    rendered = render("defaults")
    args = rendered.application["args"]
    for url, workload in ((args["redis_url"], rendered.named("StatefulSet", "wanserve-redis")),
                          (args["cache_redis_url"], rendered.named("Deployment", "wanserve-redis-cache"))):
        service = rendered.named("Service", url.split("//")[1].split(".")[0])
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items(), url
        assert service["spec"]["ports"] == [{"name": "redis", "port": 6379, "targetPort": "redis"}]
    # The two Services never select each other's pods.
    durable_selector = rendered.named("Service", "wanserve-redis")["spec"]["selector"]
    cache_labels = rendered.named("Deployment", "wanserve-redis-cache")["spec"]["template"]["metadata"]["labels"]
    assert not durable_selector.items() <= cache_labels.items()


@pytest.mark.parametrize(("case", "secret"), [("defaults", "wanserve-redis"),
                                              ("values-03-external-redis.yaml", "wanserve-redis-auth")])
def test_every_ray_container_gets_the_password_from_the_secret(render, case, secret):
    rendered = render(case)
    expected = {"name": secret, "key": "redis-password"}
    for pod in RAY_PODS:
        source = rendered.env_of(pod)["WANSERVE_REDIS_PASSWORD"]
        assert source == {"name": "WANSERVE_REDIS_PASSWORD", "valueFrom": {"secretKeyRef": expected}}, pod


def test_without_the_cache_redis_the_cache_shares_the_durable_one(render):
    rendered = render(set_values=("redis.cache.enabled=false",))
    assert "cache_redis_url" not in rendered.application["args"]
    assert not [d for d in rendered.of_kind("Deployment") if "redis" in d["metadata"]["name"]]
    redis_services = [s["metadata"]["name"] for s in rendered.of_kind("Service") if "redis" in s["metadata"]["name"]]
    assert redis_services == ["wanserve-redis", "wanserve-redis-headless"]


def test_internal_redis_without_persistence_uses_an_emptydir(render):
    spec = render("defaults").named("StatefulSet", "wanserve-redis")["spec"]
    assert "volumeClaimTemplates" not in spec
    (data,) = [v for v in spec["template"]["spec"]["volumes"] if v["name"] == "data"]
    assert "emptyDir" in data


def test_redis_persistence_uses_a_volume_claim_template(render):
    spec = render("values-06-hardened.yaml").named("StatefulSet", "wanserve-redis")["spec"]
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["spec"]["storageClassName"] == "premium-rwo"
    assert _redis_command(spec["template"]["spec"])["appendonly"] == "yes"


def test_external_redis_runs_nothing_and_wires_password_cache_url_and_ca(render):
    rendered = render("values-03-external-redis.yaml")
    assert rendered.of_kind("StatefulSet") == []
    assert not [obj["kind"] for obj in rendered.objects if obj["metadata"]["name"].startswith("wanserve-redis")]
    args = rendered.application["args"]
    assert args["redis_url"] == "rediss://wanserve-jobs.abc123.cache.amazonaws.com:6379/0"
    assert args["cache_redis_url"] == "rediss://wanserve-cache.abc123.cache.amazonaws.com:6379/0"
    for pod in RAY_PODS:
        env = rendered.env_of(pod)
        assert env["WANSERVE_REDIS_TLS_CA_FILE"]["value"] == "/etc/wanserve/redis-tls/ca.crt", pod
        spec = dict(rendered.pod_specs())[pod]
        (volume,) = [v for v in spec["volumes"] if v["name"] == "redis-tls-ca"]
        assert volume["secret"]["secretName"] == "wanserve-redis-ca"
        assert volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
        (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "redis-tls-ca"]
        assert mount == {"name": "redis-tls-ca", "mountPath": "/etc/wanserve/redis-tls", "readOnly": True}


def test_external_redis_without_a_cache_url_keeps_the_cache_in_it(render):
    rendered = render(set_values=("redis.mode=external", "redis.external.url=redis://r.example:6379/0"))
    assert "cache_redis_url" not in rendered.application["args"]
    assert "WANSERVE_REDIS_TLS_CA_FILE" not in rendered.env_of("RayService head")


def test_no_redis_sets_a_null_url_and_no_password(render):
    rendered = render(set_values=("redis.mode=none",))
    assert rendered.application["args"]["redis_url"] is None
    assert "cache_redis_url" not in rendered.application["args"]
    assert rendered.of_kind("StatefulSet") == []
    for _, spec in rendered.pod_specs():
        assert "WANSERVE_REDIS_PASSWORD" not in {e["name"] for e in spec["containers"][0].get("env", [])}


def test_existing_secret_replaces_the_generated_one_for_internal_redis(render):
    rendered = render(set_values=("redis.auth.existingSecret=my-redis",))
    assert not [s for s in rendered.of_kind("Secret") if "redis" in s["metadata"]["name"]]
    for spec in (_durable(rendered), _cache(rendered)):
        assert {e["valueFrom"]["secretKeyRef"]["name"] for e in spec["containers"][0]["env"]} == {"my-redis"}
    source = rendered.env_of("RayService head")["WANSERVE_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert source["name"] == "my-redis"


def test_eviction_policy_is_not_a_value(render_error):
    # Any policy but noeviction would let one tenant's writes evict the others' jobs and quotas.
    assert "maxMemoryPolicy' not allowed" in render_error("redis.maxMemoryPolicy=volatile-lru")


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        (("redis.mode=external", "redis.external.url=redis://r:6379/0", "redis.external.tls.caSecret=ca"),
         "the CA is used only for TLS to an external Redis"),
        (("redis.external.cacheUrl=redis://c:6379/0",), "it is used only with redis.mode=external"),
        (("redis.mode=external", "redis.external.url=rediss://r:6379/0", "redis.external.cacheUrl=redis://c:6379/0"),
         "the password would cross the network in clear text"),
    ],
)
def test_redis_settings_that_do_not_fit_together_are_refused(render_error, values, complaint):
    assert complaint in render_error(*values)
