"""Who may call which route: open routes, tenant routes (any key) and admin routes (an admin key).

A pure function of (path, Authorization header, registry, legacy admin key), so the ingress's
middleware stays a thin adapter and the rules are unit-tested without Ray. Error messages never
repeat the presented key.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from serve.tenancy.registry import OPEN_TENANT, Tenant, TenantRegistry

# Probes, metrics and the API description stay open: Kubernetes, Prometheus and people reading docs
# carry no key. So do the static web pages (the playground and operations page): they hold no data,
# and the API calls they make carry the key the user types in.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc",
                        "/openapi.json", "/", "/ops", "/favicon.ico"})
OPEN_PREFIXES = ("/static/",)
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
_ADMIN_ONLY = Tenant("admin", admin=True)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _legacy_admin(token: str | None, admin_key: str | None) -> bool:
    return bool(admin_key) and token is not None and hmac.compare_digest(token.encode(), str(admin_key).encode())


def authorize(
    path: str, authorization: str | None, registry: TenantRegistry, admin_key: str | None = None
) -> Caller | AccessDenied:
    """Decide one request. ``admin_key`` is the app's single admin key (AppArgs.admin_key)."""
    if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
        return OPEN_CALLER
    token = bearer_token(authorization)
    admin_route = path.startswith(ADMIN_PREFIX)
    if not registry.enforcing:
        # Open mode: everyone is the default tenant; the admin routes keep the optional admin key.
        if admin_route and admin_key and not _legacy_admin(token, admin_key):
            return AccessDenied(401, "unauthorized",
                                "this endpoint needs the admin key: send Authorization: Bearer <admin key>")
        return Caller(OPEN_TENANT, admin=admin_route)
    if token is None:
        return AccessDenied(401, "unauthorized",
                            "this API needs an API key: send Authorization: Bearer <key> "
                            "(an administrator creates one with `wanserve keys add TENANT`)")
    if admin_route and _legacy_admin(token, admin_key):
        # The app's admin key still opens the admin routes (the local operator uses it).
        return Caller(_ADMIN_ONLY, admin=True)
    tenant = registry.authenticate(token)
    if tenant is None:
        return AccessDenied(401, "invalid_api_key", "the API key is not valid: check it, or ask for a new one")
    if admin_route and not tenant.admin:
        return AccessDenied(403, "forbidden", f"tenant {tenant.name!r} may not call admin endpoints: use an admin key")
    return Caller(tenant, admin=tenant.admin)

