"""Tenancy in the chart: keyed by default, keys from a Secret mounted into every Ray pod, settings in the app args."""

from __future__ import annotations

import base64

import pytest
import yaml

from serve.app.args import AppArgs
from serve.tenancy import KeysFile, TenantRegistry

SCENARIO = "values-08-tenancy.yaml"
MOUNT = "/etc/wanserve/tenancy"


def _ray_pods(rendered):
    return [(name, spec) for name, spec in rendered.pod_specs() if name.startswith("RayService")]


def _keys_volume(spec):
    return next((v for v in spec["volumes"] if v["name"] == "api-keys"), None)


def _keys_file(rendered, tmp_path, name="wanserve-api-keys"):
    """The keys file the generated Secret holds, written where the app can read it."""
    secret = rendered.named("Secret", name)
    path = tmp_path / "api-keys.yaml"
    path.write_bytes(base64.b64decode(secret["data"]["api-keys.yaml"]))
    return path


def test_tenancy_is_on_by_default_and_fails_closed_without_keys(render, tmp_path):
    rendered = render()
    args = AppArgs.model_validate(rendered.application["args"])
    assert args.api_keys_file == f"{MOUNT}/api-keys.yaml"
    for name, spec in _ray_pods(rendered):
        assert _keys_volume(spec)["secret"]["secretName"] == "wanserve-api-keys", name
    # The app itself reads the rendered file: no key yet, so every tenant request is refused.
    registry = TenantRegistry(str(_keys_file(rendered, tmp_path)), default_quotas=args.default_quotas)
    assert registry.mode == "unconfigured"
    assert registry.enforcing


def test_open_mode_only_when_asked_and_the_network_policy_stays_on(render):
    rendered = render("values-09-open-mode.yaml")
    assert "api_keys_file" not in rendered.application["args"]
    assert not [s for s in rendered.of_kind("Secret") if s["metadata"]["name"].endswith("-api-keys")]
    for _, spec in _ray_pods(rendered):
        assert _keys_volume(spec) is None
    assert {p["metadata"]["name"] for p in rendered.of_kind("NetworkPolicy")} >= {"wanserve-ray", "wanserve-redis"}
    # The admin key still guards /admin in open mode.
    assert "WANSERVE_ADMIN_KEY" in rendered.env_of("RayService head")


def test_default_quotas_mirror_the_apps_and_are_not_unlimited(render, default_values):
    args = AppArgs.model_validate(render().application["args"])
    assert args.default_quotas == AppArgs().default_quotas
    assert None not in args.default_quotas.model_dump().values()
    assert default_values["tenancy"]["defaultQuotas"] == {
        "requestsPerMinute": 30, "maxConcurrentJobs": 8, "dailyComputeUnits": 200, "maxStorageBytes": 2147483648,
    }


def test_a_null_default_quota_is_unlimited_not_the_apps_default(render, tmp_path):
    # Helm drops a key whose override is null: the chart must still say "unlimited" to the app.
    values = tmp_path / "unlimited.yaml"
    values.write_text("tenancy:\n  defaultQuotas:\n    maxStorageBytes: null\n    dailyComputeUnits: 12.5\n")
    args = AppArgs.model_validate(render(values_files=(values,)).application["args"])
    assert args.default_quotas.max_storage_bytes is None
    assert args.default_quotas.daily_compute_units == 12.5
    assert args.default_quotas.requests_per_minute == 30


def test_every_ray_pod_mounts_the_keys_file_read_only(render):
    rendered = render(SCENARIO)
    for name, spec in _ray_pods(rendered):
        volume = _keys_volume(spec)
        assert volume is not None, name
        assert volume["secret"]["items"] == [{"key": "api-keys.yaml", "path": "api-keys.yaml"}]
        (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "api-keys"]
        assert mount == {"name": "api-keys", "mountPath": MOUNT, "readOnly": True}, name
    assert rendered.application["args"]["api_keys_file"] == f"{MOUNT}/api-keys.yaml"


def test_the_generated_secret_holds_only_key_hashes(render, tmp_path):
    rendered = render(SCENARIO)
    keys = KeysFile.model_validate(yaml.safe_load(_keys_file(rendered, tmp_path).read_text()))
    assert sorted(keys.tenants) == ["ops", "team-a", "team-b"]
    for entry in keys.tenants.values():
        assert entry.model_fields_set == {"key_hashes"}, "settings travel in the app args, not the Secret"
    (volume,) = {_keys_volume(spec)["secret"]["secretName"] for _, spec in _ray_pods(rendered)}
    assert volume == "wanserve-api-keys"


def test_quotas_weights_and_queue_share_from_values_reach_the_app(render, tmp_path):
    rendered = render(SCENARIO)
    args = AppArgs.model_validate(rendered.application["args"])
    registry = TenantRegistry(str(_keys_file(rendered, tmp_path)), overrides=args.tenants,
                              default_quotas=args.default_quotas)
    assert registry.mode == "keyed"
    team_a, team_b, ops = (registry.tenant(name) for name in ("team-a", "team-b", "ops"))
    assert team_a.weight == 2 and team_a.shared_cache_opt_in
    assert team_a.quotas.max_concurrent_jobs == 8 and team_a.quotas.daily_compute_units == 400
    assert team_a.quotas.max_storage_bytes == 10 * 2**30
    assert team_a.quotas.requests_per_minute is None  # its own quotas replace the defaults as a whole
    assert team_b.quotas.model_dump() == {"requests_per_minute": 30, "max_concurrent_jobs": 4,
                                          "daily_compute_units": 50, "max_storage_bytes": 2**30}
    assert ops.admin and not team_b.admin
    assert args.lanes.tenant_queue_share == 0.25


def test_an_existing_secret_is_mounted_and_none_is_rendered(render):
    rendered = render(set_values=("tenancy.enabled=true", "tenancy.existingSecret=team-keys",
                                  "tenancy.secretKey=keys.yaml"))
    assert not [s for s in rendered.of_kind("Secret") if "api-keys" in s["metadata"]["name"]]
    for name, spec in _ray_pods(rendered):
        volume = _keys_volume(spec)
        assert volume["secret"]["secretName"] == "team-keys", name
        assert volume["secret"]["items"] == [{"key": "keys.yaml", "path": "api-keys.yaml"}]


def test_a_plain_key_in_key_hashes_is_refused(render_error):
    message = render_error("tenancy.enabled=true", "tenancy.tenants.team-a.keyHashes[0]=ws-plainkey")
    assert "/tenancy/tenants/team-a/keyHashes/0" in message


def test_a_tenant_name_that_cannot_be_a_label_is_refused(render_error):
    message = render_error("tenancy.enabled=true", "tenancy.tenants.Team_A.admin=true")
    assert "'Team_A' does not match pattern" in message


@pytest.mark.parametrize("name", ["anonymous", "unknown", "shared"])
def test_a_reserved_tenant_name_is_refused(render_error, name):
    message = render_error(f"tenancy.tenants.{name}.admin=true")
    assert f"tenancy.tenants.{name}: the names anonymous, unknown and shared are reserved" in message


def test_the_old_video_seconds_quota_is_refused_with_its_path(render_error):
    message = render_error("tenancy.defaultQuotas.dailyVideoSeconds=600")
    assert "/tenancy/defaultQuotas" in message and "dailyVideoSeconds" in message
