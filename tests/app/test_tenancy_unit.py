"""Tenancy without Ray: key hashing, the keys file, its reloading, access rules and quota arithmetic."""

from __future__ import annotations

import time

import pytest
import yaml

from serve.cli import main
from serve.redis_link import RedisLink
from serve.tenancy import (
    AccessDenied,
    Caller,
    MemoryQuotaState,
    QuotaExceeded,
    QuotaKeeper,
    RedisQuotaState,
    TenantQuotas,
    TenantRegistry,
    TenantSettings,
    add_key,
    authorize,
    generate_key,
    hash_key,
    key_matches,
)
from serve.tenancy.quotas import seconds_to_utc_midnight


def test_a_key_is_ws_and_32_url_safe_characters():
    key = generate_key()
    assert key.startswith("ws-") and len(key) == 35
    assert generate_key() != key


def test_a_stored_hash_matches_its_key_only_and_hides_it():
    key = generate_key()
    stored = hash_key(key)
    assert key not in stored and key[3:] not in stored
    assert key_matches(key, stored)
    assert not key_matches(generate_key(), stored)
    assert hash_key(key) != stored  # a fresh salt each time
    assert not key_matches(key, "md5:x:y") and not key_matches(key, "garbage")


def test_keys_add_prints_the_key_once_and_stores_only_its_hash(tmp_path, capsys):
    path = tmp_path / "keys.yaml"
    assert main(["keys", "add", "team-a", "--file", str(path)]) == 0
    key = capsys.readouterr().out.strip()
    text = path.read_text()
    assert key not in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    data = yaml.safe_load(text)
    assert data["tenants"]["team-a"]["admin"] is False
    assert key_matches(key, data["tenants"]["team-a"]["key_hashes"][0])
    assert main(["keys", "add", "ops", "--admin", "--file", str(path)]) == 0
    assert yaml.safe_load(path.read_text())["tenants"]["ops"]["admin"] is True


def test_keys_add_refuses_a_name_that_cannot_be_a_label(tmp_path, capsys):
    assert main(["keys", "add", "Team A", "--file", str(tmp_path / "keys.yaml")]) == 2
    assert "not allowed" in capsys.readouterr().err


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_no_keys_file_configured_means_open_mode_as_the_anonymous_tenant():
    registry = TenantRegistry(None)
    assert registry.mode == "open" and not registry.enforcing
    assert registry.tenant("anonymous").name == "anonymous"
    assert registry.metric_label("anonymous") == "anonymous"


def test_a_configured_keys_file_that_is_missing_refuses_everything(tmp_path):
    registry = TenantRegistry(str(tmp_path / "absent.yaml"))
    assert registry.mode == "unconfigured" and registry.enforcing
    assert registry.metric_label("anonymous") == "unknown"


def test_the_registry_picks_up_a_new_keys_file_within_its_interval(tmp_path):
    path = tmp_path / "keys.yaml"
    clock = FakeClock()
    registry = TenantRegistry(str(path), clock=clock, check_interval_s=1.0)
    assert registry.mode == "unconfigured"
    key = add_key(path, "team-a")
    assert registry.mode == "unconfigured"  # checked less than a second ago
    clock.now += 1.0
    assert registry.mode == "keyed"
    assert registry.authenticate(key).name == "team-a"  # type: ignore[union-attr]
    assert registry.authenticate(generate_key()) is None
    # A file that vanishes after a good read (a Secret being swapped) keeps the last good tenants.
    path.unlink()
    clock.now += 1.0
    assert registry.mode == "keyed" and registry.authenticate(key) is not None


