"""Ray Serve deployments wrapping the three pipeline stages, each placed and scaled on its own.

Every replica loads each configured model version (stable, and the candidate during a rollout)
for its own stage only. Heavy imports happen inside ``__init__`` so the ingress never loads torch.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from typing import Any

from ray import serve

from serve.app.messages import DecodeTask, DenoiseTask, EncodeTask, LatentsReady, Progress, VideoArtifact
from serve.app.priority_lock import BATCH, REALTIME, PriorityLock
from serve.app.telemetry import Telemetry

# How long, and how many of, its latents a Denoiser replica keeps alive for the Decoder to read
# (about 20 MB each at 1280x704x121).
LATENTS_KEPT = 64
LATENTS_KEPT_SECONDS = 120.0


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


@serve.deployment(name="TextEncoder")
class TextEncoderDeployment:
    """tokenizer + UMT5 -> prompt embeddings."""

    def __init__(self, versions: dict[str, str | None], device: str | None = None) -> None:
        from serve.pipeline.text_encoder import TextEncoder

        self.models = _load_versions(versions, lambda path: TextEncoder(path, device))
        self.telemetry = Telemetry()
        self._device = PriorityLock()

    async def encode(self, task: EncodeTask) -> Any:
        model = _pick(self.models, task.model_version)
        negatives = None if task.negative_prompt is None else [task.negative_prompt]
        async with self._device.hold(task.priority):
            started = time.perf_counter()
            embeddings = await asyncio.to_thread(model.encode, [task.prompt], negatives)
        self.telemetry.observe_stage("text_encoder", time.perf_counter() - started)
        return embeddings

    def check_health(self) -> None:
        if not self.models:
            raise RuntimeError("no model version loaded")

    def ping(self) -> list[str]:
        """Readiness probe from the ingress: the versions this replica serves."""
        return sorted(self.models)


@serve.deployment(name="Denoiser")
class DenoiserDeployment:
    """transformer + scheduler -> latents. Realtime calls run alone; batch-lane calls are merged."""

    def __init__(self, versions: dict[str, str | None], device: str | None = None, compile: bool = False) -> None:
        from serve.pipeline.denoiser import Denoiser

        self.models = _load_versions(versions, lambda path: Denoiser(path, device, compile=compile))
        self.telemetry = Telemetry()
        # One generation at a time per replica (concurrent torch runs would only share the device),
        # and realtime work takes it before batch work that is already waiting.
        self._device = PriorityLock()
        # This replica owns the latents it puts in the object store. Ray can free such an object
        # before the ingress's borrowed reference (nested in a streamed item) is registered, so the
        # owner keeps the newest refs alive until the Decoder has surely read them.
        self._recent_latents: deque[tuple[float, Any]] = deque(maxlen=LATENTS_KEPT)

    def reconfigure(self, config: dict[str, Any]) -> None:
        self._denoise_batch.set_max_batch_size(int(config.get("batch_max_size", 4)))
        self._denoise_batch.set_batch_wait_timeout_s(float(config.get("batch_wait_s", 0.2)))

    async def denoise(self, task: DenoiseTask, embeddings: Any) -> AsyncGenerator[Progress | LatentsReady, None]:
        async for events in self._run_group([task], [embeddings], REALTIME):
            yield events[0]

    async def denoise_batched(
        self, task: DenoiseTask, embeddings: Any
    ) -> AsyncGenerator[Progress | LatentsReady, None]:
        """Batch-lane entry point; Serve only streams from plain async generator methods."""
        async for event in self._denoise_batch(task, embeddings):
            yield event

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.2)
    async def _denoise_batch(
        self, tasks: list[DenoiseTask], embeddings: list[Any]
    ) -> AsyncGenerator[list[Any], None]:
        """Batch-lane calls of the same shape run as one transformer batch; other shapes wait their turn."""
        groups: dict[Any, list[int]] = {}
        for index, task in enumerate(tasks):
            groups.setdefault((task.model_version, task.shape), []).append(index)
        finished: set[int] = set()
        for members in groups.values():
            group = ([tasks[i] for i in members], [embeddings[i] for i in members])
            async for events in self._run_group(*group, BATCH):
                row: list[Any] = [StopIteration if i in finished else Progress(0, 1) for i in range(len(tasks))]
                for member, event in zip(members, events, strict=True):
                    row[member] = event
                yield row
            finished.update(members)

    async def _run_group(
        self, tasks: list[DenoiseTask], embeddings: list[Any], priority: int
    ) -> AsyncGenerator[list[Progress | LatentsReady], None]:
        import ray

        from serve.pipeline.denoiser import DenoiseRequest

        model = _pick(self.models, tasks[0].model_version)
        requests = [DenoiseRequest(e, t.shape, t.seed) for t, e in zip(tasks, embeddings, strict=True)]
        loop = asyncio.get_running_loop()
        steps: asyncio.Queue[Progress] = asyncio.Queue()

        def on_step(done: int, total: int) -> None:
            loop.call_soon_threadsafe(steps.put_nowait, Progress(done, total))

        async with self._device.hold(priority):
            started = time.perf_counter()
            work = asyncio.ensure_future(asyncio.to_thread(model.denoise_batch, requests, on_step))
            while not (work.done() and steps.empty()):
                getter = asyncio.ensure_future(steps.get())
                await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    progress = getter.result()
                    yield [progress] * len(tasks)
                else:
                    getter.cancel()
            latents = await work
            self.telemetry.observe_stage("denoiser", time.perf_counter() - started)
        refs = [ray.put(sample) for sample in latents]
        now = time.monotonic()
        while self._recent_latents and now - self._recent_latents[0][0] > LATENTS_KEPT_SECONDS:
            self._recent_latents.popleft()
        self._recent_latents.extend((now, ref) for ref in refs)
        yield [LatentsReady(ref) for ref in refs]

    def check_health(self) -> None:
        if not self.models:
            raise RuntimeError("no model version loaded")

    def ping(self) -> list[str]:
        """Readiness probe from the ingress: the versions this replica serves."""
        return sorted(self.models)


@serve.deployment(name="Decoder")
class DecoderDeployment:
    """VAE -> frames -> H.264 mp4."""

    def __init__(self, versions: dict[str, str | None], device: str | None = None) -> None:
        from serve.pipeline.decoder import Decoder

        self.models = _load_versions(versions, lambda path: Decoder(path, device))
        self.telemetry = Telemetry()
        self._device = PriorityLock()

    async def decode(self, task: DecodeTask, ready: LatentsReady) -> VideoArtifact:
        latents = await ready.latents  # type: ignore[misc]
        async with self._device.hold(task.priority):
            started = time.perf_counter()
            artifact = await asyncio.to_thread(self._decode, task, latents)
        self.telemetry.observe_stage("decoder", time.perf_counter() - started)
        return artifact

    def _decode(self, task: DecodeTask, latents: Any) -> VideoArtifact:
        from serve.pipeline.video import encode_mp4, encode_png, to_uint8

        frames = to_uint8(_pick(self.models, task.model_version).decode(latents))
        return VideoArtifact(encode_mp4(frames, task.fps), encode_png(frames[0]), len(frames))

    def check_health(self) -> None:
        if not self.models:
            raise RuntimeError("no model version loaded")

    def ping(self) -> list[str]:
        """Readiness probe from the ingress: the versions this replica serves."""
        return sorted(self.models)
