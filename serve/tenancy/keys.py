"""API keys and the keys file: random keys, stored only as salted sha256 hashes.

A key is ``ws-`` + 32 url-safe characters from ``secrets`` (192 bits). Keys that random need no slow
password hash: a salted sha256 cannot be reversed, and it costs microseconds per request where
scrypt would cost milliseconds. Each hash carries its own salt (``sha256:<salt>:<digest>``), so
entries can be copied between files and into a Helm values file as they are.

The keys file (YAML; JSON is YAML too)::

    version: 1
    tenants:
      team-a:
        key_hashes: ["sha256:9f0c...:4be1..."]
        admin: false
        weight: 2              # share of a lane when several tenants wait (weighted fair queuing)
        shared_cache_opt_in: true
        quotas: {requests_per_minute: 60, max_concurrent_jobs: 4, daily_compute_units: 100,
                 max_storage_bytes: 1073741824}
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tempfile
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

KEY_PREFIX = "ws-"
TENANT_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
# Names the server gives callers that are not configured tenants: a keys file can never claim them
# (an open-mode caller is "anonymous", a metric label of an unknown tenant "unknown").
RESERVED_TENANTS = frozenset({"anonymous", "unknown", "shared"})
_HASH_SCHEME = "sha256"


def generate_key() -> str:
    """A new API key: ``ws-`` + 32 url-safe characters."""
    return KEY_PREFIX + secrets.token_urlsafe(24)


def hash_key(key: str, salt: str | None = None) -> str:
    """The stored form of ``key``: ``sha256:<salt hex>:<digest hex>`` (a fresh salt unless given)."""
    salt = salt if salt is not None else secrets.token_hex(16)
    digest = hashlib.sha256(f"{salt}:{key}".encode()).hexdigest()
    return f"{_HASH_SCHEME}:{salt}:{digest}"


def key_matches(key: str, stored: str) -> bool:
    """Whether ``key`` hashes to ``stored``; the digests are compared in constant time."""
    scheme, _, rest = stored.partition(":")
    salt, _, digest = rest.partition(":")
    if scheme != _HASH_SCHEME or not salt or not digest:
        return False
    computed = hashlib.sha256(f"{salt}:{key}".encode()).hexdigest()
    return hmac.compare_digest(computed.encode(), digest.encode())


class TenantQuotas(BaseModel):
    """Per-tenant limits; ``None`` means unlimited."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(default=None, ge=1, description="video creations per rolling minute")
    max_concurrent_jobs: int | None = Field(default=None, ge=1, description="jobs queued or generating at once")
    daily_compute_units: float | None = Field(
        default=None, gt=0, description="compute units per UTC day (1 unit = one default video; serve.tenancy.cost)"
    )
    # Enforced by the ingress against the artifact store's usage of this tenant.
    max_storage_bytes: int | None = Field(default=None, ge=1, description="bytes of stored videos at once")


class TenantSettings(BaseModel):
    """What a tenant may do. In the keys file with its key hashes, or in the app args (chart values)."""

    model_config = ConfigDict(extra="forbid")

    admin: bool = False
    weight: float = Field(default=1.0, gt=0, le=1000)
    shared_cache_opt_in: bool = False
    quotas: TenantQuotas | None = None


class TenantEntry(TenantSettings):
    """A tenant in the keys file: its settings and the hashes of its keys (several, for rotation)."""

    key_hashes: list[str] = Field(default_factory=list)


class KeysFile(BaseModel):
    """The whole keys file."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    tenants: dict[str, TenantEntry] = Field(default_factory=dict)

    @field_validator("tenants")
    @classmethod
    def _names_are_labels(cls, tenants: dict[str, TenantEntry]) -> dict[str, TenantEntry]:
        # Tenant names become metric labels and Redis keys: keep them short and plain.
        bad = [name for name in tenants if not re.match(TENANT_NAME_PATTERN, name)]
        if bad:
            raise ValueError(f"tenant names must match {TENANT_NAME_PATTERN}: {bad}")
        reserved = sorted(RESERVED_TENANTS.intersection(tenants))
        if reserved:
            raise ValueError(f"tenant names {reserved} are reserved: choose another name")
        return tenants


def load_keys_file(path: str | Path) -> KeysFile:
    """Parse a keys file; raises OSError, yaml.YAMLError or pydantic's ValidationError."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    return KeysFile.model_validate(data)


def save_keys_file(keys: KeysFile, path: str | Path) -> None:
    """Write atomically (temp file + rename, mode 0600) so the ingress never reads half a file."""
    target = Path(path)
    header = "# wanserve API keys: salted sha256 hashes only. Add a key with `wanserve keys add TENANT`.\n"
    body = yaml.safe_dump(keys.model_dump(mode="json", exclude_none=True), sort_keys=False)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(header + body)
        os.chmod(temp, 0o600)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def add_key(path: str | Path, tenant: str, *, admin: bool = False) -> str:
    """Create a key for ``tenant`` (creating the file and the tenant as needed); return it once."""
    if not re.match(TENANT_NAME_PATTERN, tenant) or tenant in RESERVED_TENANTS:
        raise ValueError(f"tenant name {tenant!r} is not allowed: use 1-63 lowercase letters, digits, '.', '_' or '-', "
                         f"and none of {sorted(RESERVED_TENANTS)}")
    target = Path(path)
    keys = load_keys_file(target) if target.exists() else KeysFile()
    key = generate_key()
    entry = keys.tenants.get(tenant) or TenantEntry()
    entry.key_hashes.append(hash_key(key))
    if admin:
        entry.admin = True
    keys = KeysFile.model_validate({**keys.model_dump(), "tenants": {**keys.tenants, tenant: entry}})
    save_keys_file(keys, target)
    return key
