"""Access fails closed: the route table of serve.tenancy.access, mode by mode (issue 19, point 3 and 11)."""

from __future__ import annotations

import pytest

from serve.tenancy import AccessDenied, Caller, TenantRegistry, add_key, authorize
from serve.tenancy.keys import KeysFile, save_keys_file

ADMIN_KEY, METRICS_KEY = "admin-s3cret", "metrics-s3cret"


@pytest.fixture
def keyed(tmp_path):
    path = tmp_path / "keys.yaml"
    keys = {"tenant": add_key(path, "team-a"), "admin": add_key(path, "ops", admin=True)}
    return TenantRegistry(str(path)), keys


def _decide(registry, path, token=None):
    header = f"Bearer {token}" if token else None
    return authorize(path, header, registry, admin_key=ADMIN_KEY, metrics_key=METRICS_KEY)


def _status(decision) -> int:
    return 200 if isinstance(decision, Caller) else decision.status


def test_an_empty_keys_file_refuses_every_tenant_request_with_a_clear_503(tmp_path):
    path = tmp_path / "keys.yaml"
    save_keys_file(KeysFile(), path)
    registry = TenantRegistry(str(path))
    denied = _decide(registry, "/v1/videos")
    assert isinstance(denied, AccessDenied)
    assert (denied.status, denied.code) == (503, "access_not_configured")
    assert "keys file" in denied.message


def test_a_missing_keys_file_refuses_every_tenant_request_even_with_a_key(tmp_path, keyed):
    _, keys = keyed
    registry = TenantRegistry(str(tmp_path / "nowhere.yaml"))
    assert _status(_decide(registry, "/v1/videos", keys["tenant"])) == 503
    assert _status(_decide(registry, "/v1/videos/video_" + "0" * 24)) == 503


def test_operators_keep_their_routes_while_tenant_access_is_unconfigured(tmp_path):
    registry = TenantRegistry(str(tmp_path / "nowhere.yaml"))
    assert _status(_decide(registry, "/admin/policy", ADMIN_KEY)) == 200
    assert _status(_decide(registry, "/metrics", METRICS_KEY)) == 200
    assert _status(_decide(registry, "/healthz")) == 200


def test_the_admin_key_is_not_a_tenant_key(keyed):
    registry, _ = keyed
    assert _status(_decide(registry, "/v1/videos", ADMIN_KEY)) == 401


@pytest.mark.parametrize("path", ["/metrics", "/v1/ops", "/v1/ops/history"])
def test_operations_data_needs_an_operator_credential_in_keyed_mode(keyed, path):
    registry, keys = keyed
    assert _status(_decide(registry, path)) == 401
    assert _status(_decide(registry, path, keys["tenant"])) == 403
    assert _status(_decide(registry, path, METRICS_KEY)) == 200
    assert _status(_decide(registry, path, ADMIN_KEY)) == 200
    assert _status(_decide(registry, path, keys["admin"])) == 200


def test_the_metrics_key_opens_nothing_else(keyed):
    registry, _ = keyed
    assert _status(_decide(registry, "/admin/policy", METRICS_KEY)) == 401
    assert _status(_decide(registry, "/v1/videos", METRICS_KEY)) == 401


def test_open_mode_callers_are_anonymous_never_admin():
    registry = TenantRegistry(None)
    caller = _decide(registry, "/v1/videos")
    assert isinstance(caller, Caller) and caller.name == "anonymous" and not caller.admin
    assert _status(_decide(registry, "/admin/policy")) == 401
    assert _status(authorize("/admin/policy", None, registry)) == 403


def test_a_keys_file_cannot_claim_the_anonymous_tenant(tmp_path):
    with pytest.raises(ValueError, match="not allowed"):
        add_key(tmp_path / "keys.yaml", "anonymous")
    (tmp_path / "claim.yaml").write_text("tenants: {anonymous: {key_hashes: ['sha256:aa:bb']}}\n")
    registry = TenantRegistry(str(tmp_path / "claim.yaml"))
    assert registry.mode == "unconfigured"


def test_errors_never_repeat_the_presented_key(keyed):
    registry, _ = keyed
    for path in ("/v1/videos", "/admin/policy", "/metrics"):
        denied = _decide(registry, path, "ws-leaked-secret-value")
        assert isinstance(denied, AccessDenied) and "leaked" not in denied.message
