"""Multi-tenant access: API keys (stored hashed), tenants and their quotas, and who may call what.

- ``keys``: key generation and hashing, the keys file (``wanserve keys add``), tenant settings.
- ``registry``: the tenants an ingress replica knows, re-read when the keys file changes.
- ``access``: which routes are open, which need a key and which an admin key.
- ``quotas``: requests per minute, concurrent jobs and daily compute units per tenant.
- ``cost``: what a video costs in compute units (1 unit = one default video with guidance).
"""

from serve.tenancy.access import OPEN_PATHS, AccessDenied, Caller, authorize
from serve.tenancy.cost import compute_units
from serve.tenancy.keys import (
    KeysFile,
    TenantQuotas,
    TenantSettings,
    add_key,
    generate_key,
    hash_key,
    key_matches,
    load_keys_file,
)
from serve.tenancy.quotas import MemoryQuotaState, QuotaExceeded, QuotaKeeper, RedisQuotaState
from serve.tenancy.registry import DEFAULT_TENANT, UNKNOWN_TENANT, Tenant, TenantRegistry

__all__ = [
    "DEFAULT_TENANT",
    "OPEN_PATHS",
    "UNKNOWN_TENANT",
    "AccessDenied",
    "Caller",
    "KeysFile",
    "MemoryQuotaState",
    "QuotaExceeded",
    "QuotaKeeper",
    "RedisQuotaState",
    "Tenant",
    "TenantQuotas",
    "TenantRegistry",
    "TenantSettings",
    "add_key",
    "authorize",
    "compute_units",
    "generate_key",
    "hash_key",
    "key_matches",
    "load_keys_file",
]
