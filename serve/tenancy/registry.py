"""The tenants one ingress replica knows: read from the keys file, re-read when the file changes.

Three modes, and access fails closed:

- ``open``: no keys file is configured at all (a laptop). Every caller is the tenant ``anonymous``,
  a name no keys file may use; the server says so loudly at start.
- ``keyed``: the keys file holds at least one key; every protected route needs one.
- ``unconfigured``: a keys file is configured but missing, empty, keyless or unparsable, and no
  good version of it was ever read. Every tenant request is refused (503) with a message naming
  the file: a broken or absent keys file never opens the service.

The file is checked at most once per ``check_interval_s``; a changed file (mtime, size or inode, so
a Kubernetes Secret's symlink swap counts) is parsed again. A file that becomes unreadable or
vanishes after a good read keeps the last good tenants (a Secret update is a swap, not a gap); a
file that is read fine but holds no key refuses everything, as its author asked.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from serve.tenancy.keys import KeysFile, TenantQuotas, TenantSettings, key_matches, load_keys_file

log = logging.getLogger(__name__)

# The caller of an open-mode server. Keys files may not name a tenant so (keys.RESERVED_TENANTS).
DEFAULT_TENANT = "anonymous"
# The metric label of a tenant no longer (or never) in the configuration: label values stay bounded.
UNKNOWN_TENANT = "unknown"


@dataclass(frozen=True)
class Tenant:
    """A configured tenant, its settings merged (keys file, then app args, then default quotas)."""

    name: str
    admin: bool = False
    weight: float = 1.0
    shared_cache_opt_in: bool = False
    quotas: TenantQuotas = field(default_factory=TenantQuotas)
    key_hashes: tuple[str, ...] = ()


OPEN_TENANT = Tenant(DEFAULT_TENANT, shared_cache_opt_in=True)

AccessMode = Literal["open", "keyed", "unconfigured"]


class TenantRegistry:
    """Who is who, for one replica. Plain class: the ingress calls ``authenticate`` per request."""

    def __init__(
        self,
        path: str | None,
        *,
        overrides: Mapping[str, TenantSettings] | None = None,
        default_quotas: TenantQuotas | None = None,
        check_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._overrides = dict(overrides or {})
        self._default_quotas = default_quotas or TenantQuotas()
        self._interval = check_interval_s
        self._clock = clock
        self._checked_at = float("-inf")
        self._signature: tuple[int, int, int] | None = None
        self._tenants: dict[str, Tenant] = {}
        self._mode: AccessMode = "open" if not path else "unconfigured"
        self.refresh(force=True)

    @property
    def mode(self) -> AccessMode:
        """open (nothing configured), keyed, or unconfigured (a keys file was asked for, none usable)."""
        self.refresh()
        return self._mode

    @property
    def enforcing(self) -> bool:
        """True unless the server runs open: every protected route needs a key (or is refused)."""
        return self.mode != "open"

    def tenant(self, name: str) -> Tenant:
        """The tenant's settings; the open-mode tenant for ``default`` when no keys are configured."""
        self.refresh()
        if self._mode == "open":
            return OPEN_TENANT
        return self._tenants.get(name) or Tenant(name)

    def authenticate(self, key: str) -> Tenant | None:
        """The tenant that owns ``key``, or None. Every stored hash is checked (no early exit)."""
        self.refresh()
        found: Tenant | None = None
        for tenant in self._tenants.values():
            for stored in tenant.key_hashes:
                if key_matches(key, stored) and found is None:
                    found = tenant
        return found

    def metric_label(self, name: str) -> str:
        """``name`` when it is a configured tenant (or the open-mode default), else ``unknown``."""
        if name in self._tenants or (name == DEFAULT_TENANT and self._mode == "open"):
            return name
        return UNKNOWN_TENANT

    def weight(self, name: str) -> float:
        tenant = self._tenants.get(name)
        return tenant.weight if tenant is not None else 1.0

    def refresh(self, force: bool = False) -> None:
        """Re-read the keys file if it changed (checked at most once per interval)."""
        now = self._clock()
        if not force and now - self._checked_at < self._interval:
            return
        self._checked_at = now
        if not self.path:
            return
        try:
            stat = os.stat(self.path)
        except OSError as error:
            if self._signature is not None or force:
                log.error("API keys file %s cannot be read (%s): %s", self.path, type(error).__name__,
                          "keeping the previous tenants" if self._mode == "keyed" else
                          "refusing every request until it exists")
                self._signature = None
            return
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if signature == self._signature and not force:
            return
        self._signature = signature
        try:
            keys = load_keys_file(self.path)
        except Exception as error:  # any parse failure: keep what we had, or refuse every key
            # Name the problem, not the content (which holds hashes).
            log.error("API keys file %s is invalid (%s); %s", self.path, type(error).__name__,
                      "keeping the previous tenants" if self._mode == "keyed" else
                      "refusing every request until it is fixed")
            return
        self._tenants = self._merge(keys)
        self._mode = "keyed" if any(tenant.key_hashes for tenant in self._tenants.values()) else "unconfigured"
        if self._mode == "unconfigured":
            log.error("API keys file %s holds no key: refusing every request until one is added "
                      "(`wanserve keys add TENANT --file %s`)", self.path, self.path)
        log.info("API keys loaded from %s: %d tenants (%s)", self.path, len(self._tenants),
                 ", ".join(sorted(self._tenants)) or "none")

    def _merge(self, keys: KeysFile) -> dict[str, Tenant]:
        tenants: dict[str, Tenant] = {}
        for name, entry in keys.tenants.items():
            # App args (chart values) win over the file, field by field.
            override = self._overrides.get(name)
            settings = TenantSettings.model_validate({
                **entry.model_dump(exclude={"key_hashes"}, exclude_unset=True),
                **(override.model_dump(exclude_unset=True) if override is not None else {}),
            })
            tenants[name] = Tenant(
                name=name,
                admin=settings.admin,
                weight=settings.weight,
                shared_cache_opt_in=settings.shared_cache_opt_in,
                quotas=settings.quotas or self._default_quotas,
                key_hashes=tuple(entry.key_hashes),
            )
        return tenants
