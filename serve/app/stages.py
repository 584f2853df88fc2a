"""Ray Serve deployments wrapping the three pipeline stages, each placed and scaled on its own.

Every replica loads the one model version of its stage application (serve/app/topology.py: one
application per (version, instance)), for its own stage only: a canary's candidate has replicas and GPU
memory of its own, and a candidate that breaks its replicas breaks no stable one. Heavy imports happen
inside ``__init__`` so the ingress never loads torch.

Work is cut at boundaries where a more urgent request may go first (docs/scheduling.md): the
Denoiser runs one step at a time (``StepScheduler``), the Decoder one latent frame at a time, the
TextEncoder one request at a time; batch work on a device waits while realtime work is in flight
on it (``DeviceArbiter``). Every stage has ``cancel(job_id) -> bool``: the job stops at its next
boundary and its caller gets ``Cancelled``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from typing import Any

from ray import serve

from serve.app.cancellation import JobTasks, finish_in_thread
from serve.app.device_arbiter import HANDOFF_S, DeviceArbiter, arbiter_for
from serve.app.messages import (
    DecodeTask,
    DenoiseTask,
    EncodeTask,
    ImageTask,
    LatentsReady,
    Progress,
    VideoArtifact,
)
from serve.app.priority_lock import REALTIME
from serve.app.step_scheduler import StepScheduler
from serve.app.telemetry import Telemetry
from serve.pipeline.preemption import Preempted

# How long, and how many of, its latents a Denoiser replica keeps alive for the Decoder to read
# (about 20 MB each at 1280x704x121).
LATENTS_KEPT = 64
LATENTS_KEPT_SECONDS = 120.0
# Batch steps and passes given up between two blocks for realtime work (serve/pipeline/preemption.py).
PREEMPTIONS = "wanserve_batch_preemptions_total"
# Latent frames the Decoder decodes between two looks at more urgent work (4 video frames each).
DECODE_CHUNK_LATENT_FRAMES = 1


def _load_versions(versions: dict[str, str | None], load: Callable[[str], Any]) -> dict[str, Any]:
    from serve.pipeline.checkpoint import resolve_model_dir

    use_all_cores()
    return {name: load(str(resolve_model_dir(model_dir))) for name, model_dir in versions.items()}


def use_all_cores() -> None:
    """Ray sets OMP_NUM_THREADS=1 in actors that ask for 0 CPUs; on a CPU host give torch the cores
    (``WANSERVE_TORCH_THREADS`` overrides)."""
    import torch

    threads = int(os.environ.get("WANSERVE_TORCH_THREADS") or os.cpu_count() or 1)
    torch.set_num_threads(threads)


def _pick(models: dict[str, Any], version: str) -> Any:
    try:
        return models[version]
    except KeyError:
        raise ValueError(f"model version {version!r} is not loaded here; loaded: {sorted(models)}") from None


class _Stage:
    """What every stage replica has: its loaded versions, its device's arbiter, and the probes."""

    models: dict[str, Any]
    device: DeviceArbiter

    def _arbiter(self) -> DeviceArbiter:
        from serve.pipeline.device import device_key

        return arbiter_for(device_key(next(iter(self.models.values())).device))

    def _realtime(self, priority: int, hands_on: bool = True) -> contextlib.AbstractContextManager[None]:
        """Mark a realtime request as in flight on this device for the block's duration, and a moment
        longer when it goes on to another stage (``HANDOFF_S``)."""
        if priority != REALTIME:
            return contextlib.nullcontext()
        return self.device.realtime_in_flight(HANDOFF_S if hands_on else 0.0)

    def check_health(self) -> None:
        if not self.models:
            raise RuntimeError("no model version loaded")

    def ping(self) -> list[str]:
        """Readiness probe from the ingress: the versions this replica serves."""
        return sorted(self.models)


