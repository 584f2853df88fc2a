"""Chains the three stage deployments for one video through Ray Serve handles.

Embeddings go TextEncoder -> Denoiser as a DeploymentResponse (Serve resolves it in the object
store); latents go Denoiser -> Decoder as an ObjectRef. The ingress sees only progress and the mp4.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from serve.app.lanes import Lane
from serve.app.messages import DecodeTask, DenoiseTask, EncodeTask, LatentsReady, Progress, VideoArtifact
from serve.app.priority_lock import BATCH, REALTIME
from serve.params import GenerationParams
from serve.pipeline.stages import shape_of

ProgressCallback = Callable[[int, int], Awaitable[None]]


@dataclass(frozen=True)
class StageHandles:
    """Handles of one instance's stage deployments."""

    text_encoder: Any
    denoiser: Any
    decoder: Any

    async def generate(
        self,
        params: GenerationParams,
        model_version: str,
        job_id: str,
        lane: Lane,
        on_progress: ProgressCallback,
    ) -> VideoArtifact:
        assert params.seed is not None, "the ingress assigns a seed before generating"
        negative = params.negative_prompt if params.uses_guidance else None
        priority = REALTIME if lane == "realtime" else BATCH
        embeddings = self.text_encoder.encode.remote(EncodeTask(model_version, params.prompt, negative, priority))
        task = DenoiseTask(job_id, model_version, shape_of(params), params.seed)
        streaming = self.denoiser.options(stream=True)
        method = streaming.denoise if lane == "realtime" else streaming.denoise_batched
        ready: LatentsReady | None = None
        async for event in method.remote(task, embeddings):
            if isinstance(event, Progress):
                await on_progress(event.done, event.total)
            elif isinstance(event, LatentsReady):
                ready = event
        if ready is None:
            raise RuntimeError("the denoiser finished without returning latents")
        artifact: VideoArtifact = await self.decoder.decode.remote(
            DecodeTask(model_version, params.fps, priority), ready
        )
        return artifact

    async def ping(self) -> None:
        """Raise unless every stage answers."""
        for handle in (self.text_encoder, self.denoiser, self.decoder):
            await handle.ping.remote()
