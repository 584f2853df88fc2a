"""One controller per policy: a ``coordination.k8s.io`` Lease per VideoServingPolicy.

Before each control step the operator holds the policy's Lease (``wanserve-policy-<name>``): it creates
it, renews its own, or takes one whose holder has not renewed it for ``leaseDurationSeconds``. A renewal
or a take is a merge patch that carries the ``resourceVersion`` it read, which the API server checks as a
precondition: when two operators race for one Lease, one wins and the other gets 409 Conflict (as does
a second create), and the loser skips the step. A second operator in the
namespace (another release's, or a new pod starting while the old one still runs) thus never
controls a policy that another one holds, and takes over within one lease duration when it stops.
"""

from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from operators.kube.connection import KubeConnection

LEASE_PATH = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
Claim = Literal["create", "renew", "take", "wait"]


def lease_name(policy: str) -> str:
    return f"wanserve-policy-{policy}"[:253]


def lease_seconds(control_interval_seconds: float) -> int:
    """Three missed renewals, at least 15 s: a slow step does not hand the policy over."""
    return max(15, int(3 * control_interval_seconds + 0.999))


def default_identity() -> str:
    """The pod's name (the chart passes it as POD_NAME), else this host's."""
    return os.environ.get("POD_NAME") or socket.gethostname()


@dataclass(frozen=True)
class LeaseView:
    """What one Lease says about who controls the policy."""

    holder: str | None
    renewed_at: float | None
    duration_seconds: float
    resource_version: str | None
    transitions: int = 0


def claim(lease: LeaseView | None, me: str, now: float) -> Claim:
    """What ``me`` may do with the Lease now (pure)."""
    if lease is None:
        return "create"
    if lease.holder == me:
        return "renew"
    if not lease.holder or lease.renewed_at is None or now - lease.renewed_at > lease.duration_seconds:
        return "take"
    return "wait"


def micro_time(timestamp: float) -> str:
    """Kubernetes' MicroTime: RFC 3339 with microseconds, UTC."""
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def view_of(lease: dict[str, Any]) -> LeaseView:
    spec = lease.get("spec") or {}
    return LeaseView(
        holder=spec.get("holderIdentity"),
        renewed_at=_parse_time(spec.get("renewTime")),
        duration_seconds=float(spec.get("leaseDurationSeconds") or 0),
        resource_version=(lease.get("metadata") or {}).get("resourceVersion"),
        transitions=int(spec.get("leaseTransitions") or 0),
    )


class LeaseError(RuntimeError):
    """The API server did not answer about the Lease as expected; the message says what it answered."""


class LeaseKeeper:
    """Holds Leases for ``identity`` through the API server."""

    def __init__(self, connection: KubeConnection, identity: str) -> None:
        self.connection = connection
        self.identity = identity

    async def hold(self, namespace: str, name: str, duration_seconds: int, now: float) -> tuple[bool, str]:
        """(whether this operator holds the Lease now, who does)."""
        base = LEASE_PATH.format(namespace=namespace)
        async with self.connection.http_client() as client:
            response = await self._send(client, "GET", f"{base}/{name}")
            current = None if response.status_code == 404 else view_of(self._ok(response, "read"))
            action = claim(current, self.identity, now)
            if action == "wait":
                assert current is not None and current.holder is not None
                return False, current.holder
            body = self._body(name, namespace, current, action, duration_seconds, now)
            if action == "create":
                response = await self._send(client, "POST", base, body)
            else:
                response = await self._send(client, "PATCH", f"{base}/{name}", body,
                                            {"Content-Type": "application/merge-patch+json"})
            if response.status_code == 409:
                return False, "another operator"  # it wrote first; the next step reads who
            self._ok(response, action)
            return True, self.identity

    def _body(
        self, name: str, namespace: str, current: LeaseView | None, action: Claim, duration_seconds: int, now: float
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": name, "namespace": namespace,
                                    "labels": {"app.kubernetes.io/managed-by": "wanserve-operator"}}
        if current is not None and current.resource_version:
            metadata["resourceVersion"] = current.resource_version
        transitions = current.transitions if current is not None else 0
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": duration_seconds,
            "renewTime": micro_time(now),
            "leaseTransitions": transitions + (1 if action == "take" else 0),
        }
        if action in ("create", "take"):
            spec["acquireTime"] = micro_time(now)
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}

    async def _send(
        self, client: httpx.AsyncClient, method: str, path: str, body: object = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        try:
            return await client.request(method, path, json=body, headers=headers)
        except httpx.HTTPError as error:
            raise LeaseError(f"{method} {path} failed: {error!r}") from error

    def _ok(self, response: httpx.Response, what: str) -> dict[str, Any]:
        if response.status_code in (401, 403):
            raise LeaseError(f"{what} the Lease was refused ({response.status_code}): the operator's Role needs "
                             "get, create and update on leases.coordination.k8s.io")
        if response.status_code >= 400:
            raise LeaseError(f"{what} the Lease: {response.status_code} {response.text[:300]}")
        result: dict[str, Any] = response.json()
        return result
