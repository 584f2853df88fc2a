"""How the operator reaches the Kubernetes API: in-cluster service account first, then kubeconfig.

kopf and the RayService client use the same resolved connection, so they always talk to the same
cluster as the same identity. The ``kubernetes`` client library only resolves credentials here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import httpx
import kopf
import kubernetes.client
import kubernetes.config


@dataclass(frozen=True)
class KubeConnection:
    """A resolved API server connection; the bearer token is re-read on each use (it rotates)."""

    configuration: kubernetes.client.Configuration

    @property
    def server(self) -> str:
        return str(self.configuration.host)

    def bearer(self) -> str | None:
        # Newer clients keep the token under "BearerToken", older ones under "authorization";
        # either call runs the in-cluster loader's refresh hook first.
        config = self.configuration
        header = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix("authorization")
        return str(header) if header else None

    def to_kopf(self) -> kopf.ConnectionInfo:
        scheme, _, token = (self.bearer() or "").partition(" ")
        config = self.configuration
        return kopf.ConnectionInfo(
            server=self.server,
            ca_path=config.ssl_ca_cert,
            insecure=not config.verify_ssl,
            scheme=scheme if token else None,
            token=token or (scheme or None),
            certificate_path=config.cert_file,
            private_key_path=config.key_file,
        )

    def http_client(self, timeout_seconds: float = 10.0) -> httpx.AsyncClient:
        config = self.configuration
        verify: bool | str = (config.ssl_ca_cert or True) if config.verify_ssl else False
        cert = (config.cert_file, config.key_file) if config.cert_file and config.key_file else None
        headers = {"Authorization": bearer} if (bearer := self.bearer()) else {}
        return httpx.AsyncClient(
            base_url=self.server, verify=verify, cert=cert, headers=headers, timeout=timeout_seconds
        )


def load_connection(kubeconfig: str | None = None) -> KubeConnection:
    """In-cluster when running in a pod, else ``kubeconfig`` or ``$KUBECONFIG`` or ~/.kube/config."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        path = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        kubernetes.config.load_kube_config(config_file=path, client_configuration=configuration)
    return KubeConnection(configuration)
