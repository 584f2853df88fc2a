"""The head survives a restart: GCS fault tolerance in the chart's Redis (or an external one), with the
password from the Redis Secret; that Redis writes its append-only file every second."""

from __future__ import annotations


def _gcs(rendered):
    return rendered.rayservice["spec"]["rayClusterConfig"].get("gcsFaultToleranceOptions")


def test_the_gcs_keeps_its_state_in_the_releases_redis(rendered, release, namespace):
    gcs = _gcs(rendered)
    if rendered.scenario == "values-03-external-redis.yaml":
        assert gcs["redisAddress"] == "rediss://wanserve-jobs.abc123.cache.amazonaws.com:6379"
        secret = ("wanserve-redis-auth", "redis-password")
    else:
        assert gcs["redisAddress"] == f"{release}-redis.{namespace}.svc:6379"
        (redis,) = rendered.of_kind("StatefulSet")
        env = {e["name"]: e for e in redis["spec"]["template"]["spec"]["containers"][0]["env"]}
        ref = env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        secret = (ref["name"], ref["key"])  # the very password the Redis starts with
    ref = gcs["redisPassword"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == secret


def test_the_ray_pods_may_reach_that_redis(render):
    rendered = render()
    (policy,) = [p for p in rendered.of_kind("NetworkPolicy") if p["metadata"]["name"].endswith("-redis")]
    peers = [peer["podSelector"]["matchLabels"] for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    head_labels = rendered.rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["metadata"]["labels"]
    assert any(peer.items() <= head_labels.items() for peer in peers)


def test_no_redis_means_no_fault_tolerance(render):
    assert _gcs(render(set_values=("redis.mode=none",))) is None
    assert _gcs(render(set_values=("ray.gcsFaultTolerance.enabled=false",))) is None


def test_an_explicit_redis_address_wins(render):
    gcs = _gcs(render(set_values=("ray.gcsFaultTolerance.redisAddress=gcs-redis.infra:6379",)))
    assert gcs["redisAddress"] == "gcs-redis.infra:6379"


def test_the_durable_redis_fsyncs_its_append_only_file_every_second(render):
    (redis,) = render("values-06-hardened.yaml").of_kind("StatefulSet")
    command = redis["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "--appendonly yes" in command and "--appendfsync everysec" in command
    (redis,) = render().of_kind("StatefulSet")
    assert "--appendonly no" in redis["spec"]["template"]["spec"]["containers"][0]["args"][0]
