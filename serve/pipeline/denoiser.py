"""Denoiser stage: transformer + scheduler -> latents, step for step as ``WanPipeline`` does it.

It also reads the VAE *config* (never its weights): the latent grid depends on the VAE's 16x spatial
and 4x temporal compression, and a pipeline built without it silently assumes 8x.

A request that carries ``image_latents`` (from ``Decoder.encode_image``) is image-to-video, step for
step as ``WanImageToVideoPipeline`` does it for ``expand_timesteps`` models: the first latent frame
of the transformer's input is the image's latent, its tokens get timestep 0, and the result's first
frame is the image's latent. Text-to-video requests run exactly as before, alone or in a batch with
image-to-video ones.

The work is cut at step boundaries (``start`` / ``step`` / ``result`` on a ``DenoiseState``) so that a
scheduler can interleave requests, preempt one for a more urgent one and let requests join and
leave a running batch (``serve/app/step_scheduler.py``); each request's latents stay the ones it
gets alone.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serve.params import Scheduler
from serve.pipeline.device import dtype_for, pick_device, quiet_loading, release_cached_memory
from serve.pipeline.preemption import BlockCheckpoints
from serve.pipeline.text_encoder import PromptEmbeddings
from serve.step_cache import StepCache, StepCacheHooks

if TYPE_CHECKING:
    import torch

StepCallback = Callable[[int, int], None]
"""Called after each denoising step with (steps done, total steps)."""


@dataclass(frozen=True)
class LatentShape:
    """What the denoiser needs to know about one request; requests of one shape can share a batch."""

    width: int
    height: int
    num_frames: int
    num_inference_steps: int
    guidance_scale: float
    scheduler: Scheduler = "unipc"
    step_cache: StepCache | None = None

    @property
    def batch_key(self) -> tuple[int, int, int, StepCache | None, bool]:
        """Requests with equal keys can share a transformer batch at any step: one latent grid, one
        step-caching setting (its hooks act on the whole batch), and guidance on for all or off for all.
        Step counts, guidance scales and schedulers may differ: every sample carries its own timestep
        (``expand_timesteps``), scale and scheduler."""
        return (self.width, self.height, self.num_frames, self.step_cache, self.guidance_scale > 1.0)


@dataclass(frozen=True)
class DenoiseRequest:
    """One video's worth of denoising work."""

    embeddings: PromptEmbeddings
    """One prompt's embeddings: ``cond`` [1, 512, D], and ``uncond`` when guidance is on."""
    shape: LatentShape
    seed: int
    image_latents: torch.Tensor | None = None
    """The reference image's normalised latent [1, C, 1, h, w] (``Decoder.encode_image`` at the
    request's width x height), or None for text-to-video."""


@dataclass
class DenoiseState:
    """One request part-way through denoising: its latents, its own scheduler and its step count.

    UniPC (like DPM-Solver++) is multistep: its ``step`` remembers earlier model outputs, so every
    request owns its scheduler instance. A state can be stepped alone or in any batch, interleaved
    with other requests in any order, and resumes where it stopped: nothing about it lives elsewhere.
    """

    request: DenoiseRequest
    scheduler: Any
    latents: torch.Tensor
    """[1, C, F, h, w], float32, on the denoiser's device."""
    mask: torch.Tensor
    """[1, 1, F, h, w]: 0 on the image's frame of an image-to-video request, 1 elsewhere."""
    condition: torch.Tensor | None
    """[1, C, 1, h, w]: the image's latent, or None for text-to-video."""
    cond: torch.Tensor
    uncond: torch.Tensor | None
    done: int = 0
    # Unique for the Denoiser's lifetime (an id() could be reused): names the step groups whose
    # step-caching state must not reach another group.
    serial: int = 0

    @property
    def total(self) -> int:
        return len(self.scheduler.timesteps)

    @property
    def finished(self) -> bool:
        return self.done >= self.total


