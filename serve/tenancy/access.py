"""Who may call which route. Access fails closed.

A pure function of (path, Authorization header, registry, admin key, metrics key), so the
ingress's middleware stays a thin adapter and the rules are unit-tested without Ray. Error messages
never repeat the presented key.

| route                         | open mode (no keys file)    | keyed mode                        |
|-------------------------------|-----------------------------|-----------------------------------|
| probes, static pages, docs    | anyone                      | anyone                            |
| ``/v1/...`` (videos)          | anyone, as ``anonymous``    | a tenant key                      |
| ``/metrics``                  | anyone                      | the metrics key or an admin key   |
| ``/v1/ops``, ``/v1/ops/history`` | anyone                   | the metrics key or an admin key   |
| ``/admin/...``                | the admin key only          | the admin key or an admin tenant  |

A keys file that is configured but unusable (missing, empty, keyless) refuses every tenant request
with 503 ``access_not_configured``; the admin and metrics keys keep working, so operators can still
see and steer the service. Without an admin key the admin routes are closed to everyone.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from serve.tenancy.registry import OPEN_TENANT, Tenant, TenantRegistry

# Probes and the API description stay open: Kubernetes and people reading docs carry no key. So do
# the static web pages (the playground and operations page): they hold no data, and the API calls
# they make carry the key the user types in.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc",
                        "/openapi.json", "/", "/ops", "/favicon.ico"})
OPEN_PREFIXES = ("/static/", "/swagger/")
# Read-only operations data: tenant names, volumes, queues. Operators' credentials only when keyed.
OPERATOR_PATHS = frozenset({"/metrics", "/v1/ops", "/v1/ops/history"})
ADMIN_PREFIX = "/admin/"


@dataclass(frozen=True)
class Caller:
    """The authenticated caller of one request."""

    tenant: Tenant
    admin: bool

    @property
    def name(self) -> str:
        return self.tenant.name


@dataclass(frozen=True)
class AccessDenied:
    """Why a request is refused: HTTP status, stable code and a message a client can act on."""

    status: int
    code: str
    message: str


OPEN_CALLER = Caller(OPEN_TENANT, admin=False)
_ADMIN = Caller(Tenant("admin", admin=True), admin=True)
_OPERATOR = Caller(Tenant("operator"), admin=False)

_NEEDS_KEY = AccessDenied(401, "unauthorized",
                          "this API needs an API key: send Authorization: Bearer <key> "
                          "(an administrator creates one with `wanserve keys add TENANT`)")
_BAD_KEY = AccessDenied(401, "invalid_api_key", "the API key is not valid: check it, or ask for a new one")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _same(token: str | None, secret: str | None) -> bool:
    return bool(secret) and token is not None and hmac.compare_digest(token.encode(), str(secret).encode())


def authorize(
    path: str,
    authorization: str | None,
    registry: TenantRegistry,
    admin_key: str | None = None,
    metrics_key: str | None = None,
) -> Caller | AccessDenied:
    """Decide one request. ``admin_key`` / ``metrics_key`` are the app's (AppArgs)."""
    if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
        return OPEN_CALLER
    token = bearer_token(authorization)
    mode = registry.mode
    operator_route = path.startswith(ADMIN_PREFIX) or path in OPERATOR_PATHS
    if operator_route and _same(token, admin_key):
        # The admin key opens the operators' routes only: it is nobody's tenant key.
        return _ADMIN
    if path.startswith(ADMIN_PREFIX):
        return _admin_route(token, registry, admin_key, mode)
    if path in OPERATOR_PATHS:
        if mode == "open" or _same(token, metrics_key):
            return _OPERATOR
        tenant = registry.authenticate(token) if token is not None and mode == "keyed" else None
        if tenant is not None and tenant.admin:
            return Caller(tenant, admin=True)
        return AccessDenied(401 if tenant is None else 403, "unauthorized" if tenant is None else "forbidden",
                            f"{path} needs the metrics key or an admin key: send Authorization: Bearer <key>")
    if mode == "open":
        return OPEN_CALLER
    if mode == "unconfigured":
        return AccessDenied(503, "access_not_configured",
                            "API keys are configured but none can be read (the keys file is missing, empty or "
                            "invalid), so every request is refused; an administrator must fix the keys file")
    if token is None:
        return _NEEDS_KEY
    tenant = registry.authenticate(token)
    if tenant is None:
        return _BAD_KEY
    return Caller(tenant, admin=tenant.admin)


def _admin_route(
    token: str | None, registry: TenantRegistry, admin_key: str | None, mode: str
) -> Caller | AccessDenied:
    if mode == "keyed" and token is not None:
        tenant = registry.authenticate(token)
        if tenant is not None and tenant.admin:
            return Caller(tenant, admin=True)
        if tenant is not None:
            return AccessDenied(403, "forbidden",
                                f"tenant {tenant.name!r} may not call admin endpoints: use an admin key")
    if not admin_key and mode != "keyed":
        return AccessDenied(403, "admin_not_configured",
                            "the admin endpoints are closed: no admin key is configured "
                            "(set WANSERVE_ADMIN_KEY, or the app's admin_key)")
    if token is None:
        return AccessDenied(401, "unauthorized",
                            "this endpoint needs the admin key: send Authorization: Bearer <admin key>")
    return _BAD_KEY
