"""The local actuator: a thin httpx adapter around the ingress's ``/admin/policy`` endpoint."""

from __future__ import annotations

import httpx
from pydantic import ValidationError

from operators.actuators import ActuatorError, keep_faults, same_policy
from serve.policy import ServingPolicy


class LocalActuator:
    """``GET``/``PUT {base_url}/admin/policy`` with ``Authorization: Bearer <admin key>``."""

    def __init__(self, base_url: str, admin_key: str = "", timeout_seconds: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.admin_key = admin_key
        self.timeout_seconds = timeout_seconds

    def _client(self) -> httpx.AsyncClient:
        # No key (an open local app): send no Authorization header at all; "Bearer " alone is invalid.
        headers = {"Authorization": f"Bearer {self.admin_key}"} if self.admin_key else {}
        return httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_seconds, headers=headers)

    async def current(self) -> ServingPolicy:
        async with self._client() as client:
            response = await self._call(client, "GET")
        return self._parse(response)

    async def apply(self, desired: ServingPolicy) -> ServingPolicy | None:
        """PUT ``desired`` unless the data plane already serves it; returns what it applied (or None)."""
        async with self._client() as client:
            current = self._parse(await self._call(client, "GET"))
            if same_policy(current, desired):
                return None
            body = keep_faults(current, desired).model_dump(mode="json")
            return self._parse(await self._call(client, "PUT", body))

    async def _call(self, client: httpx.AsyncClient, method: str, body: object = None) -> httpx.Response:
        try:
            response = await client.request(method, "/admin/policy", json=body)
        except httpx.HTTPError as error:
            raise ActuatorError(f"{method} {self.base_url}/admin/policy failed: {error!r}") from error
        if response.status_code == 401 or response.status_code == 403:
            raise ActuatorError(
                f"{method} {self.base_url}/admin/policy was refused ({response.status_code}): "
                "pass the ingress's admin key with --admin-key or WANSERVE_ADMIN_KEY"
            )
        if response.status_code != 200:
            raise ActuatorError(
                f"{method} {self.base_url}/admin/policy answered {response.status_code}: {response.text[:300]}"
            )
        return response

    def _parse(self, response: httpx.Response) -> ServingPolicy:
        try:
            return ServingPolicy.model_validate(response.json())
        except (ValueError, ValidationError) as error:
            raise ActuatorError(f"the ingress answered a policy this operator cannot read: {error}") from error