class Denoiser:
    """Loads ``transformer/``, ``scheduler/`` and the ``vae/`` config from a diffusers-format directory.

    Work is done a step at a time: ``start`` a request, ``step`` any compatible group of started
    requests (one transformer batch; see ``LatentShape.batch_key``), take the ``result`` once a state is
    finished. ``denoise`` and ``denoise_batch`` are those three in a loop.
    """

    def __init__(self, model_dir: str | Path, device: str | None = None, compile: bool = False) -> None:
        import torch
        from diffusers import AutoencoderKLWan, WanTransformer3DModel

        self._torch = torch
        quiet_loading()
        self.device = pick_device(device)
        self.dtype = dtype_for(self.device)
        root = Path(model_dir)
        self.transformer = WanTransformer3DModel.from_pretrained(root / "transformer", torch_dtype=self.dtype)
        self.transformer.to(self.device).eval()
        if compile:
            self.transformer.compile()
        # A batch step may give the device up between two transformer blocks (serve/pipeline/preemption.py).
        self.checkpoints = None if compile else BlockCheckpoints(self.transformer.blocks)
        vae_config = AutoencoderKLWan.load_config(root / "vae")
        self.spatial_factor: int = vae_config["scale_factor_spatial"]
        self.temporal_factor: int = vae_config["scale_factor_temporal"]
        self._scheduler_config = _load_scheduler_config(root / "scheduler")
        model_index = _read_json(root / "model_index.json")
        self.expand_timesteps: bool = bool(model_index.get("expand_timesteps", False))
        # cache_context and step-caching hooks keep state on the transformer: one step at a time.
        self._lock = threading.Lock()
        self.step_cache = StepCacheHooks(self.transformer)
        self._serials = itertools.count(1)

    def make_scheduler(self, name: Scheduler) -> Any:
        """A fresh scheduler per request: multistep schedulers keep per-run state."""
        from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

        if name == "dpm++":
            return DPMSolverMultistepScheduler.from_config(self._scheduler_config, algorithm_type="dpmsolver++")
        return UniPCMultistepScheduler.from_config(self._scheduler_config)

    def latent_grid(self, shape: LatentShape) -> tuple[int, int, int, int]:
        """(channels, frames, height, width) of the latents for ``shape``."""
        frames = (shape.num_frames - 1) // self.temporal_factor + 1
        return (
            self.transformer.config.in_channels,
            frames,
            shape.height // self.spatial_factor,
            shape.width // self.spatial_factor,
        )

    def denoise(self, request: DenoiseRequest, on_step: StepCallback | None = None) -> torch.Tensor:
        return self.denoise_batch([request], on_step)[0]

    def denoise_batch(
        self, requests: list[DenoiseRequest], on_step: StepCallback | None = None
    ) -> list[torch.Tensor]:
        """Denoise requests of one ``LatentShape`` together; each keeps its own seed's noise."""
        shape = requests[0].shape
        if any(request.shape != shape for request in requests):
            raise ValueError("a denoising batch must share one LatentShape")
        states = [self.start(request) for request in requests]
        while not states[0].finished:
            self.step(states)
            if on_step is not None:
                on_step(states[0].done, states[0].total)
        latents = [self.result(state) for state in states]
        release_cached_memory(self.device)
        return latents

    def start(self, request: DenoiseRequest) -> DenoiseState:
        """The request's initial noise (from its seed), scheduler and first-frame condition."""
        from diffusers.utils.torch_utils import randn_tensor

        torch = self._torch
        shape = request.shape
        if shape.guidance_scale > 1.0 and request.embeddings.uncond is None:
            raise ValueError("guidance_scale > 1 needs negative prompt embeddings")
        scheduler = self.make_scheduler(shape.scheduler)
        scheduler.set_timesteps(shape.num_inference_steps, device=self.device)
        scheduler.set_begin_index(0)
        with torch.inference_mode():
            # Seeds live on CPU generators so a seed gives the same video on any device.
            latents = randn_tensor(
                (1, *self.latent_grid(shape)),
                generator=torch.Generator("cpu").manual_seed(request.seed),
                device=self.device,
                dtype=torch.float32,
            )
            mask, condition = self._first_frame_condition(request, latents)
            uncond = request.embeddings.uncond if shape.guidance_scale > 1.0 else None
            return DenoiseState(
                request=request,
                scheduler=scheduler,
                latents=latents,
                mask=mask,
                condition=condition,
                cond=request.embeddings.cond.to(self.device, self.dtype),
                uncond=None if uncond is None else uncond.to(self.device, self.dtype),
                serial=next(self._serials),
            )

    def step(self, states: list[DenoiseState], yield_to: Callable[[], bool] | None = None) -> None:
        """Advance every state by one step in one transformer batch; each at its own timestep.

        With ``yield_to``, the step checks it before every transformer block and raises ``Preempted``
        if it says more urgent work waits: the states are then as they were, and the step can run
        again later with the same result (not with step caching, whose hooks keep state; nor compiled).

        The states may be at different steps, have different step counts, guidance scales, schedulers
        and seeds, and mix text- and image-to-video: only ``LatentShape.batch_key`` must agree. Every
        sample's noise prediction is the one it gets alone, and its scheduler steps only its latents.
        With step caching (``LatentShape.step_cache``) a sample's prediction may instead reuse what the
        same group computed at its previous step; a group without it runs the model with no hooks.
        """
        key = states[0].request.shape.batch_key
        if any(state.request.shape.batch_key != key for state in states):
            raise ValueError("a denoising step batches requests of one latent grid, all guided or all unguided")
        if any(state.finished for state in states):
            raise ValueError("a finished request was stepped again")
        torch = self._torch
        step_cache = states[0].request.shape.step_cache
        yielding: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if self.checkpoints is not None and step_cache is None:
            yielding = self.checkpoints.yielding_to(yield_to)
        with self._lock, torch.inference_mode(), yielding:
            self.step_cache.prepare(step_cache, tuple(state.serial for state in states))
            timesteps = [state.scheduler.timesteps[state.done] for state in states]
            model_input = torch.cat([self._model_input(state) for state in states]).to(self.dtype)
            timestep = torch.cat([self._timestep(state, t) for state, t in zip(states, timesteps, strict=True)])
            cond = torch.cat([state.cond for state in states])
            noise = self._predict(model_input, timestep, cond, states, "cond")
            if key[-1]:
                uncond = torch.cat([state.uncond for state in states if state.uncond is not None])
                noise_uncond = self._predict(model_input, timestep, uncond, states, "uncond")
            for row, (state, t) in enumerate(zip(states, timesteps, strict=True)):
                sample = noise[row : row + 1]
                if key[-1]:
                    # As WanPipeline: a Python float scale on this sample only.
                    sample_uncond = noise_uncond[row : row + 1]
                    sample = sample_uncond + state.request.shape.guidance_scale * (sample - sample_uncond)
                state.latents = state.scheduler.step(sample, t, state.latents, return_dict=False)[0]
                state.done += 1

    def result(self, state: DenoiseState) -> torch.Tensor:
        """The finished latents [1, C, F, h, w] on the CPU."""
        if not state.finished:
            raise ValueError(f"the request has run {state.done} of its {state.total} steps")
        latents = state.latents
        if state.condition is not None:
            # The scheduler also moved the first frame; the video's first frame is the image's latent.
            latents = (1 - state.mask) * state.condition + state.mask * latents
        return latents.cpu()

    def _model_input(self, state: DenoiseState) -> torch.Tensor:
        if state.condition is None:
            return state.latents
        # The image's latent stands in for the first frame of what the transformer sees.
        return (1 - state.mask) * state.condition + state.mask * state.latents

    def _timestep(self, state: DenoiseState, t: torch.Tensor) -> torch.Tensor:
        if self.expand_timesteps:
            # Wan2.2 TI2V: one timestep per latent patch token (patch 1x2x2), 0 on the image's frame.
            return (state.mask[:, 0, :, ::2, ::2] * t).flatten(1)
        return t.expand(1)

    def _first_frame_condition(
        self, request: DenoiseRequest, latents: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mask [1, 1, F, h, w]: 0 on the image's frame, 1 elsewhere; condition [1, C, 1, h, w] or None)."""
        torch = self._torch
        _, channels, frames, height, width = latents.shape
        mask = torch.ones((1, 1, frames, height, width), dtype=torch.float32, device=self.device)
        if request.image_latents is None:
            return mask, None
        if not self.expand_timesteps:
            raise ValueError(
                "image conditioning needs a model with expand_timesteps (Wan2.2 TI2V); "
                "this model_index.json does not set it"
            )
        expected = (1, channels, 1, height, width)
        if tuple(request.image_latents.shape) != expected:
            raise ValueError(
                f"image latents of shape {tuple(request.image_latents.shape)} do not fit latents "
                f"{tuple(latents.shape[1:])}: encode the image at the request's width x height"
            )
        mask[:, :, 0] = 0
        return mask, request.image_latents.to(self.device, torch.float32)

    def _predict(
        self,
        model_input: torch.Tensor,
        timestep: torch.Tensor,
        embeddings: torch.Tensor,
        states: list[DenoiseState],
        branch: str,
    ) -> torch.Tensor:
        # cache_context lets diffusers' step-caching hooks (FirstBlockCache etc.) tell branches apart;
        # where a step is, it can say only for a batch whose members are all at the same step.
        first = states[0]
        context: dict[str, Any] = {}
        if all(state.done == first.done and state.total == first.total for state in states):
            sigma = float(first.scheduler.sigmas[first.done])
            context = {"step_index": first.done, "sigma": sigma, "num_inference_steps": first.total}
        with self.transformer.cache_context(branch, **context):
            return self.transformer(
                hidden_states=model_input,
                timestep=timestep,
                encoder_hidden_states=embeddings,
                return_dict=False,
            )[0]


def _read_json(path: Path) -> dict[str, Any]:
    import json

    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _load_scheduler_config(directory: Path) -> dict[str, Any]:
    config = _read_json(directory / "scheduler_config.json")
    if not config:
        raise FileNotFoundError(f"no scheduler_config.json in {directory}: is this a diffusers-format Wan directory?")
    return config
