"""Chains the three stage deployments for one video through Ray Serve handles.

Embeddings go TextEncoder -> Denoiser as a DeploymentResponse (Serve resolves it in the object
store); latents go Denoiser -> Decoder as an ObjectRef. The ingress sees only progress and the mp4.

``StageHandles.cancel(job_id)`` stops a job wherever it is: the stage call in flight is cancelled
(Serve cancels it in the replica that runs it, which stops at its next step or chunk boundary), every
stage's ``cancel(job_id)`` is called (for a job that is queued there or not there yet), and
``generate`` raises ``Cancelled`` instead of starting another stage.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from serve.app.cancellation import CancelledJobs
from serve.app.lanes import Lane
from serve.app.messages import (
    Cancelled,
    DecodeTask,
    DenoiseTask,
    EncodeTask,
    ImageTask,
    LatentsReady,
    Progress,
    VideoArtifact,
)
from serve.app.priority_lock import BATCH, REALTIME
from serve.params import GenerationParams
from serve.pipeline.reference_image import fit_reference_image
from serve.pipeline.stages import shape_of

ProgressCallback = Callable[[int, int], Awaitable[None]]


@dataclass(frozen=True)
class StageHandles:
    """Handles of one instance's stage deployments."""

    text_encoder: Any
    denoiser: Any
    decoder: Any
    # The stage calls in flight per job, and the jobs cancelled lately: what ``cancel`` acts on.
    _calls: dict[str, list[Any]] = field(default_factory=dict, compare=False, repr=False)
    _cancelled: CancelledJobs = field(default_factory=CancelledJobs, compare=False, repr=False)

    async def generate(
        self,
        params: GenerationParams,
        model_version: str,
        job_id: str,
        lane: Lane,
        on_progress: ProgressCallback,
        reference: Any = None,
    ) -> VideoArtifact:
        """The video of ``params``; raises ``Cancelled`` if ``cancel(job_id)`` stopped it.

        ``reference`` (image-to-video) is the decoded first frame: fitted here to the size served
        (a degradation tier shrinks it with the video), encoded by the Decoder, which holds the VAE,
        while the TextEncoder works, and handed to the Denoiser beside the embeddings.
        """
        assert params.seed is not None, "the ingress assigns a seed before generating"
        negative = params.negative_prompt if params.uses_guidance else None
        priority = REALTIME if lane == "realtime" else BATCH
        calls = self._calls.setdefault(job_id, [])
        try:
            self._go_on(job_id)
            embeddings = self.text_encoder.encode.remote(
                EncodeTask(job_id, model_version, params.prompt, negative, priority)
            )
            calls.append(embeddings)
            image_latents = None
            if reference is not None:
                fitted = fit_reference_image(reference, params.width, params.height)
                image_latents = self.decoder.encode_image.remote(
                    ImageTask(job_id, model_version, fitted, params.width, params.height, priority)
                )
                calls.append(image_latents)
            task = DenoiseTask(job_id, model_version, shape_of(params), params.seed, priority)
            stream = self.denoiser.options(stream=True).denoise.remote(task, embeddings, image_latents)
            calls.append(stream)
            ready: LatentsReady | None = None
            async for event in stream:
                if isinstance(event, Progress):
                    await on_progress(event.done, event.total)
                elif isinstance(event, LatentsReady):
                    ready = event
            if ready is None:
                raise RuntimeError("the denoiser finished without returning latents")
            self._go_on(job_id)
            decoding = self.decoder.decode.remote(DecodeTask(job_id, model_version, params.fps, priority), ready)
            calls.append(decoding)
            artifact: VideoArtifact = await decoding
            return artifact
        except asyncio.CancelledError:
            for call in calls:  # our caller gave up: so do the stages, at their next boundary
                call.cancel()
            raise
        except Exception as error:
            if job_id in self._cancelled or _is_cancelled(error):
                raise Cancelled(job_id) from None
            raise
        finally:
            if self._calls.get(job_id) is calls:
                del self._calls[job_id]

    async def cancel(self, job_id: str, timeout_s: float = 5.0) -> bool:
        """Stop ``job_id`` at its next step or chunk boundary, wherever it is; True if this router's
        ``generate`` or any stage replica had it. Its ``generate`` raises ``Cancelled``.

        A stage deployment with several replicas gets the ``cancel`` call on one of them; the call
        in flight is cancelled in the replica that runs it, so a job this router generates always
        stops. Waits at most ``timeout_s`` for the stages' answers.
        """
        self._cancelled.add(job_id)
        calls = self._calls.get(job_id, [])
        for call in calls:
            call.cancel()
        answers: list[Any] = []
        with contextlib.suppress(TimeoutError):
            answers = await asyncio.wait_for(asyncio.gather(
                *(handle.cancel.remote(job_id) for handle in (self.text_encoder, self.denoiser, self.decoder)),
                return_exceptions=True,
            ), timeout_s)
        return bool(calls) or any(answer is True for answer in answers)

    def _go_on(self, job_id: str) -> None:
        if job_id in self._cancelled:
            raise Cancelled(job_id)

    async def ping(self) -> None:
        """Raise unless every stage answers."""
        for handle in (self.text_encoder, self.denoiser, self.decoder):
            await handle.ping.remote()


def _is_cancelled(error: BaseException) -> bool:
    """A stage's ``Cancelled``, as Ray hands it on (a ``RayTaskError`` whose cause it is) or as it is."""
    return isinstance(error, Cancelled) or isinstance(getattr(error, "cause", None), Cancelled)
