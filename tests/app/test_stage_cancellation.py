"""Cancellation through the real Serve stages: a cancelled job stops at its next step, its caller
gets ``Cancelled``, and the device is free for the next request."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from serve.app.messages import Cancelled
from serve.app.stage_client import StageHandles
from serve.params import GenerationParams

pytestmark = pytest.mark.integration


def _handles(version: str) -> StageHandles:
    """The primary instance's stages of ``version``: in the app's one application, or in the stage
    application of (version, primary) where each has its own."""
    from ray import serve

    apps = [name for name, app in serve.status().applications.items() if "Denoiser" in app.deployments]
    app_name = next(name for name in apps if name in ("wanserve", f"wanserve-{version}-primary"))
    return StageHandles(**{
        field: serve.get_deployment_handle(name, app_name=app_name)
        for field, name in (("text_encoder", "TextEncoder"), ("denoiser", "Denoiser"), ("decoder", "Decoder"))
    })


def _params(steps: int, seed: int) -> GenerationParams:
    return GenerationParams(prompt=f"a lighthouse in a storm {uuid.uuid4().hex[:8]}", width=256, height=128,
                            num_frames=5, num_inference_steps=steps, guidance_scale=1.0, seed=seed)


async def _started(steps: list[int], timeout_s: float = 120.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not steps:
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("cancel_from", ["the same router", "another router"])
async def test_a_cancelled_job_stops_at_its_next_step_and_its_caller_gets_cancelled(local_app, cancel_from):
    handles = _handles(local_app.stable_version)
    job_id = f"video_{uuid.uuid4().hex}"
    steps: list[int] = []

    async def on_progress(done: int, total: int) -> None:
        steps.append(done)

    generating = asyncio.create_task(
        handles.generate(_params(100, seed=1), local_app.stable_version, job_id, "batch", on_progress)
    )
    await _started(steps)
    # Another router has no call of its own in flight: the stage's own cancel(job_id) must stop it.
    canceller = handles if cancel_from == "the same router" else _handles(local_app.stable_version)
    assert await canceller.cancel(job_id) is True
    with pytest.raises(Cancelled, match=job_id):
        await asyncio.wait_for(generating, 60)
    assert max(steps) < 100

    async def ignore(done: int, total: int) -> None:
        pass

    after = await asyncio.wait_for(
        handles.generate(_params(2, seed=2), local_app.stable_version, f"video_{uuid.uuid4().hex}", "realtime", ignore),
        120,
    )
    assert after.num_frames == 5


async def test_a_job_cancelled_before_it_starts_never_reaches_the_stages(local_app):
    handles = _handles(local_app.stable_version)
    job_id = f"video_{uuid.uuid4().hex}"
    assert await handles.cancel(job_id) is False

    async def fail(done: int, total: int) -> None:
        raise AssertionError("a cancelled job made progress")

    with pytest.raises(Cancelled):
        await handles.generate(_params(2, seed=3), local_app.stable_version, job_id, "realtime", fail)
