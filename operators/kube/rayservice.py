"""Reads and patches the RayService whose ``serveConfigV2`` carries the serving policy."""

from __future__ import annotations

from typing import Any

import httpx

from operators.actuators import ActuatorError
from operators.actuators.serve_config import Candidate, needs_update, with_policy
from operators.kube import RAY_GROUP, RAY_PLURAL, RAY_VERSION
from operators.kube.connection import KubeConnection
from serve.policy import ServingPolicy


class RayServiceActuator:
    """Puts a policy into ``spec.serveConfigV2`` with a JSON merge patch, only when it changed."""

    def __init__(self, connection: KubeConnection) -> None:
        self.connection = connection

    def _path(self, namespace: str, name: str) -> str:
        return f"/apis/{RAY_GROUP}/{RAY_VERSION}/namespaces/{namespace}/{RAY_PLURAL}/{name}"

    async def apply(
        self, namespace: str, name: str, app_name: str, policy: ServingPolicy, candidate: Candidate | None
    ) -> bool:
        """True when the RayService was patched, False when it already carried this policy."""
        async with self.connection.http_client() as client:
            rayservice = await self._call(client, "GET", namespace, name)
            serve_config = (rayservice.get("spec") or {}).get("serveConfigV2") or ""
            if not serve_config:
                raise ActuatorError(f"RayService {namespace}/{name} has no spec.serveConfigV2 to carry the policy")
            if not needs_update(serve_config, app_name, policy, candidate):
                return False
            updated = with_policy(serve_config, app_name, policy, candidate)
            await self._call(client, "PATCH", namespace, name, {"spec": {"serveConfigV2": updated}})
            return True

    async def _call(
        self, client: httpx.AsyncClient, method: str, namespace: str, name: str, body: object = None
    ) -> dict[str, Any]:
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        try:
            response = await client.request(method, self._path(namespace, name), json=body, headers=headers)
        except httpx.HTTPError as error:
            raise ActuatorError(f"{method} RayService {namespace}/{name} failed: {error!r}") from error
        if response.status_code == 404:
            raise ActuatorError(
                f"RayService {namespace}/{name} not found: set spec.rayServiceName to the RayService "
                "that runs the wanserve app (kubectl get rayservices)"
            )
        if response.status_code >= 400:
            raise ActuatorError(f"{method} RayService {namespace}/{name}: {response.status_code} {response.text[:300]}")
        result: dict[str, Any] = response.json()
        return result

