"""Helpers for tests against the real local Serve app (see ``local_app`` in tests/conftest.py)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

# Small videos keep the session fast: 128x64, 5 frames, 2 steps takes well under a second.
SMALL = {"size": "128x64", "num_frames": 5, "num_inference_steps": 2}


def unique_prompt(text: str = "a red fox jumping over a log") -> str:
    """A prompt no other test used, so the result cache cannot answer it."""
    return f"{text} {uuid.uuid4().hex[:8]}"


def small_body(**overrides: Any) -> dict[str, Any]:
    return {"prompt": unique_prompt(), **SMALL, **overrides}


def wait_done(client: httpx.Client, video_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        video: dict[str, Any] = client.get(f"/v1/videos/{video_id}").json()
        if video["status"] in ("completed", "failed"):
            return video
        time.sleep(0.1)
    raise AssertionError(f"video {video_id} did not finish in {timeout_s}s: {video}")


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` in a Prometheus exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