def test_a_broken_keys_file_never_opens_the_api(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text("tenants: [this is not a map")
    registry = TenantRegistry(str(path))
    assert registry.mode == "unconfigured"
    assert registry.authenticate(generate_key()) is None


def test_app_args_settings_win_over_the_file_and_default_quotas_fill_in(tmp_path):
    path = tmp_path / "keys.yaml"
    add_key(path, "team-a")
    add_key(path, "team-b")
    registry = TenantRegistry(
        str(path),
        overrides={"team-a": TenantSettings(weight=3, quotas=TenantQuotas(max_concurrent_jobs=2))},
        default_quotas=TenantQuotas(requests_per_minute=10),
    )
    assert registry.weight("team-a") == 3 and registry.weight("team-b") == 1
    assert registry.tenant("team-a").quotas.max_concurrent_jobs == 2
    assert registry.tenant("team-b").quotas.requests_per_minute == 10
    assert registry.metric_label("team-a") == "team-a"
    assert registry.metric_label("someone-else") == "unknown"


@pytest.fixture
def keyed(tmp_path):
    path = tmp_path / "keys.yaml"
    keys = {"tenant": add_key(path, "team-a"), "admin": add_key(path, "ops", admin=True)}
    return TenantRegistry(str(path)), keys


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/docs", "/openapi.json", "/", "/static/app.js"])
def test_open_routes_need_no_key(keyed, path):
    registry, _ = keyed
    assert isinstance(authorize(path, None, registry), Caller)


@pytest.mark.parametrize(("header", "code"), [
    (None, "unauthorized"),
    ("Basic dXNlcjpwYXNz", "unauthorized"),
    ("Bearer ", "unauthorized"),
    ("Bearer ws-not-a-real-key-000000000000000000", "invalid_api_key"),
])
def test_a_missing_or_wrong_key_is_401(keyed, header, code):
    registry, _ = keyed
    denied = authorize("/v1/videos", header, registry)
    assert isinstance(denied, AccessDenied) and (denied.status, denied.code) == (401, code)
    assert "ws-not-a-real-key" not in denied.message


def test_a_tenant_key_is_that_tenant_and_not_an_admin(keyed):
    registry, keys = keyed
    caller = authorize("/v1/videos", f"Bearer {keys['tenant']}", registry)
    assert isinstance(caller, Caller) and caller.name == "team-a" and not caller.admin
    denied = authorize("/admin/policy", f"Bearer {keys['tenant']}", registry)
    assert isinstance(denied, AccessDenied) and (denied.status, denied.code) == (403, "forbidden")


def test_an_admin_key_opens_the_admin_routes(keyed):
    registry, keys = keyed
    caller = authorize("/admin/policy", f"bearer {keys['admin']}", registry)
    assert isinstance(caller, Caller) and caller.admin


def test_the_apps_admin_key_still_works_for_admin_routes_only(keyed):
    registry, _ = keyed
    assert isinstance(authorize("/admin/policy", "Bearer s3cret", registry, admin_key="s3cret"), Caller)
    assert isinstance(authorize("/v1/videos", "Bearer s3cret", registry, admin_key="s3cret"), AccessDenied)


def test_open_mode_opens_admin_routes_only_with_the_admin_key(tmp_path):
    registry = TenantRegistry(None)
    closed = authorize("/admin/policy", None, registry)
    assert isinstance(closed, AccessDenied) and (closed.status, closed.code) == (403, "admin_not_configured")
    assert isinstance(authorize("/admin/policy", None, registry, admin_key="s3cret"), AccessDenied)
    assert isinstance(authorize("/admin/policy", "Bearer s3cret", registry, admin_key="s3cret"), Caller)
    assert authorize("/v1/videos", None, registry, admin_key="s3cret") == Caller(registry.tenant("anonymous"), False)


def _keeper(state, clock, **quotas):
    return QuotaKeeper(state, lambda _tenant: TenantQuotas(**quotas), clock=clock)


@pytest.fixture(params=["memory", "redis"])
def quota_state(request):
    if request.param == "memory":
        return MemoryQuotaState()
    url = request.getfixturevalue("redis_url")
    return RedisQuotaState(RedisLink(url))


async def test_requests_per_minute_is_a_rolling_window_with_retry_after(quota_state):
    clock = FakeClock()
    clock.now = time.time()
    keeper = _keeper(quota_state, clock, requests_per_minute=3)
    for _ in range(3):
        await keeper.take_request("a")
        clock.now += 10
    with pytest.raises(QuotaExceeded) as refused:
        await keeper.take_request("a")
    assert refused.value.limit == "requests_per_minute" and refused.value.retry_after == 30
    await keeper.take_request("b")  # another tenant's window
    clock.now += 30.5
    await keeper.take_request("a")


def test_the_concurrent_job_limit_and_its_refusal_name_the_quota():
    # The work queue counts a tenant's unfinished jobs (tests/app/test_durable_work.py); the keeper words it.
    keeper = _keeper(MemoryQuotaState(), FakeClock(), max_concurrent_jobs=2)
    assert keeper.max_concurrent_jobs("a") == 2
    refused = keeper.concurrency_exceeded("a", unfinished=2, limit=2)
    assert refused.limit == "max_concurrent_jobs" and refused.retry_after > 0
    assert "2 videos queued or generating (limit 2)" in refused.message


def test_seconds_to_utc_midnight():
    assert seconds_to_utc_midnight(1_700_006_400.0 - 1.5) == 2
    assert seconds_to_utc_midnight(1_700_006_400.0) == 86_400


async def test_redis_quotas_fall_back_to_memory_while_redis_is_down(redis_url, redis_server):
    keeper = _keeper(RedisQuotaState(RedisLink(redis_url, cooldown_s=0.1)), time.time, requests_per_minute=1)
    with redis_server.down():
        await keeper.take_request("a")
        with pytest.raises(QuotaExceeded):
            await keeper.take_request("a")
