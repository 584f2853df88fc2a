"""A local S3-compatible server for the artifact store's tests: moto's standalone server.

No real S3 (or MinIO binary) can run here; moto's server speaks the S3 HTTP API on a loopback port,
signs and checks presigned URLs and conditional writes, and keeps its buckets while stopped, so a
test can stop it (connections refused, as with a dead store) and start it again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

from serve.local_redis import free_port

CREDENTIALS = {"aws_access_key_id": "wanserve-test", "aws_secret_access_key": "wanserve-test-secret"}
REGION = "us-east-1"


class LocalS3:
    """moto's S3 server on 127.0.0.1:`port`, which a test may stop and start again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server: ThreadedMotoServer | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self._server is None:
            self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
            self._server.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.stop()
        # moto's stop() only ends the serving loop; closing the listening socket makes clients see
        # refused connections, as from a dead store, instead of waiting for a read timeout.
        wsgi = self._server._server
        if wsgi is not None:
            wsgi.server_close()
        self._server = None

    @contextmanager
    def down(self) -> Iterator[None]:
        self.stop()
        try:
            yield
        finally:
            self.start()

    def client(self) -> Any:
        config = Config(signature_version="s3v4", connect_timeout=1, read_timeout=5, retries={"max_attempts": 1})
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=REGION, config=config, **CREDENTIALS)

    def new_bucket(self) -> str:
        """A fresh, empty bucket: moto keeps every bucket for the whole session."""
        bucket = f"wanserve-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def object_keys(self, bucket: str) -> list[str]:
        listing = self.client().list_objects_v2(Bucket=bucket)
        return sorted(item["Key"] for item in listing.get("Contents", []))


def s3_env(s3: LocalS3, store: str, **extra: str) -> dict[str, str]:
    """The environment a service reads to keep its artifacts in ``store`` on this local S3."""
    return {
        "WANSERVE_ARTIFACT_STORE": store,
        "AWS_ENDPOINT_URL": s3.endpoint_url,
        "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
        "AWS_REGION": REGION,
        **extra,
    }
