"""Denoiser stage: transformer + scheduler -> latents, step for step as ``WanPipeline`` does it.

It also reads the VAE *config* (never its weights): the latent grid depends on the VAE's 16x spatial
and 4x temporal compression, and a pipeline built without it silently assumes 8x.

A request that carries ``image_latents`` (from ``Decoder.encode_image``) is image-to-video, step for
step as ``WanImageToVideoPipeline`` does it for ``expand_timesteps`` models: the first latent frame
of the transformer's input is the image's latent, its tokens get timestep 0, and the result's first
frame is the image's latent. Text-to-video requests run exactly as before, alone or in a batch with
image-to-video ones.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serve.params import Scheduler
from serve.pipeline.device import dtype_for, pick_device, quiet_loading, release_cached_memory
from serve.pipeline.text_encoder import PromptEmbeddings

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


@dataclass(frozen=True)
class DenoiseRequest:
    """One video's worth of denoising work."""

    embeddings: PromptEmbeddings
    shape: LatentShape
    seed: int
    image_latents: torch.Tensor | None = None
    """The reference image's normalised latent [1, C, 1, h, w] (``Decoder.encode_image`` at the
    request's width x height), or None for text-to-video."""


class Denoiser:
    """Loads ``transformer/``, ``scheduler/`` and the ``vae/`` config from a diffusers-format directory."""

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
        vae_config = AutoencoderKLWan.load_config(root / "vae")
        self.spatial_factor: int = vae_config["scale_factor_spatial"]
        self.temporal_factor: int = vae_config["scale_factor_temporal"]
        self._scheduler_config = _load_scheduler_config(root / "scheduler")
        model_index = _read_json(root / "model_index.json")
        self.expand_timesteps: bool = bool(model_index.get("expand_timesteps", False))
        # cache_context and step-caching hooks keep state on the transformer: one run at a time.
        self._lock = threading.Lock()

    def make_scheduler(self, name: Scheduler) -> Any:
        """A fresh scheduler per call: multistep schedulers keep per-run state."""
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
        torch = self._torch
        shape = requests[0].shape
        if any(request.shape != shape for request in requests):
            raise ValueError("a denoising batch must share one LatentShape")
        with self._lock, torch.inference_mode():
            latents = self._run(requests, shape, on_step)
        release_cached_memory(self.device)
        return [sample.unsqueeze(0).cpu() for sample in latents]

    def _run(
        self, requests: list[DenoiseRequest], shape: LatentShape, on_step: StepCallback | None
    ) -> torch.Tensor:
        from diffusers.utils.torch_utils import randn_tensor

        torch = self._torch
        guided = shape.guidance_scale > 1.0
        cond = torch.cat([r.embeddings.cond for r in requests]).to(self.device, self.dtype)
        uncond = None
        if guided:
            if any(r.embeddings.uncond is None for r in requests):
                raise ValueError("guidance_scale > 1 needs negative prompt embeddings")
            uncond = torch.cat([r.embeddings.uncond for r in requests]).to(self.device, self.dtype)

        scheduler = self.make_scheduler(shape.scheduler)
        scheduler.set_timesteps(shape.num_inference_steps, device=self.device)
        timesteps = scheduler.timesteps
        # Seeds live on CPU generators so a seed gives the same video on any device.
        generators = [torch.Generator("cpu").manual_seed(r.seed) for r in requests]
        latents = randn_tensor(
            (len(requests), *self.latent_grid(shape)),
            generator=generators,
            device=self.device,
            dtype=torch.float32,
        )
        mask, condition = self._first_frame_condition(requests, latents)
        scheduler.set_begin_index(0)
        for index, t in enumerate(timesteps):
            if condition is None:
                model_input = latents.to(self.dtype)
            else:
                # The image's latent stands in for the first frame of what the transformer sees.
                model_input = ((1 - mask) * condition + mask * latents).to(self.dtype)
            # Wan2.2 TI2V: one timestep per latent patch token (patch 1x2x2), 0 on the image's frame.
            per_token = self.expand_timesteps
            timestep = (mask[:, 0, :, ::2, ::2] * t).flatten(1) if per_token else t.expand(latents.shape[0])
            noise = self._predict(model_input, timestep, cond, index, scheduler, "cond", len(timesteps))
            if uncond is not None:
                noise_uncond = self._predict(
                    model_input, timestep, uncond, index, scheduler, "uncond", len(timesteps)
                )
                noise = noise_uncond + shape.guidance_scale * (noise - noise_uncond)
            latents = scheduler.step(noise, t, latents, return_dict=False)[0]
            if on_step is not None:
                on_step(index + 1, len(timesteps))
        if condition is not None:
            # The scheduler also moved the first frame; the video's first frame is the image's latent.
            latents = (1 - mask) * condition + mask * latents
        return latents

    def _first_frame_condition(
        self, requests: list[DenoiseRequest], latents: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mask [B, 1, F, h, w]: 0 on an image's frame, 1 elsewhere; conditions [B, C, 1, h, w] or None).

        A text-to-video member of a mixed batch keeps a mask of ones and a zero condition, so
        ``(1 - mask) * condition + mask * latents`` is exactly its own latents.
        """
        torch = self._torch
        batch, channels, frames, height, width = latents.shape
        mask = torch.ones((batch, 1, frames, height, width), dtype=torch.float32, device=self.device)
        if all(request.image_latents is None for request in requests):
            return mask, None
        if not self.expand_timesteps:
            raise ValueError(
                "image conditioning needs a model with expand_timesteps (Wan2.2 TI2V); "
                "this model_index.json does not set it"
            )
        expected = (1, channels, 1, height, width)
        conditions = []
        for row, request in enumerate(requests):
            if request.image_latents is None:
                conditions.append(torch.zeros(expected, dtype=torch.float32, device=self.device))
                continue
            if tuple(request.image_latents.shape) != expected:
                raise ValueError(
                    f"image latents of shape {tuple(request.image_latents.shape)} do not fit latents "
                    f"{tuple(latents.shape[1:])}: encode the image at the request's width x height"
                )
            mask[row, :, 0] = 0
            conditions.append(request.image_latents.to(self.device, torch.float32))
        return mask, torch.cat(conditions)

    def _predict(
        self,
        model_input: torch.Tensor,
        timestep: torch.Tensor,
        embeddings: torch.Tensor,
        index: int,
        scheduler: Any,
        branch: str,
        total: int,
    ) -> torch.Tensor:
        # cache_context lets diffusers' step-caching hooks (FirstBlockCache etc.) tell branches apart.
        context = {"step_index": index, "sigma": float(scheduler.sigmas[index]), "num_inference_steps": total}
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
