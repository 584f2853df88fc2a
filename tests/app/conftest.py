"""Fixtures for tests against the real local Serve app (``local_app`` lives in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest


@pytest.fixture
def client(local_app) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=local_app.url, timeout=60, headers={"Authorization": f"Bearer {local_app.key}"}) as http:
        yield http


@pytest.fixture
def restore_policy(client: httpx.Client) -> Iterator[dict[str, Any]]:
    """The current policy; put back after the test whatever the test did to it."""
    original: dict[str, Any] = client.get("/admin/policy").json()
    yield original
    client.put("/admin/policy", json=original).raise_for_status()