@serve.deployment(name="TextEncoder")
class TextEncoderDeployment(_Stage):
    """tokenizer + UMT5 -> prompt embeddings; realtime requests first."""

    def __init__(self, versions: dict[str, str | None], device: str | None = None) -> None:
        from serve.pipeline.text_encoder import TextEncoder

        self.models = _load_versions(versions, lambda path: TextEncoder(path, device))
        self.telemetry = Telemetry(versions=list(versions))
        self.device = self._arbiter()
        self.jobs = JobTasks()

    async def encode(self, task: EncodeTask) -> Any:
        """The prompt's embeddings; raises ``Cancelled`` if ``cancel(task.job_id)`` stopped it."""
        return await self.jobs.run(task.job_id, self._encode(task))

    def cancel(self, job_id: str) -> bool:
        """Stop ``job_id`` before its next pass (a pass that has begun ends first)."""
        return self.jobs.cancel(job_id)

    async def _encode(self, task: EncodeTask) -> Any:
        from serve.pipeline.device import release_cached_memory
        from serve.pipeline.text_encoder import PromptEmbeddings

        model = _pick(self.models, task.model_version)
        busy = 0.0
        with self._realtime(task.priority):
            # The prompt and the negative prompt are two passes: more urgent work may go between them.
            passes = [[task.prompt]] + ([] if task.negative_prompt is None else [[task.negative_prompt]])
            embedded = []
            # A batch pass gives the device up between two encoder blocks when realtime work waits
            # (serve/pipeline/preemption.py) and runs again once it has cleared.
            yield_to = None if task.priority == REALTIME else self.device.batch_should_yield
            for texts in passes:
                embedding = None
                while embedding is None:
                    async with self.device.turn(task.priority):
                        started = time.perf_counter()
                        try:
                            embedding = await finish_in_thread(model.embed, texts, yield_to)
                        except Preempted:
                            self.telemetry.inc(PREEMPTIONS, ("text_encoder",))
                        busy += time.perf_counter() - started
                embedded.append(embedding)
        release_cached_memory(model.device)
        self.telemetry.observe_stage("text_encoder", busy)
        return PromptEmbeddings(cond=embedded[0], uncond=embedded[1] if len(embedded) > 1 else None)


@serve.deployment(name="Denoiser")
class DenoiserDeployment(_Stage):
    """transformer + scheduler -> latents, one step at a time for every request (``StepScheduler``):
    realtime steps before batch steps, compatible batch requests share each step."""

    def __init__(self, versions: dict[str, str | None], device: str | None = None, compile: bool = False) -> None:
        from serve.pipeline.denoiser import Denoiser

        self.models = _load_versions(versions, lambda path: Denoiser(path, device, compile=compile))
        self.telemetry = Telemetry(versions=list(versions))
        self.device = self._arbiter()
        self.scheduler = StepScheduler(self.device, on_step=self._count_step,
                                       on_preempt=lambda: self.telemetry.inc(PREEMPTIONS, ("denoiser",)))
        # This replica owns the latents it puts in the object store. Ray can free such an object
        # before the ingress's borrowed reference (nested in a streamed item) is registered, so the
        # owner keeps the newest refs alive until the Decoder has surely read them.
        self._recent_latents: deque[tuple[float, Any]] = deque(maxlen=LATENTS_KEPT)

    def reconfigure(self, config: dict[str, Any]) -> None:
        # Batch requests join the running batch at the next step boundary, so nothing waits to fill
        # a batch: ``batch_wait_s`` has no use here any more.
        self.scheduler.batch_max_size = int(config.get("batch_max_size", 4))

    async def denoise(
        self, task: DenoiseTask, embeddings: Any, image_latents: Any = None
    ) -> AsyncGenerator[Progress | LatentsReady, None]:
        """Progress after each step, then the latents; raises ``Cancelled`` if ``cancel`` stopped it.

        ``image_latents`` (image-to-video) is the Decoder's ``encode_image`` of the first frame: it
        conditions the first latent frame, per request, so such requests batch with any other.
        """
        import ray

        from serve.pipeline.denoiser import DenoiseRequest

        model = _pick(self.models, task.model_version)
        request = DenoiseRequest(embeddings, task.shape, task.seed, image_latents)
        key = (task.model_version, task.shape.batch_key)
        started = time.perf_counter()
        latents = None
        with self._realtime(task.priority):
            async for event in self.scheduler.run(task.job_id, task.priority, key, model, request):
                if isinstance(event, tuple):
                    yield Progress(*event)
                else:
                    latents = event
        self.telemetry.observe_stage("denoiser", time.perf_counter() - started)
        ref = ray.put(latents)
        now = time.monotonic()
        while self._recent_latents and now - self._recent_latents[0][0] > LATENTS_KEPT_SECONDS:
            self._recent_latents.popleft()
        self._recent_latents.append((now, ref))
        yield LatentsReady(ref)

    def cancel(self, job_id: str) -> bool:
        """Stop ``job_id`` at the next step boundary, freeing its place in the batch and its latents."""
        return self.scheduler.cancel(job_id)

    def _count_step(self, priority: int, requests: int) -> None:
        lane = "realtime" if priority == REALTIME else "batch"
        self.telemetry.inc("wanserve_denoiser_steps_total", (lane,))
        self.telemetry.inc("wanserve_denoiser_request_steps_total", (lane,), requests)


