"""Tenancy in the chart: keys from a Secret mounted into every Ray pod, settings and quotas in the app args."""

from __future__ import annotations

import base64

import yaml

from serve.app.args import AppArgs
from serve.tenancy import KeysFile, TenantRegistry

SCENARIO = "values-08-tenancy.yaml"
MOUNT = "/etc/wanserve/tenancy"


def _ray_pods(rendered):
    return [(name, spec) for name, spec in rendered.pod_specs() if name.startswith("RayService")]


def _keys_volume(spec):
    return next((v for v in spec["volumes"] if v["name"] == "api-keys"), None)


def test_tenancy_is_off_by_default(render):
    rendered = render()
    assert "api_keys_file" not in rendered.application["args"]
    assert not [s for s in rendered.of_kind("Secret") if s["metadata"]["name"].endswith("-api-keys")]
    for _, spec in _ray_pods(rendered):
        assert _keys_volume(spec) is None


def test_every_ray_pod_mounts_the_keys_file_read_only(render):
    rendered = render(SCENARIO)
    for name, spec in _ray_pods(rendered):
        volume = _keys_volume(spec)
        assert volume is not None, name
        assert volume["secret"]["items"] == [{"key": "api-keys.yaml", "path": "api-keys.yaml"}]
        (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "api-keys"]
        assert mount == {"name": "api-keys", "mountPath": MOUNT, "readOnly": True}, name
    assert rendered.application["args"]["api_keys_file"] == f"{MOUNT}/api-keys.yaml"


def test_the_generated_secret_holds_only_key_hashes(render):
    rendered = render(SCENARIO)
    (secret,) = [s for s in rendered.of_kind("Secret") if s["metadata"]["name"] == "wanserve-api-keys"]
    keys = KeysFile.model_validate(yaml.safe_load(base64.b64decode(secret["data"]["api-keys.yaml"])))
    assert sorted(keys.tenants) == ["ops", "team-a", "team-b"]
    for entry in keys.tenants.values():
        assert entry.model_fields_set == {"key_hashes"}, "settings travel in the app args, not the Secret"
    (volume,) = {_keys_volume(spec)["secret"]["secretName"] for _, spec in _ray_pods(rendered)}
    assert volume == "wanserve-api-keys"


def test_quotas_and_weights_from_values_reach_the_app(render, tmp_path):
    rendered = render(SCENARIO)
    args = AppArgs.model_validate(rendered.application["args"])
    secret = next(s for s in rendered.of_kind("Secret") if s["metadata"]["name"] == "wanserve-api-keys")
    keys_file = tmp_path / "api-keys.yaml"
    keys_file.write_bytes(base64.b64decode(secret["data"]["api-keys.yaml"]))
    registry = TenantRegistry(str(keys_file), overrides=args.tenants, default_quotas=args.default_quotas)
    team_a, team_b, ops = (registry.tenant(name) for name in ("team-a", "team-b", "ops"))
    assert team_a.weight == 2 and team_a.shared_cache_opt_in
    assert team_a.quotas.max_concurrent_jobs == 8 and team_a.quotas.daily_video_seconds == 3600
    assert team_a.quotas.requests_per_minute is None  # its own quotas replace the defaults as a whole
    assert team_b.quotas.model_dump() == {"requests_per_minute": 30, "max_concurrent_jobs": 4,
                                          "daily_video_seconds": 600}
    assert ops.admin and not team_b.admin


def test_an_existing_secret_is_mounted_and_none_is_rendered(render):
    rendered = render(set_values=("tenancy.enabled=true", "tenancy.existingSecret=team-keys",
                                  "tenancy.secretKey=keys.yaml"))
    assert not [s for s in rendered.of_kind("Secret") if "api-keys" in s["metadata"]["name"]]
    for name, spec in _ray_pods(rendered):
        volume = _keys_volume(spec)
        assert volume["secret"]["secretName"] == "team-keys", name
        assert volume["secret"]["items"] == [{"key": "keys.yaml", "path": "api-keys.yaml"}]


def test_tenancy_without_any_key_is_refused(render_error):
    message = render_error("tenancy.enabled=true")
    assert "tenancy.enabled is true but no key is configured" in message


def test_a_plain_key_in_key_hashes_is_refused(render_error):
    message = render_error("tenancy.enabled=true", "tenancy.tenants.team-a.keyHashes[0]=ws-plainkey")
    assert "/tenancy/tenants/team-a/keyHashes/0" in message


def test_a_tenant_name_that_cannot_be_a_label_is_refused(render_error):
    message = render_error("tenancy.enabled=true", "tenancy.tenants.Team_A.admin=true")
    assert "'Team_A' does not match pattern" in message