@serve.deployment(name="Decoder")
class DecoderDeployment(_Stage):
    """VAE -> frames -> H.264 mp4, a latent frame at a time, realtime chunks first."""

    def __init__(self, versions: dict[str, str | None], device: str | None = None) -> None:
        from serve.pipeline.decoder import Decoder

        self.models = _load_versions(versions, lambda path: Decoder(path, device))
        self.telemetry = Telemetry(versions=list(versions))
        self.device = self._arbiter()
        self.jobs = JobTasks()

    async def decode(self, task: DecodeTask, ready: LatentsReady) -> VideoArtifact:
        """The video; raises ``Cancelled`` if ``cancel(task.job_id)`` stopped it."""
        latents = await ready.latents  # type: ignore[misc]
        return await self.jobs.run(task.job_id, self._decode(task, latents))

    def cancel(self, job_id: str) -> bool:
        """Stop ``job_id`` at the next chunk boundary."""
        return self.jobs.cancel(job_id)

    async def encode_image(self, task: ImageTask) -> Any:
        """The first frame's normalised latent (image-to-video): this stage holds the VAE's encoder half."""
        return await self.jobs.run(task.job_id, self._encode_image(task))

    async def _encode_image(self, task: ImageTask) -> Any:
        model = _pick(self.models, task.model_version)
        with self._realtime(task.priority, hands_on=False):
            async with self.device.turn(task.priority):
                started = time.perf_counter()
                latents = await finish_in_thread(model.encode_image, task.image, task.width, task.height)
        self.telemetry.observe_stage("image_encoder", time.perf_counter() - started)
        return latents

    async def _decode(self, task: DecodeTask, latents: Any) -> VideoArtifact:
        model = _pick(self.models, task.model_version)
        busy = 0.0
        with self._realtime(task.priority, hands_on=False):
            state = None
            while state is None or not state.finished:
                async with self.device.turn(task.priority):
                    started = time.perf_counter()
                    if state is None:
                        state = await finish_in_thread(model.start_decode, latents)
                    await finish_in_thread(model.decode_chunk, state, DECODE_CHUNK_LATENT_FRAMES)
                    busy += time.perf_counter() - started
            # Encoding the mp4 is CPU work: where the stages run on the CPU, a batch video's encoding
            # leaves the cores to realtime work too.
            if task.priority != REALTIME and self.device.device_key == "cpu":
                await self.device.batch_clear()
            started = time.perf_counter()
            artifact = await finish_in_thread(_encode_video, state.pixel_frames, task.fps)
        self.telemetry.observe_stage("decoder", busy + time.perf_counter() - started)
        return artifact


def _encode_video(pieces: list[Any], fps: int) -> VideoArtifact:
    import numpy as np

    from serve.pipeline.video import encode_mp4, encode_png, to_uint8

    frames = to_uint8(np.concatenate(pieces))
    return VideoArtifact(encode_mp4(frames, fps), encode_png(frames[0]), len(frames))
